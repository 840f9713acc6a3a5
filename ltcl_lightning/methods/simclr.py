"""SimCLR (Chen et al., ICML 2020): NT-Xent between two augmented views.

Reference recipe for long-tailed CIFAR (SDCLR / BoostedCL code): ResNet-18 CIFAR, 2-layer head
512-512-128 with BN on the output, T 0.2, SGD lr 0.5, warm-up 10 epochs + cosine to 1e-6.
Difference from the reference: both views go through one forward (BN over 2B images, as the
reference SimCLR does); the online probe is ours (the reference probes offline).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ltcl_lightning.losses.contrastive import nt_xent_loss
from ltcl_lightning.methods.base import LongTailMethod
from ltcl_lightning.modules.heads import ProjectionHead


class SimCLR(LongTailMethod):
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
        super().__init__(num_classes, backbone, **kwargs)
        self.temperature = temperature
        self.projector = ProjectionHead(self.feat_dim, proj_hidden_dim, proj_dim, num_layers=head_layers)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(h), dim=1)

    def training_loss(self, index, views, target):
        b = target.shape[0]
        h = self.backbone(torch.cat(views[:2]))
        z1, z2 = self.project(h).split(b)
        loss = nt_xent_loss(z1, z2, self.temperature)
        return {"loss": loss, "features": h[:b]}
