from ltcl_lightning.optim.lars import LARS
from ltcl_lightning.optim.schedules import ConstantLR, ExponentialDecay, LRSchedule, WarmupCosine, WarmupMultiStep

__all__ = ["LARS", "LRSchedule", "WarmupCosine", "WarmupMultiStep", "ExponentialDecay", "ConstantLR"]
