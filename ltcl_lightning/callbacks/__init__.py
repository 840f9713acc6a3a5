"""Per-epoch / per-step behaviour with checkpointed state, and reports."""

from ltcl_lightning.callbacks.knn import KNNMonitor
from ltcl_lightning.callbacks.momentum import MomentumWeightUpdate
from ltcl_lightning.callbacks.pruning import MaskRepruning
from ltcl_lightning.callbacks.report import LongTailReport
from ltcl_lightning.callbacks.summary import LongTailSummary
from ltcl_lightning.callbacks.vmf import VMFEstimation

__all__ = ["KNNMonitor", "LongTailSummary", "LongTailReport", "MaskRepruning", "MomentumWeightUpdate", "VMFEstimation"]
