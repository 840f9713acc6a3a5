"""``TwoBranchMethod``: the classification + contrastive framework of BCL and ProCo.

Shared by BalancedCL (Zhu et al., "Balanced Contrastive Learning for Long-Tailed Visual
Recognition", CVPR 2022, code FlamieZhu/Balanced-Contrastive-Learning) and ProCo (Du et al.,
"Probabilistic Contrastive Learning for Long-Tailed Visual Recognition", TPAMI 2024, code
LeapLabTHU/ProCo, which descends from BCL). Spec: ``proco.md`` (c)-(e).

One training step (spec proco.md section 0)::

    views = [v1, v2, v3]                  # v1 classification augmentation, v2/v3 "sim"
    h = backbone(cat(v1, v2, v3))         # ONE forward: BatchNorm sees all 3B images
    logits = classifier(h1)               # Linear, or NormedLinear (30 * cosine)
    z1, z2, z3 = normalize(projector(h))  # projector BN sees 3B rows; z1 is discarded
    loss = ce_weight * LA_CE(logits, y) + contrastive_weight * contrastive_loss(z2, z3, y, h)

``LA_CE`` is logit-adjusted cross-entropy (Menon et al., ICLR 2021) with the training class
prior ``self.class_prior`` (filled from the datamodule) and ``logit_adjust_tau`` (1 in both
official codes). Evaluation uses ``classify`` (the classifier logits, plain argmax, no
adjustment) with the base's long-tail metrics; the base logs last-epoch and best-epoch
(``val/acc_best``) accuracy: the published numbers of both papers are best-epoch.

Views (``train_views`` of the datamodule, exactly three):

* CIFAR v1 ``autoaugment_cutout``: crop 32 pad 4, flip, AutoAugment CIFAR10 policy, Cutout 16 px.
* ImageNet-LT / iNat v1 ``randaugment``: RandomResizedCrop, flip, ColorJitter(0.4, 0.4, 0.4, 0),
  torchvision ``RandAugment(2, 10)``.
* v2 / v3 ``simclr``: RandomResizedCrop (0.08-1), flip, ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8,
  grayscale p 0.2 (the official "sim").

Subclasses implement :meth:`contrastive_loss` (and may override :meth:`train_accuracy_logits`).
Differences from the official code (none in the step itself): ``docs/methods/proco.md``,
``docs/methods/balanced_cl.md``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ltcl_lightning.losses.classification import logit_adjusted_cross_entropy
from ltcl_lightning.methods.base import LongTailMethod
from ltcl_lightning.modules.heads import NormedLinear, ProjectionHead


class TwoBranchMethod(LongTailMethod):
    """Classification branch (logit-adjusted CE) + projection branch (subclass's contrastive loss)."""

    uses_online_probe = False
    num_views = 3  # v1 classification, v2 and v3 contrastive

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet32_cifar",
        cosine_classifier: bool = False,
        classifier_scale: float = 30.0,
        proj_hidden_dim: int | None = 512,
        proj_dim: int = 128,
        ce_weight: float = 1.0,
        contrastive_weight: float = 1.0,
        logit_adjust_tau: float = 1.0,
        **kwargs,
    ):
        """
        Args:
            cosine_classifier: ``NormedLinear`` (``classifier_scale`` x cosine; ImageNet-LT / iNat)
                instead of ``nn.Linear`` (CIFAR).
            proj_hidden_dim: hidden width of the projector ``Linear -> BN -> ReLU -> Linear``
                (CIFAR 512, ImageNet/iNat 2048); ``None`` = the backbone width.
            proj_dim: p, the dimension of the contrastive features (CIFAR 128, ImageNet/iNat 1024).
            ce_weight: weight of the classification loss (BCL's alpha, 1.0).
            contrastive_weight: weight of the contrastive loss (ProCo's alpha 1.0, BCL's beta 0.35).
            logit_adjust_tau: logit-adjustment strength of the classification CE (1 = official).
        """
        super().__init__(num_classes, backbone, **kwargs)
        if proj_dim < 1:
            raise ValueError(f"proj_dim must be >= 1, got {proj_dim}")
        self.ce_weight = ce_weight
        self.contrastive_weight = contrastive_weight
        self.logit_adjust_tau = logit_adjust_tau
        self.proj_dim = proj_dim
        if cosine_classifier:
            self.classifier: nn.Module = NormedLinear(self.feat_dim, num_classes, scale=classifier_scale)
        else:
            self.classifier = nn.Linear(self.feat_dim, num_classes)
        self.proj_hidden_dim = self.feat_dim if proj_hidden_dim is None else proj_hidden_dim
        # official head: Linear(d, d') -> BN -> ReLU -> Linear(d', p), biases on both linears
        self.projector = ProjectionHead(self.feat_dim, self.proj_hidden_dim, proj_dim, num_layers=2, last_bn=False)

    # ----- what subclasses implement ------------------------------------------------------------
    def contrastive_loss(
        self, z2: torch.Tensor, z3: torch.Tensor, target: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(scalar contrastive loss, extras)`` of the step; extras reach
        :meth:`train_accuracy_logits` and the step's outputs (scalars logged as ``train/<name>``).

        Args:
            z2, z3: (B, p) L2-normalised projections of views 2 and 3 (with gradient).
            target: (B,) labels.
            h: (3B, d) backbone features of ``[v1; v2; v3]`` (with gradient), for methods that
                need more than the projections.
        The classifier (``self.classifier``) and projector are reachable through ``self``
        (BalancedCL builds its prototypes from the classifier weights).
        """
        raise NotImplementedError

    def train_accuracy_logits(self, logits: torch.Tensor, extras: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits behind ``train/acc`` (default: the classifier's; ProCo adds its branch's)."""
        return logits

    # ----- shared plumbing ------------------------------------------------------------------------
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(h), dim=1)

    def training_loss(self, index, views, target):
        b = target.shape[0]
        h = self.backbone(torch.cat(list(views)))
        logits = self.classifier(h[:b])
        ce = logit_adjusted_cross_entropy(logits, target, self.class_prior, self.logit_adjust_tau)
        # the official code projects all 3B features (the projector's BatchNorm statistics
        # include view 1) and discards z1; doing the same keeps the BN statistics identical
        _, z2, z3 = self.project(h).split(b)
        con, extras = self.contrastive_loss(z2, z3, target, h)
        loss = self.ce_weight * ce + self.contrastive_weight * con.to(ce.dtype)
        with torch.no_grad():
            acc = (self.train_accuracy_logits(logits.detach(), extras).argmax(1) == target).float().mean()
        return {"loss": loss, "features": h[:b], "ce_loss": ce.detach(), "contrastive_loss": con.detach(), "acc": acc, **extras}
