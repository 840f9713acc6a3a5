"""SupCon (Khosla et al., NeurIPS 2020), stage 1 of the two-stage protocol.

"L_out" over the 2B embeddings (``losses/contrastive.py``), positives P(a) = every other
embedding with the anchor's label: ``l_a = -1/|P(a)| sum_{p in P(a)} log softmax_{b != a}(<z_a, z_b> / T)[p]``.
Evaluated online by a linear probe on detached features (stage 2 = ``LinearProbe`` on the checkpoint).
Differences from the official code: ``docs/methods/supcon.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ltcl_lightning.losses.contrastive import supcon_loss
from ltcl_lightning.methods.base import LongTailMethod
from ltcl_lightning.modules.heads import ProjectionHead


class SupCon(LongTailMethod):
    num_views = 2

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet18_cifar",
        temperature: float = 0.1,
        proj_hidden_dim: int = 512,
        proj_dim: int = 128,
        head_layers: int = 2,
        **kwargs,
    ):
        super().__init__(num_classes, backbone, **kwargs)
        self.temperature = temperature
        self.projector = ProjectionHead(self.feat_dim, proj_hidden_dim, proj_dim, num_layers=head_layers, last_bn=False)

    def training_loss(self, index, views, target):
        b = target.shape[0]
        h = self.backbone(torch.cat(views))
        z = F.normalize(self.projector(h), dim=1)
        loss = supcon_loss(list(z.split(b)), target, self.temperature)
        return {"loss": loss, "features": h[:b]}
