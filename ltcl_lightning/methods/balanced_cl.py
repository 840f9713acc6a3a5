"""BalancedCL: Zhu, Wang, Chen, Chen, Jiang, "Balanced Contrastive Learning for Long-Tailed
Visual Recognition", CVPR 2022 (called "BCL" in its paper; not BoostedCL). Official code:
FlamieZhu/Balanced-Contrastive-Learning (ImageNet-LT, iNaturalist 2018). Spec:
``balanced_cl.md``.

On the shared two-branch step (``TwoBranchMethod``: one backbone forward over [v1; v2; v3],
logit-adjusted CE on the classifier logits of v1, projections z2, z3 of v2, v3)::

    c_k  = normalize(head_fc(w_k))             # class prototypes from the classifier weights
    loss = alpha * LA_CE(logits, y) + beta * L_BalSCL([z2, z3], y, prototypes=c, T)

``head_fc`` is a second MLP of the projector's shape (Linear -> BN -> ReLU -> Linear); its
BatchNorm normalises over the C weight vectors. Gradients of L_BalSCL reach the classifier
weights through the prototypes. alpha, beta = ``ce_weight``, ``contrastive_weight`` (official
ImageNet-LT / iNat: 1.0, 0.35); T = 0.07.

Differences from the official code: ``docs/methods/balanced_cl.md``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ltcl_lightning.losses.balanced import balanced_contrastive_loss
from ltcl_lightning.methods.two_branch import TwoBranchMethod
from ltcl_lightning.modules.heads import NormedLinear, ProjectionHead


class BalancedCL(TwoBranchMethod):
    def __init__(self, num_classes: int, temperature: float = 0.07, contrastive_weight: float = 0.35, gather: bool = True, **kwargs):
        """
        Args:
            temperature: T of the balanced contrastive loss (official 0.07).
            contrastive_weight: beta, weight of L_BalSCL (official 0.35; alpha = ``ce_weight`` 1.0).
            gather: compute L_BalSCL over the batch of all ranks (default, as every contrastive
                loss; see the module docstring); ``False``: each rank's batch alone.
            **kwargs: ``TwoBranchMethod`` / ``LongTailMethod`` arguments (``proj_hidden_dim``,
                ``proj_dim``: the shape of the projector and of ``head_fc``, ImageNet-LT / iNat
                ``None`` (= backbone width 2048) and 1024; ``cosine_classifier``, optimiser, ...).
        """
        if num_classes < 2:
            # head_fc's BatchNorm normalises over the C prototypes: it needs C >= 2 in training
            raise ValueError(f"BalancedCL needs num_classes >= 2 (head_fc normalises over classes), got {num_classes}")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        super().__init__(num_classes, contrastive_weight=contrastive_weight, **kwargs)
        self.temperature = temperature
        self.gather = gather
        self.head_fc = ProjectionHead(self.feat_dim, self.proj_hidden_dim, self.proj_dim, num_layers=2, last_bn=False)

    def class_weights(self) -> torch.Tensor:
        """The classifier's weight vectors w_k as a (C, d) tensor (with gradient)."""
        if isinstance(self.classifier, NormedLinear):
            return self.classifier.weight.T  # stored (d, C)
        if isinstance(self.classifier, nn.Linear):
            return self.classifier.weight  # stored (C, d)
        raise TypeError(f"BalancedCL does not know where {type(self.classifier).__name__} keeps its class weights")

    def prototypes(self) -> torch.Tensor:
        """c_k = normalize(head_fc(w_k)), (C, p) ("class-complement" items of L_BalSCL)."""
        return F.normalize(self.head_fc(self.class_weights()), dim=1)

    def contrastive_loss(self, z2, z3, target, h):
        loss = balanced_contrastive_loss(
            [z2, z3], target, self.prototypes(), temperature=self.temperature, gather=self.gather, check_labels=False
        )  # the data's labels are checked against num_classes at setup
        return loss, {}
