"""Cross-entropy baseline with optional logit adjustment (Menon et al., ICLR 2021).

``tau = 1`` trains ``CE(f(x) + log pi, y)`` with pi the training class prior; ``tau = 0`` is
plain CE. Evaluation uses the raw logits f(x). Recipe and differences: ``docs/methods/cross_entropy.md``.
"""

from __future__ import annotations

import torch.nn as nn

from ltcl_lightning.losses.classification import logit_adjusted_cross_entropy
from ltcl_lightning.methods.base import LongTailMethod
from ltcl_lightning.modules.heads import NormedLinear


class CrossEntropy(LongTailMethod):
    uses_online_probe = False

    def __init__(
        self, num_classes: int, backbone: str = "resnet32_cifar", logit_adjust_tau: float = 0.0, cosine_classifier: bool = False, **kwargs
    ):
        super().__init__(num_classes, backbone, **kwargs)
        self.logit_adjust_tau = logit_adjust_tau
        self.classifier = NormedLinear(self.feat_dim, num_classes) if cosine_classifier else nn.Linear(self.feat_dim, num_classes)

    def classify(self, x):
        return self.classifier(self.backbone(x))

    def training_loss(self, index, views, target):
        h = self.backbone(views[0])
        logits = self.classifier(h)
        loss = logit_adjusted_cross_entropy(logits, target, self.class_prior, self.logit_adjust_tau)
        return {"loss": loss, "features": h}
