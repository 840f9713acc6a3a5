"""One LightningModule per method, on the thin shared base ``LongTailMethod``."""

from ltcl_lightning.methods.balanced_cl import BalancedCL
from ltcl_lightning.methods.base import LongTailMethod
from ltcl_lightning.methods.boosted_cl import BoostedCL, BoostedSDCLR
from ltcl_lightning.methods.ce import CrossEntropy
from ltcl_lightning.methods.hard_negative import (
    DebiasedSimCLR,
    HardNegativeBoostedCL,
    HardNegativeBoostedSDCLR,
    HardNegativeSDCLR,
    HardNegativeSimCLR,
)
from ltcl_lightning.methods.kcl import KCL, TSC
from ltcl_lightning.methods.linear_probe import LinearProbe
from ltcl_lightning.methods.paco import GPaCo, PaCo
from ltcl_lightning.methods.proco import ProCo
from ltcl_lightning.methods.sdclr import SDCLR
from ltcl_lightning.methods.simclr import SimCLR
from ltcl_lightning.methods.supcon import SupCon
from ltcl_lightning.methods.two_branch import TwoBranchMethod

__all__ = [
    "LongTailMethod",
    "TwoBranchMethod",
    "SimCLR",
    "SupCon",
    "CrossEntropy",
    "SDCLR",
    "BoostedCL",
    "BoostedSDCLR",
    "BalancedCL",
    "ProCo",
    "LinearProbe",
    "HardNegativeSimCLR",
    "DebiasedSimCLR",
    "HardNegativeSDCLR",
    "HardNegativeBoostedCL",
    "HardNegativeBoostedSDCLR",
    "PaCo",
    "GPaCo",
    "KCL",
    "TSC",
]
