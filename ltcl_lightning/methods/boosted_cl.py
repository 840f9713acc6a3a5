"""BoostedCL: Contrastive Learning with Boosted Memorization (Zhou, Yao, Wang, Han, Zhang;
ICML 2022, PMLR 162:27367-27377, arXiv 2205.12693). Spec: ``shared/specs/boosted_cl.md``.

Samples that the network keeps failing to memorise (high *momentum loss*) are likely tail
samples; BoostedCL gives them stronger augmentation. Per sample ``i`` the NT-Xent loss of the
training forward pass is tracked with an EMA (beta 0.97); after every epoch the momentum losses
become weights ``w_i = 1/2 + 1/2 (m_i - mean m) / max|m - mean m|`` that set the RandAugment
stage of the next epoch's views (``ltcl_lightning.data.boosted``).

- :class:`BoostedCL` is **BCL-I**: SimCLR + boosted views with ``rand_k=1`` (the datamodule's
  choice), SGD weight decay 5e-4.
- :class:`BoostedSDCLR` is **BCL-D**: SDCLR (dense view 1 vs 90 %-pruned view 2) + boosted
  views with ``rand_k=2``, weight decay 1e-4; the tracked loss is the dense-vs-pruned NT-Xent.

The momentum state and the weights are buffers of the module (``momentum_loss``,
``momentum_epoch``, ``sample_weight``, ``sample_target``; size N = the training set, from
``num_samples`` or ``sum(class_counts)``), updated by
:class:`~ltcl_lightning.callbacks.momentum.MomentumWeightUpdate`, which the module adds itself
(``configure_callbacks``); pair it with a boosted datamodule
(``BoostedCIFAR100LTDataModule``), which it checks for.

Differences from the official code (MediaBrain-SJTU/BCL ``a2342f8``), all deliberate:

- Momentum state and weights are checkpointed (the official resume restarts the memory).
- DDP: per-sample losses are gathered from all ranks every step, the sampler's padding is
  de-duplicated, the weights are identical on every rank and reach every loader worker through
  shared memory (the official code is single-GPU; spec section h).
- The update is vectorised; the weights of all-equal losses are 1/2, not NaN; a sample's first
  update stores its raw loss (the official rule is "epoch 1 stores the raw loss": the same when
  epoch 1 sees every sample, as it does).
- The two views go through one forward (BN over 2B images, as in the reference).
- Input normalisation is the datamodule's (ImageNet mean/std, as the reference's first layer).
- The online probe is ours; the published numbers use the offline probe
  (``python -m ltcl_lightning.probe``).
"""

from __future__ import annotations

from typing import Any

import torch

from ltcl_lightning.callbacks.momentum import MomentumWeightUpdate
from ltcl_lightning.callbacks.report import PerSampleState
from ltcl_lightning.methods.sdclr import SDCLR, sdclr_sgd
from ltcl_lightning.methods.base import OptimizerCallable
from ltcl_lightning.methods.simclr import SimCLR


def boosted_cl_sgd(params) -> torch.optim.Optimizer:
    """BCL-I recipe: SGD lr 0.5, momentum 0.9, weight decay 5e-4 on every parameter."""
    return torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=5e-4)


class MomentumBoosted:
    """Mixin: the per-sample momentum state, its callback and ``report_state``."""

    def _init_momentum_state(self, num_samples: int | None, class_counts: list[int] | None, momentum_beta: float) -> None:
        if num_samples is None:
            if class_counts is None:
                raise ValueError(
                    f"{type(self).__name__} keeps one momentum loss per training sample and needs the training set "
                    "size at construction: pass class_counts (the CLI links it from the data) or num_samples."
                )
            num_samples = int(sum(class_counts))
        elif class_counts is not None and int(sum(class_counts)) != num_samples:
            raise ValueError(f"num_samples={num_samples} but class_counts sum to {int(sum(class_counts))}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 0.0 <= momentum_beta < 1.0:
            raise ValueError(f"momentum_beta must be in [0, 1), got {momentum_beta}")
        self.num_samples = num_samples
        self.momentum_beta = momentum_beta
        self.register_buffer("momentum_loss", torch.zeros(num_samples, dtype=torch.float32))
        self.register_buffer("momentum_epoch", torch.full((num_samples,), -1, dtype=torch.long))
        # w = 0: the first epoch is plain SimCLR / SDCLR augmentation, as in the reference
        self.register_buffer("sample_weight", torch.zeros(num_samples, dtype=torch.float32))
        self.register_buffer("sample_target", torch.full((num_samples,), -1, dtype=torch.long))

    def _check_train_size(self) -> None:
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        train = getattr(dm, "datasets", {}).get("train") if dm is not None else None
        if train is not None and len(train) != self.num_samples:
            raise ValueError(
                f"{type(self).__name__} was built for {self.num_samples} training samples but the datamodule's "
                f"training set has {len(train)}; leave num_samples unset so that it follows class_counts."
            )
        if train is not None and hasattr(train, "targets") and bool((self.sample_target < 0).all()):
            self.sample_target.copy_(torch.as_tensor(train.targets, dtype=torch.long))

    def momentum_callbacks(self) -> list:
        return self.callbacks_unless_listed(MomentumWeightUpdate(self.momentum_beta))

    def report_state(self) -> dict[str, Any]:
        return {"sample_weight": PerSampleState(self.sample_weight.detach().cpu(), self.sample_target.detach().cpu())}


class BoostedCL(MomentumBoosted, SimCLR):
    """BCL-I: SimCLR whose per-sample NT-Xent drives the boosted augmentation."""

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18_cifar",
        temperature: float = 0.2,
        proj_hidden_dim: int = 512,
        proj_dim: int = 128,
        head_layers: int = 2,
        momentum_beta: float = 0.97,
        num_samples: int | None = None,
        class_counts: list[int] | None = None,
        optimizer: OptimizerCallable = boosted_cl_sgd,
        **kwargs,
    ):
        """
        Args:
            momentum_beta: EMA factor of the momentum loss (0.97).
            num_samples: training-set size N (default: ``sum(class_counts)``).
            Other arguments: see :class:`SimCLR` and :class:`LongTailMethod`.
        """
        super().__init__(
            num_classes, backbone, temperature=temperature, proj_hidden_dim=proj_hidden_dim, proj_dim=proj_dim,
            head_layers=head_layers, class_counts=class_counts, optimizer=optimizer, **kwargs,
        )
        self._init_momentum_state(num_samples, class_counts, momentum_beta)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self._check_train_size()

    def configure_callbacks(self):
        return self.momentum_callbacks()


class BoostedSDCLR(MomentumBoosted, SDCLR):
    """BCL-D: SDCLR whose dense-view-1 vs pruned-view-2 per-sample loss drives the boosted
    augmentation (use a boosted datamodule with ``rand_k=2``)."""

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18_cifar",
        temperature: float = 0.2,
        prune_ratio: float = 0.9,
        head_layers: int = 2,
        momentum_beta: float = 0.97,
        num_samples: int | None = None,
        class_counts: list[int] | None = None,
        optimizer: OptimizerCallable = sdclr_sgd,
        **kwargs,
    ):
        """
        Args:
            head_layers: 2, the BoostedCL repository's SDCLR head (official SDCLR: 3).
            momentum_beta, num_samples: see :class:`BoostedCL`. Others: see :class:`SDCLR`.
        """
        super().__init__(
            num_classes, backbone, temperature=temperature, prune_ratio=prune_ratio, head_layers=head_layers,
            class_counts=class_counts, optimizer=optimizer, **kwargs,
        )
        self._init_momentum_state(num_samples, class_counts, momentum_beta)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        self._check_train_size()

    def configure_callbacks(self):
        return list(super().configure_callbacks()) + self.momentum_callbacks()

    def report_state(self) -> dict[str, Any]:
        return {**SDCLR.report_state(self), **MomentumBoosted.report_state(self)}
