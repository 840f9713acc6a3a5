from ltcl_lightning.methods.base import LongTailMethod
from ltcl_lightning.methods.ce import CrossEntropy
from ltcl_lightning.methods.simclr import SimCLR
from ltcl_lightning.methods.supcon import SupCon

__all__ = ["LongTailMethod", "SimCLR", "SupCon", "CrossEntropy"]
