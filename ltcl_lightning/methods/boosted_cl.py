"""BoostedCL: Contrastive Learning with Boosted Memorization (Zhou, Yao, Wang, Han, Zhang;
ICML 2022, PMLR 162:27367-27377, arXiv 2205.12693). Spec: ``boosted_cl.md``.

Samples that the network keeps failing to memorise (high *momentum loss*) are likely tail
samples; BoostedCL gives them stronger augmentation. Per sample ``i`` the NT-Xent loss of the
training forward pass is tracked with an EMA (beta 0.97); after every epoch the momentum losses
become weights ``w_i = 1/2 + 1/2 (m_i - mean m) / max|m - mean m|`` that set the RandAugment
stage of the next epoch's views (``ltcl_lightning.data.boosted``).

- :class:`BoostedCL` is **BCL-I**: SimCLR + boosted views with ``rand_k=1`` (the datamodule's
  choice), SGD weight decay 5e-4.
- :class:`BoostedSDCLR` is **BCL-D**: SDCLR (dense view 1 vs 90 %-pruned view 2) + boosted
  views with ``rand_k=2``, weight decay 1e-4; the tracked loss is the dense-vs-pruned NT-Xent.

The equations and the state (momentum losses, weights; size N = the training set, from
``num_samples`` or ``sum(class_counts)``) live in
:class:`~ltcl_lightning.modules.momentum.MomentumLoss` (``self.momentum``), driven by
:class:`~ltcl_lightning.callbacks.momentum.MomentumWeightUpdate`, which the method adds itself
(``configure_callbacks``); pair it with a boosted datamodule (``BoostedCIFAR100LTDataModule``),
which the callback checks for. The tracked per-sample loss is the family's
:meth:`~ltcl_lightning.methods.simclr.SimCLR.contrastive_loss`.

Differences from the official code (MediaBrain-SJTU/BCL ``a2342f8``): ``docs/methods/boosted_cl.md``.
"""

from __future__ import annotations

from typing import Any

import torch

from ltcl_lightning.callbacks.momentum import MomentumWeightUpdate
from ltcl_lightning.callbacks.report import PerSampleState
from ltcl_lightning.methods.base import LongTailMethod, OptimizerCallable
from ltcl_lightning.methods.sdclr import SDCLR
from ltcl_lightning.methods.simclr import SimCLR
from ltcl_lightning.modules.momentum import MomentumLoss, momentum_weights

#: ltcl_lightning 0.1.0 kept the state in the method's own buffers
_V010_KEYS = {"momentum_loss": "momentum.loss", "momentum_epoch": "momentum.last_epoch", "sample_weight": "momentum.weight"}


def boosted_cl_sgd(params) -> torch.optim.Optimizer:
    """BCL-I recipe: SGD lr 0.5, momentum 0.9, weight decay 5e-4 on every parameter."""
    return torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=5e-4)


class MomentumBoosted(LongTailMethod):
    """Mixin (before SimCLR / SDCLR in the bases): the momentum-loss module, its callback, the data
    checks and ``report_state``."""

    def _init_momentum(self, num_samples: int | None, momentum_beta: float) -> None:
        total = int(self.class_counts.sum())
        if num_samples is None:
            if total == 0:
                raise ValueError(
                    f"{type(self).__name__} keeps one momentum loss per training sample and needs the training set "
                    "size at construction: pass class_counts (the CLI links it from the data) or num_samples."
                )
            num_samples = total
        elif total and total != num_samples:
            raise ValueError(f"num_samples={num_samples} but class_counts sum to {total}")
        self.momentum = MomentumLoss(num_samples, momentum_beta)
        self._sample_target: torch.Tensor | None = None  # the labels of the training set, from the data

    def setup(self, stage: str) -> None:
        super().setup(stage)
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        train = getattr(dm, "datasets", {}).get("train") if dm is not None else None
        if train is not None and len(train) != self.momentum.num_samples:
            raise ValueError(
                f"{type(self).__name__} was built for {self.momentum.num_samples} training samples but the datamodule's "
                f"training set has {len(train)}; leave num_samples unset so that it follows class_counts."
            )
        if train is not None and hasattr(train, "targets"):
            self._sample_target = torch.as_tensor(train.targets, dtype=torch.long)

    def configure_callbacks(self):
        return list(super().configure_callbacks()) + self.callbacks_unless_listed(MomentumWeightUpdate())

    def report_state(self) -> dict[str, Any]:
        state = super().report_state()
        if self._sample_target is not None:
            state["sample_weight"] = PerSampleState(self.momentum.weight.detach().cpu(), self._sample_target)
        return state

    def upgrade_state(self, state: dict[str, Any], prefix: str) -> None:
        super().upgrade_state(state, prefix)
        if prefix + "momentum_loss" in state:  # a 0.1.0 checkpoint: rename, and date the weights it holds
            state.pop(prefix + "sample_target", None)
            for old, new in _V010_KEYS.items():
                state[prefix + new] = state.pop(prefix + old)
            w, last = state[prefix + "momentum.weight"], int(state[prefix + "momentum.last_epoch"].max())
            # weights of the end of the last updated epoch, of the one before, or none yet
            epoch = -1 if not w.any() else last if torch.equal(w, momentum_weights(state[prefix + "momentum.loss"])) else last - 1
            state[prefix + "momentum.weight_epoch"] = torch.tensor(epoch, dtype=torch.long)


class BoostedCL(MomentumBoosted, SimCLR):
    """BCL-I: SimCLR whose per-sample NT-Xent drives the boosted augmentation."""

    def __init__(
        self,
        num_classes: int,
        momentum_beta: float = 0.97,
        num_samples: int | None = None,
        optimizer: OptimizerCallable = boosted_cl_sgd,
        **kwargs,
    ):
        """
        Args:
            momentum_beta: EMA factor of the momentum loss (0.97).
            num_samples: training-set size N (default: ``sum(class_counts)``).
            optimizer: default SGD lr 0.5, momentum 0.9, wd 5e-4.
            kwargs: :class:`SimCLR` and ``LongTailMethod`` arguments.
        """
        super().__init__(num_classes, optimizer=optimizer, **kwargs)
        self._init_momentum(num_samples, momentum_beta)


class BoostedSDCLR(MomentumBoosted, SDCLR):
    """BCL-D: SDCLR whose dense-view-1 vs pruned-view-2 per-sample loss drives the boosted
    augmentation (use a boosted datamodule with ``rand_k=2``)."""

    def __init__(self, num_classes: int, head_layers: int = 2, momentum_beta: float = 0.97, num_samples: int | None = None, **kwargs):
        """
        Args:
            head_layers: 2, the BoostedCL repository's SDCLR head (official SDCLR: 3).
            momentum_beta, num_samples: see :class:`BoostedCL`.
            kwargs: :class:`SDCLR`, :class:`SimCLR` and ``LongTailMethod`` arguments.
        """
        super().__init__(num_classes, head_layers=head_layers, **kwargs)
        self._init_momentum(num_samples, momentum_beta)
