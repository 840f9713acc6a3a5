"""Hard-negative and debiased NT-Xent on the SimCLR family: HCL (Robinson et al., ICLR 2021,
``joshr17/HCL``) and DCL (Chuang et al., NeurIPS 2020, ``chingyaoc/DCL``; *debiased*, not
lightly's decoupled ``DCLLoss``).

The loss replaces NT-Xent through the family's per-sample hook (``contrastive_loss``), so every
member takes it unchanged: SimCLR, SDCLR (dense vs pruned), BoostedCL BCL-I (the momentum loss
tracks the hard-negative loss) and BCL-D. The formula and its limits are in
:mod:`ltcl_lightning.losses.hard_negative`; ``beta = 0`` is DCL,
``tau_plus = beta = 0`` is plain NT-Xent.

Differences from the official code: ``docs/methods/hard_negative.md``.
"""

from __future__ import annotations

import torch

from ltcl_lightning.losses.hard_negative import hard_negative_nt_xent_loss
from ltcl_lightning.methods.boosted_cl import BoostedCL, BoostedSDCLR
from ltcl_lightning.methods.sdclr import SDCLR
from ltcl_lightning.methods.simclr import SimCLR


class HardNegativeNTXent:
    """Mixin (before the family class in the bases): the hard-negative / debiased NT-Xent as
    the per-sample loss; ``tau_plus`` and ``beta`` are module attributes."""

    tau_plus: float
    beta: float
    temperature: float

    def _set_hard_negative(self, tau_plus: float, beta: float) -> None:
        if not 0.0 <= tau_plus < 1.0:
            raise ValueError(f"tau_plus (the positive-class prior) must be in [0, 1), got {tau_plus}")
        self.tau_plus, self.beta = tau_plus, beta

    def contrastive_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return hard_negative_nt_xent_loss(z1, z2, self.temperature, self.tau_plus, self.beta, reduction="none"), {}


class HardNegativeSimCLR(HardNegativeNTXent, SimCLR):
    """SimCLR with HCL's loss (``beta = 0``: DCL's debiased loss)."""

    def __init__(self, num_classes: int, tau_plus: float = 0.1, beta: float = 1.0, **kwargs):
        """
        Args:
            tau_plus: positive-class prior (official 0.1).
            beta: hardness concentration (official 1.0; 0 = debiased only).
            kwargs: :class:`SimCLR` arguments.
        """
        super().__init__(num_classes, **kwargs)
        self._set_hard_negative(tau_plus, beta)


class DebiasedSimCLR(HardNegativeSimCLR):
    """SimCLR with DCL's debiased loss (the hard-negative loss at ``beta = 0``)."""

    def __init__(self, num_classes: int, tau_plus: float = 0.1, **kwargs):
        super().__init__(num_classes, tau_plus=tau_plus, beta=0.0, **kwargs)


class HardNegativeSDCLR(HardNegativeNTXent, SDCLR):
    """SDCLR (dense view 1 vs pruned view 2) with HCL's loss."""

    def __init__(self, num_classes: int, tau_plus: float = 0.1, beta: float = 1.0, **kwargs):
        super().__init__(num_classes, **kwargs)
        self._set_hard_negative(tau_plus, beta)


class HardNegativeBoostedCL(HardNegativeNTXent, BoostedCL):
    """BCL-I whose boosted augmentation is driven by the per-sample hard-negative loss."""

    def __init__(self, num_classes: int, tau_plus: float = 0.1, beta: float = 1.0, **kwargs):
        super().__init__(num_classes, **kwargs)
        self._set_hard_negative(tau_plus, beta)


class HardNegativeBoostedSDCLR(HardNegativeNTXent, BoostedSDCLR):
    """BCL-D with HCL's loss."""

    def __init__(self, num_classes: int, tau_plus: float = 0.1, beta: float = 1.0, **kwargs):
        super().__init__(num_classes, **kwargs)
        self._set_hard_negative(tau_plus, beta)
