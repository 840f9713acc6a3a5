"""SimCLR (Chen et al., ICML 2020): NT-Xent between two augmented views.

Per sample i with projections z1_i, z2_i (2B anchors, 2B - 2 negatives each; the equation is in
``losses/contrastive.py``)::

    l_i = ( -log softmax_{b != a}(<z_a, z_b> / T)[p(a)] for a in (z1_i, z2_i) ).mean()
    loss = mean_i l_i

Reference recipe for long-tailed CIFAR (SDCLR / BoostedCL code): ResNet-18 CIFAR, 2-layer head
512-512-128 with BN on the output, T 0.2, SGD lr 0.5, warm-up 10 epochs + cosine to 1e-6.
Differences from the reference: ``docs/methods/simclr.md``.

The SimCLR family (SDCLR, BoostedCL, BoostedSDCLR, new NT-Xent variants) shares this step and
overrides two hooks: :meth:`SimCLR.encode` (how the two views become projections: SDCLR's dense /
pruned branches) and :meth:`SimCLR.contrastive_loss` (the per-sample loss). A new loss is its
function in ``losses/`` (on ``contrastive_logits``), a mixin overriding ``contrastive_loss`` in its
method file, placed before each family class it extends, a recipe and its tests; the step, the
momentum tracking and the pruning need no change (example: ``methods/hard_negative.py``, HCL/DCL).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ltcl_lightning.losses.contrastive import nt_xent_loss
from ltcl_lightning.methods.base import LongTailMethod
from ltcl_lightning.modules.heads import ProjectionHead


class SimCLR(LongTailMethod):
    num_views = 2

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18_cifar",
        temperature: float = 0.2,
        proj_hidden_dim: int = 512,
        proj_dim: int = 128,
        head_layers: int = 2,
        **kwargs,
    ):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        super().__init__(num_classes, backbone, **kwargs)
        self.temperature = temperature
        self.projector: nn.Module = ProjectionHead(self.feat_dim, proj_hidden_dim, proj_dim, num_layers=head_layers)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(h), dim=1)

    # ----- the two hooks of the SimCLR family -------------------------------------------------
    def encode(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(z1, z2, h1)``: (B, p) normalised projections of views 1 and 2, and the backbone
        features of view 1 (for the probe). Both views in one forward (BN over 2B images)."""
        b = views[0].shape[0]
        h = self.backbone(torch.cat(views))
        z1, z2 = self.project(h).split(b)
        return z1, z2, h[:b]

    def contrastive_loss(self, z1: torch.Tensor, z2: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(per-sample loss (B,), extras)``: the step's loss is its mean; extras are logged
        (scalars) or passed on in the step's outputs (tensors). Default: NT-Xent, global batch."""
        return nt_xent_loss(z1, z2, self.temperature, reduction="none"), {}

    def training_loss(self, index, views, target):
        z1, z2, features = self.encode(views)
        per_sample, extras = self.contrastive_loss(z1, z2)
        # per_sample_loss reaches callbacks' outputs (BoostedCL's momentum loss tracks it)
        return {"loss": per_sample.mean(), "features": features, "per_sample_loss": per_sample.detach(), **extras}
