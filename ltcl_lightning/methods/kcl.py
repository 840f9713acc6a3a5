"""KCL (Kang et al., ICLR 2021) and TSC (Li et al., CVPR 2022), stage 1: MoCo with k balanced
positives per anchor, and (TSC) class targets uniform on the sphere. Reference code:
``LTH14/targeted-supcon`` (``moco/builder.py``: ``KCL``; ``main_moco_supcon_imba.py``), which is
TSC's official code and the unofficial KCL re-implementation TSC compares with.

Step: the key encoder (EMA 0.999 of backbone + projector) encodes view 2; the query ``q`` of
view 1 is contrasted with its own key, the queue of earlier keys and (TSC) the targets
(``losses/kcl.py``); positives are its own key and k = 6 queue keys of its class drawn at random
(TSC adds its class's assigned target, weight ``tw``). After the loss the batch's keys and labels
of all ranks are enqueued; TSC updates the class centroids with the queries of all ranks and
re-matches classes to targets (``modules/tsc_targets.py``). Stage 2 (both papers): a linear
classifier on the frozen backbone trained with class-balanced sampling
(:class:`~ltcl_lightning.methods.linear_probe.LinearProbe` with ``sampler: class_balanced``; see
``docs/methods/kcl_tsc.md``). During stage 1 the base's online probe monitors the features.

Differences from the reference code: ``docs/methods/kcl_tsc.md``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ltcl_lightning.losses.kcl import kcl_loss
from ltcl_lightning.methods.base import LongTailMethod
from ltcl_lightning.modules.momentum_encoder import FeatureQueue, MomentumEncoder
from ltcl_lightning.modules.tsc_targets import TargetAssignment
from ltcl_lightning.utils import dist


class KCL(LongTailMethod):
    num_views = 2  # query view, key view

    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        temperature: float = 0.07,
        proj_dim: int = 128,
        queue_size: int = 65536,
        num_positives: int = 6,
        ema_momentum: float = 0.999,
        sample_seed: int = 0,
        **kwargs,
    ):
        """
        Args:
            temperature: ``--moco-t`` (0.07).
            proj_dim: ``--moco-dim`` (128).
            queue_size: ``--moco-k`` (65,536).
            num_positives: KCL's k (``--K``, 6).
            ema_momentum: ``--moco-m`` (0.999).
            sample_seed: seed of the positive sampling (with the step and the rank).
            kwargs: ``LongTailMethod`` arguments.
        """
        super().__init__(num_classes, backbone, **kwargs)
        if temperature <= 0 or num_positives < 1:
            raise ValueError(f"need temperature > 0 and num_positives >= 1, got {temperature}, {num_positives}")
        self.temperature, self.num_positives, self.sample_seed = temperature, num_positives, sample_seed
        self.ema_momentum = ema_momentum
        self.target_weight = 1.0  # of the target term; KCL has no targets (TSC sets its --tw)
        # reference mlp: Linear(d, d) -> ReLU -> fc(d, dim)
        self.projector = nn.Sequential(nn.Linear(self.feat_dim, self.feat_dim), nn.ReLU(), nn.Linear(self.feat_dim, proj_dim))
        self.key_encoder = MomentumEncoder(self.backbone, self.projector)
        self.queue = FeatureQueue(queue_size, proj_dim)

    def _scores(self, b: int) -> torch.Tensor:
        g = torch.Generator(device=self.device)
        g.manual_seed((self.sample_seed * 1_000_003 + self.global_step) * 1024 + dist.rank())
        return torch.rand((b, self.queue.num_filled), generator=g, device=self.device)

    def targets_for(self, q: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """TSC's targets and each anchor's assigned ones; KCL: none."""
        return None, None

    def training_loss(self, index, views, target):
        h = self.backbone(views[0])
        q = F.normalize(self.projector(h), dim=1)
        k = self.key_encoder.keys([self.backbone, self.projector], self.ema_momentum, views[1])
        targets, target_positive = self.targets_for(q, target)
        queue_keys, queue_labels = self.queue.contents()
        loss_class, loss_target = kcl_loss(
            q,
            k,
            target,
            queue_keys,
            queue_labels,
            self.temperature,
            self.num_positives,
            self._scores(q.shape[0]),
            targets,
            target_positive,
            self.target_weight,
        )
        self.queue.enqueue(k, target)
        out = {"loss": loss_class + loss_target, "features": h, "loss_class": loss_class.detach()}
        if targets is not None:
            out["loss_target"] = loss_target.detach()
        return out


class TSC(KCL):
    def __init__(
        self,
        num_classes: int,
        backbone: str = "resnet50",
        target_weight: float = 0.2,
        target_repeats: int = 1,
        target_steps: int = 10000,
        target_seed: int = 0,
        **kwargs,
    ):
        """
        Args:
            target_weight: ``--tw`` (0.2).
            target_repeats: targets per class, ``--tr`` (1).
            target_steps: Adam iterations of the target generation (official 10,000).
            target_seed: seed of the targets and initial centroids.
            kwargs: :class:`KCL` arguments.
        """
        super().__init__(num_classes, backbone, **kwargs)
        if target_weight < 0:
            raise ValueError(f"target_weight must be >= 0, got {target_weight}")
        self.target_weight = target_weight
        self.assigner = TargetAssignment(num_classes, self.queue.dim, target_repeats, target_steps, target_seed)

    def on_fit_start(self) -> None:
        super().on_fit_start()
        # the targets of a run from scratch, made before the first step (after a checkpoint's
        # restore, which brings its own): outside a compiled training_loss, its time not in step 1
        _ = self.assigner.targets

    def targets_for(self, q, target):
        self.assigner.update(q.detach(), target, weight=self.padding_weight)  # centroids from all ranks, then the matching
        return self.assigner.targets, self.assigner.positive_mask(target)
