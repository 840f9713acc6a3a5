"""ProCo: "Probabilistic Contrastive Learning for Long-Tailed Visual Recognition"
(Du, Wang, Song, Huang; IEEE TPAMI 2024; arXiv 2403.06726; code LeapLabTHU/ProCo).
Spec: ``proco.md``.

On the two-branch framework (:class:`TwoBranchMethod`): the contrastive loss models each class's
normalised projections as a von Mises-Fisher distribution estimated online
(:class:`VMFEstimator`) and contrasts every feature with the C class distributions through the
closed-form expectation of the SupCon-style term (``losses/proco.py``)::

    for z in (z2, z3):                       # view 2, then view 3
        estimator.update(gather(z.detach()), gather(y))     # both estimators, before the loss
        ell = proco_logits(z, kappa(old), mu(old), tau)      # (B, C) float64
        L += LA_CE(ell, y) / 2
    loss = LA_CE(classifier(h1), y) + alpha * L

The estimators' window swaps at every epoch start (old <- new, new <- reset), done by the
:class:`~ltcl_lightning.callbacks.vmf.VMFEstimation` callback that the method adds itself: during
epoch e the model uses the features of epoch e-1 and of epoch e so far. Evaluation: classifier
logits.

Differences from the official code: ``docs/methods/proco.md``.
"""

from __future__ import annotations

from typing import Any

import torch

from ltcl_lightning.callbacks.report import PerClassState
from ltcl_lightning.losses.classification import logit_adjusted_cross_entropy
from ltcl_lightning.losses.proco import proco_logits
from ltcl_lightning.methods.two_branch import TwoBranchMethod
from ltcl_lightning.modules.vmf import VMFEstimator


class ProCo(TwoBranchMethod):
    def __init__(self, num_classes: int, temperature: float = 0.1, kappa_max: float = 1e5, estimator_seed: int = 0, **kwargs):
        """
        Args:
            temperature: tau of the contrastive term (CIFAR 0.1, ImageNet-LT / iNat 0.07).
            kappa_max: the official clamp of the concentrations (1e5).
            estimator_seed: seed of the estimators' random initial means (same on every rank).
            kwargs: :class:`TwoBranchMethod` / ``LongTailMethod`` arguments (``proj_dim``: p, the
                vMF dimension, CIFAR 128, ImageNet-LT / iNat 1024; ``contrastive_weight``: alpha,
                1.0 in every official recipe; classifier, optimiser, schedule, grouping, ...).
        """
        super().__init__(num_classes, **kwargs)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if self.proj_dim < 2:
            raise ValueError(f"ProCo needs proj_dim >= 2 (a vMF on the sphere S^(p-1)), got {self.proj_dim}")
        self.temperature = temperature
        self.estimator = VMFEstimator(num_classes, self.proj_dim, seed=estimator_seed, kappa_max=kappa_max)

    # ----- estimation window ---------------------------------------------------------------------
    def configure_callbacks(self):
        """Adds :class:`VMFEstimation` (the per-epoch window swap) unless the trainer already has
        one, so the window cannot be forgotten when the method is used from Python."""
        from ltcl_lightning.callbacks.vmf import VMFEstimation

        return list(super().configure_callbacks()) + self.callbacks_unless_listed(VMFEstimation())

    # ----- loss ----------------------------------------------------------------------------------
    def view_loss(self, z: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Update the estimators with this view (all ranks), then its LA-CE over the vMF logits."""
        self.estimator.update(z, target, weight=self.padding_weight)  # the sampler's padding left out
        ell = proco_logits(z, self.estimator.kappa(), self.estimator.mean_direction(), self.temperature)
        return logit_adjusted_cross_entropy(ell, target, self.class_prior, self.logit_adjust_tau), ell

    def contrastive_loss(self, z2, z3, target, h):
        loss2, ell2 = self.view_loss(z2, target)
        loss3, ell3 = self.view_loss(z3, target)
        return (loss2 + loss3) / 2, {"branch_logits": (ell2.detach() + ell3.detach()) / 2}

    def train_accuracy_logits(self, logits, extras):
        return logits + self.contrastive_weight * extras["branch_logits"].to(logits.dtype)

    def report_state(self) -> dict[str, Any]:
        return {"kappa": PerClassState(self.estimator.kappa().detach().cpu())}
