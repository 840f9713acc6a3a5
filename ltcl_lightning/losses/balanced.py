"""Balanced supervised contrastive loss (BalSCL) of BalancedCL.

Zhu, Wang, Chen, Chen, Jiang, "Balanced Contrastive Learning for Long-Tailed Visual
Recognition", CVPR 2022 (called "BCL" there; not BoostedCL). Specification:
``balanced_cl.md``.

Items are the V*B view embeddings (the anchors) and the C class prototypes (items, never
anchors). With n_k the number of items of class k in the batch (every view of every sample,
plus the prototype, so n_k >= 1 for every class: "class-complement") and s_ab = <z_a, x_b> / T:

    D_a = sum_{b != a} exp(s_ab) / w_ab,   w_ab = n_{y_b} - 1 if y_b = y_a else n_{y_b}
    l_a = -(1 / |P(a)|) sum_{p in P(a)} (s_ap - log D_a),   P(a) = {b != a : y_b = y_a}

("class-averaging": every class contributes the *mean* of its exp-similarities to the
denominator, so a head class no longer outweighs a tail class there). The loss is the mean of
l_a over the anchors.

Distributed training (``gather=True``, the default of every contrastive loss): the official
script trains with ``nn.DataParallel``, so its criterion sees the whole (global) batch of 256
(with per-GPU BatchNorm); under DDP the embeddings of all ranks are gathered with gradients, the
class counts n_k count the global batch, each rank's anchors are its local embeddings, and with
equal shards the mean over ranks (DDP's gradient averaging) equals the single-process loss on
the concatenated batch, loss and gradient (tests/ddp/test_balanced_ddp.py). ``gather=False``
is each rank's batch alone. Prototypes are not gathered: every rank computes the same ones from
the same weights. Logits and masks come from ``losses.contrastive.contrastive_logits``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ltcl_lightning.losses.contrastive import Reduction, contrastive_logits, per_sample_mean


def balanced_contrastive_loss(
    views: Sequence[torch.Tensor],
    labels: torch.Tensor,
    prototypes: torch.Tensor | None = None,
    temperature: float = 0.07,
    reduction: Reduction = "mean",
    gather: bool = True,
    check_labels: bool = True,
) -> torch.Tensor:
    """Balanced supervised contrastive loss (BalancedCL, CVPR 2022, "L_BalSCL").

    Args:
        views: V tensors of shape (B, p), one per contrastive view, rows L2-normalised (the
            official code uses V = 2: views v2 and v3). Every view embedding is an anchor.
        labels: (B,) class indices of the samples (each view carries its sample's label).
        prototypes: (C, p) L2-normalised class prototypes, row k labelled k; items but not
            anchors. ``None`` drops the class-complement (then n_k counts the views only).
        temperature: T (0.07 in the official ImageNet-LT / iNaturalist recipes).
        reduction: ``'mean'`` (mean over all V*B anchors) or ``'none'`` ((B,) per-sample mean
            over the sample's V anchors).
        gather: contrast against the embeddings of all ranks (class counts over the global
            batch; default, see the module docstring); ``False`` = the local batch only.
        check_labels: refuse labels outside [0, C) (reads them on the host: a device sync;
            a caller whose labels were validated already, e.g. against the datamodule's class
            counts, passes ``False``).

    Returns:
        The loss (scalar, or (B,) with ``reduction='none'``), in float32 at least.
    """
    views = list(views)
    if len(views) == 0:
        raise ValueError("balanced_contrastive_loss needs at least one view")
    if len(views) < 2 and prototypes is None:
        raise ValueError(
            "with a single view and no prototypes an anchor whose class appears once has no positive; "
            "pass 2 views (v2, v3) or the class prototypes"
        )
    b, p = views[0].shape
    for v in views:
        if v.shape != (b, p):
            raise ValueError(f"all views must have shape {(b, p)}, got {tuple(v.shape)}")
    if labels.shape != (b,):
        raise ValueError(f"labels must have shape ({b},) to match the views, got {tuple(labels.shape)}")
    num_classes = 0
    if prototypes is not None:
        if prototypes.ndim != 2 or prototypes.shape[1] != p:
            raise ValueError(f"prototypes must have shape (C, {p}), got {tuple(prototypes.shape)}")
        num_classes = prototypes.shape[0]
        if check_labels and b > 0 and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
            raise ValueError(
                f"labels must lie in [0, {num_classes}) (one prototype per class), got range [{int(labels.min())}, {int(labels.max())}]"
            )

    # half precision would lose the 1/T = 14x amplified logits; compute in float32 at least
    dtype = torch.promote_types(views[0].dtype, torch.float32)
    views = [v.to(dtype) for v in views]
    protos = prototypes.to(dtype) if prototypes is not None else None
    proto_labels = torch.arange(num_classes, device=labels.device, dtype=labels.dtype)  # row k is class k
    c = contrastive_logits(views, labels, temperature, gather, protos, proto_labels)
    y_items = c.item_labels
    # n_k over the (global) batch: all views + one prototype per class
    if prototypes is not None:
        counts = torch.zeros(num_classes, dtype=dtype, device=y_items.device).index_add_(0, y_items, torch.ones_like(y_items, dtype=dtype))[
            y_items
        ]
    else:  # classes unknown: count each item's label among the items (no host sync)
        counts = (y_items[:, None] == y_items[None, :]).sum(1).to(dtype)
    same = c.pos_mask | c.self_mask  # y_b = y_a
    # class-averaging weights; w_ab >= 1 for every b != a (a and b both count towards n_{y_a})
    w = counts[None, :] - same.to(dtype)
    weighted = (c.logits - torch.log(w.clamp_min(1.0))).masked_fill(c.self_mask, float("-inf"))
    log_denominator = torch.logsumexp(weighted, dim=1)  # log D_a
    n_pos = c.pos_mask.sum(1)  # >= 1: the other views of the sample, or the class prototype
    loss_per_anchor = log_denominator - c.logits.masked_fill(~c.pos_mask, 0.0).sum(1) / n_pos
    return per_sample_mean(loss_per_anchor, c.num_views, reduction)
