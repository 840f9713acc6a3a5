"""PaCo: Parametric Contrastive Learning (Cui, Zhong, Liu, Yu, Jia; ICCV 2021) and GPaCo:
Generalized Parametric Contrastive Learning (Cui, Zhong, Tian, Liu, Yu, Jia; TPAMI 2023).
Official code: ``dvlab-research/Parametric-Contrastive-Learning`` (``PaCo/LT``, ``GPaCo/LT``).

Supervised contrastive learning whose contrast set also holds C learnable class centres (the
weights of the linear classifier on the backbone features, with the training log-prior added:
the logit adjustment of the official code), so the loss is one softmax over centres and
samples (``losses/paco.py``). The centre positive has weight ``beta`` (1), the sample positives
``alpha`` (0.01-0.05), the samples in the denominator ``gamma`` (1): with alpha small the loss
is close to a logit-adjusted CE, and the samples rebalance it. Evaluation: the classifier on the
backbone features, without the prior.

- :class:`PaCo`: view 1 -> online encoder (query ``q``, centre logits), view 2 -> momentum
  encoder (EMA 0.999 of backbone + projector, key ``k``); contrast set ``[q, k, queue]``, the
  queue holds the last ``queue_size`` keys and labels of all ranks
  (:mod:`ltcl_lightning.modules.momentum_encoder`). Projector: Linear-BN-ReLU-Linear.
- :class:`GPaCo`: no momentum encoder: both views go through the online encoder, both are
  anchors with their centre logits, the queue holds view-2 projections. Projector:
  Linear-ReLU-Linear-ReLU-Linear (no batch norm), as ``GPaCo/LT/moco/builder.py``.

Differences from the official code: ``docs/methods/paco.md``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ltcl_lightning.callbacks.report import ScalarState
from ltcl_lightning.losses.paco import paco_loss
from ltcl_lightning.methods.base import LongTailMethod
from ltcl_lightning.modules.heads import ProjectionHead
from ltcl_lightning.modules.momentum_encoder import EMASchedule, FeatureQueue, MomentumEncoder


class _ParametricContrastive(LongTailMethod):
    """Shared by PaCo and GPaCo: classifier (the centres), projector, queue, loss weights."""

    uses_online_probe = False
    num_views = 2  # query view, key view (the base refuses other counts)
    anchors: Literal["query", "both"] = "query"

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet32_cifar",
        temperature: float = 0.05,
        proj_dim: int = 32,
        queue_size: int = 1024,
        alpha: float = 0.01,
        beta: float = 1.0,
        gamma: float = 1.0,
        supt: float = 1.0,
        smooth: float = 0.0,
        logit_adjust: bool = True,
        **kwargs,
    ):
        """
        Args:
            temperature: ``--moco-t`` (CIFAR 0.05, ImageNet-LT 0.2).
            proj_dim: ``--moco-dim`` (CIFAR 32, ImageNet-LT 128).
            queue_size: ``--moco-k`` (CIFAR 1024, ImageNet-LT 8192).
            alpha, beta, gamma: weights of the sample positives, the centre positive and the
                samples in the denominator (official ``--alpha --beta --gamma``).
            supt: temperature of the centre logits (official 1.0).
            smooth: label smoothing of the centre target (GPaCo's ``smooth``, 0).
            logit_adjust: add the training log-prior to the centre logits (official: yes).
            kwargs: ``LongTailMethod`` arguments (optimiser, schedule, grouping, ...).
        """
        super().__init__(num_classes, backbone, **kwargs)
        if temperature <= 0 or supt <= 0:
            raise ValueError(f"temperature and supt must be > 0, got {temperature}, {supt}")
        if alpha < 0 or beta < 0 or gamma < 0 or (alpha == 0 and beta == 0):
            raise ValueError(f"need alpha, beta, gamma >= 0 and alpha + beta > 0, got {alpha}, {beta}, {gamma}")
        self.temperature, self.alpha, self.beta, self.gamma = temperature, alpha, beta, gamma
        self.supt, self.smooth, self.logit_adjust = supt, smooth, logit_adjust
        self.classifier = nn.Linear(self.feat_dim, num_classes)
        self.projector = self.build_projector(self.feat_dim, proj_dim)
        self.queue = FeatureQueue(queue_size, proj_dim)

    def build_projector(self, feat_dim: int, proj_dim: int) -> nn.Module:
        raise NotImplementedError

    def project(self, h: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projector(h), dim=1)

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(x))

    def log_prior(self) -> torch.Tensor | None:
        # official: log(cls_num / sum + 1e-9)
        return torch.log(self.class_prior + 1e-9) if self.logit_adjust else None

    def encode(self, views: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(q, k, centre logits of the anchors, backbone features of view 1)``."""
        raise NotImplementedError

    def training_loss(self, index, views, target):
        q, k, centre_logits, h = self.encode(views)
        queue_keys, queue_labels = self.queue.contents()
        per_sample = paco_loss(
            q,
            k,
            target,
            centre_logits,
            queue_keys,
            queue_labels,
            self.temperature,
            self.alpha,
            self.beta,
            self.gamma,
            log_prior=self.log_prior(),
            supt=self.supt,
            smooth=self.smooth,
            anchors=self.anchors,
            reduction="none",
        )
        self.queue.enqueue(k.detach(), target)  # after the loss: the batch's own keys are items already
        b = target.shape[0]
        acc = (centre_logits[:b].detach().argmax(1) == target).float().mean()
        return {"loss": per_sample.mean(), "features": h, "acc": acc}

    def report_state(self) -> dict[str, Any]:
        return {"queue_filled": ScalarState(self.queue.num_filled)}


class PaCo(_ParametricContrastive):
    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet32_cifar",
        ema_momentum: float = 0.999,
        ema_schedule: Literal["constant", "cosine"] = "constant",
        **kwargs,
    ):
        """
        Args:
            ema_momentum: ``--moco-m`` (0.999), the base of the EMA schedule.
            ema_schedule: ``constant`` (official) or ``cosine`` (BYOL: base -> 1 over training).
            kwargs: see :class:`_ParametricContrastive` and ``LongTailMethod``.
        """
        super().__init__(num_classes, backbone, **kwargs)
        self.ema = EMASchedule(ema_momentum, ema_schedule)
        self.key_encoder = MomentumEncoder(self.backbone, self.projector)

    def build_projector(self, feat_dim: int, proj_dim: int) -> nn.Module:
        # official mlp=True: Linear(d, d) -> BN -> ReLU -> fc(d, dim)
        return ProjectionHead(feat_dim, feat_dim, proj_dim, num_layers=2, last_bn=False)

    def momentum(self) -> float:
        """The EMA momentum of this step: a function of the global step (a resume continues it)."""
        if self.ema.kind == "constant":
            return self.ema.base
        total = self.trainer.estimated_stepping_batches
        if total == float("inf"):
            raise ValueError("a cosine EMA schedule needs a finite run: set trainer.max_epochs or trainer.max_steps")
        return self.ema(self.global_step, int(total))

    def encode(self, views):
        h = self.backbone(views[0])
        q = self.project(h)
        k = self.key_encoder.keys([self.backbone, self.projector], self.momentum(), views[1])
        return q, k, self.classifier(h), h


class GPaCo(_ParametricContrastive):
    anchors = "both"

    def build_projector(self, feat_dim: int, proj_dim: int) -> nn.Module:
        # GPaCo/LT/moco/builder.py, mlp=True: Linear-ReLU-Linear-ReLU-fc, no batch norm
        return nn.Sequential(
            nn.Linear(feat_dim, feat_dim),
            nn.ReLU(inplace=True),
            nn.Linear(feat_dim, feat_dim),
            nn.ReLU(inplace=True),
            nn.Linear(feat_dim, proj_dim),
        )

    def encode(self, views):
        b = views[0].shape[0]
        h = self.backbone(torch.cat(views[:2]))
        z = self.project(h)
        return z[:b], z[b:], self.classifier(h), h[:b]
