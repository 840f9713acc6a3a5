"""SDCLR: Self-Damaging Contrastive Learning (Jiang, Chen, Mortazavi, Wang; ICML 2021,
arXiv 2106.02990). Spec: ``sdclr.md``; reference ``VITA-Group/SDCLR`` (f1490fc).

SimCLR where view 1 goes through the dense network and view 2 through a pruned copy of the
same network (the "self-competitor"): every convolution weight is multiplied by a binary mask
from global magnitude pruning (90 % on CIFAR, 30 % on ImageNet-100), recomputed from scratch
at the start of every epoch by the backbone's :class:`~ltcl_lightning.modules.pruning.PrunableNetwork`
(which holds the masks and the rule; driven by ``MaskRepruning``, which this module adds). Each branch has its own batch-norm layers, in the backbone and in the
projection head; all weights are shared. Loss: NT-Xent over the 2B projections
``{dense(v1), pruned(v2)}``.

Differences from the official code: ``docs/methods/sdclr.md``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ltcl_lightning.callbacks.report import PerLayerState
from ltcl_lightning.methods.base import OptimizerCallable
from ltcl_lightning.methods.simclr import SimCLR
from ltcl_lightning.modules.backbones import build_backbone
from ltcl_lightning.modules.pruning import PrunableNetwork


def sdclr_sgd(params) -> torch.optim.Optimizer:
    """The shipped SDCLR recipe: SGD lr 0.5, momentum 0.9, weight decay 1e-4 on every parameter."""
    return torch.optim.SGD(params, lr=0.5, momentum=0.9, weight_decay=1e-4)


class SDCLR(SimCLR):
    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18_cifar",
        prune_ratio: float = 0.9,
        random_prune_ratio: float = 0.0,
        prune_seed: int = 0,
        head_layers: int = 3,
        optimizer: OptimizerCallable = sdclr_sgd,
        **kwargs,
    ):
        """
        Args:
            prune_ratio: fraction of all convolution weights pruned in the self-competitor,
                one global magnitude threshold (0.9 CIFAR, 0.3 ImageNet-100).
            random_prune_ratio: part of ``prune_ratio`` pruned at random instead of by magnitude
                (reference ``random_prune_percent``, 0 in every shipped recipe).
            prune_seed: seed of the random part (combined with the epoch; same on every rank).
            head_layers: 3 = official SDCLR head, 2 = BoostedCL repository's SDCLR.
            optimizer: default SGD lr 0.5, momentum 0.9, wd 1e-4.
            kwargs: :class:`SimCLR` arguments (``temperature``: 0.2 CIFAR, 0.3 ImageNet-100;
                ``proj_hidden_dim``: 512 ResNet-18, 2048 ResNet-50; ``proj_dim`` 128) and
                ``LongTailMethod``'s.
        """
        super().__init__(num_classes, backbone, head_layers=head_layers, optimizer=optimizer, **kwargs)
        self.projector = PrunableNetwork(self.projector)  # dual batch-norms; no convolution to mask

    def build_backbone(self, name) -> PrunableNetwork:
        hp = self.hparams  # saved by the base before it builds the backbone
        return PrunableNetwork(build_backbone(name), hp["prune_ratio"], hp["random_prune_ratio"], hp["prune_seed"])

    # ----- the two branches ------------------------------------------------------------------
    def project(self, h: torch.Tensor, pruned: bool = False) -> torch.Tensor:
        return F.normalize(self.projector(h, pruned=pruned), dim=1)

    def encode(self, views):
        """Dense view 1, pruned view 2 (its own batch-norms); the loss is SimCLR's NT-Xent."""
        h1 = self.backbone(views[0])
        h2 = self.backbone(views[1], pruned=True)
        return self.project(h1), self.project(h2, pruned=True), h1

    # ----- masks: owned by the backbone (PrunableNetwork), re-pruned by MaskRepruning ---------
    def report_state(self) -> dict[str, Any]:
        return {"mask_density": PerLayerState(self.backbone.mask_densities())}  # type: ignore[operator]

    def configure_callbacks(self):
        """Adds :class:`MaskRepruning` (every epoch) unless the trainer already has one, so the
        masks cannot be forgotten; configure its period by listing it in ``trainer.callbacks``."""
        from ltcl_lightning.callbacks.pruning import MaskRepruning

        return list(super().configure_callbacks()) + self.callbacks_unless_listed(MaskRepruning())

    def upgrade_state(self, state: dict[str, Any], prefix: str) -> None:
        super().upgrade_state(state, prefix)
        if prefix + "mask_epoch" in state:  # a 0.1.0 checkpoint: the method held the masks' epoch
            state[prefix + "backbone.mask_epoch"] = state.pop(prefix + "mask_epoch")
