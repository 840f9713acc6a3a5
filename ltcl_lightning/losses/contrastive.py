"""The contrastive building block, and NT-Xent (SimCLR) and SupCon on it.

Specification: ``simclr_supcon.md``. :func:`contrastive_logits` is the kernel every
NT-Xent, SupCon and BalancedCL variant is written on: anchors = the V local view embeddings,
items = the V views of the global batch (gathered with gradients; plus optional extra items such
as class prototypes, never anchors), logits ``s_ab = <z_a, x_b> / T``, each anchor's own column
(``self_mask``) and its positives (same label, not self: ``pos_mask``). NT-Xent is SupCon whose
labels are the (globally unique) sample ids.

``gather`` has one default for every loss, ``True``: the global batch, what every official code
computes (nn.DataParallel or a gather). Under DDP every rank computes the loss of its own anchors
against the items of the whole global batch; the mean over ranks equals the single-process loss
on the concatenated batch, and so do the gradients (tests/ddp/test_contrastive_ddp.py).

A new variant (e.g. hard-negative or debiased NT-Xent) is a function of one
:class:`ContrastiveLogits`: it reweights ``logits`` over the negatives ``~(pos_mask | self_mask)``
and reduces per anchor with :func:`per_sample_mean`. Nothing here syncs the host and the device.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch

from ltcl_lightning.utils import dist

Reduction = Literal["mean", "none"]


class ContrastiveLogits(NamedTuple):
    """Anchors are the V*B local view embeddings (view-major); items the N = V*Bg global ones
    (view-major, rank order) followed by the extra items."""

    logits: torch.Tensor  # (V*B, N) s_ab = <z_a, x_b> / T, self not masked
    self_mask: torch.Tensor  # (V*B, N) bool: the anchor itself
    pos_mask: torch.Tensor  # (V*B, N) bool: same label, not self
    item_labels: torch.Tensor  # (N,)
    num_views: int


def contrastive_logits(
    views: Sequence[torch.Tensor],
    labels: torch.Tensor | None,
    temperature: float,
    gather: bool = True,
    extra_items: torch.Tensor | None = None,
    extra_labels: torch.Tensor | None = None,
) -> ContrastiveLogits:
    """Logits and masks of a multi-view contrastive loss.

    ``views``: V tensors of shape (B, d), L2-normalised rows. ``labels``: (B,) positives share a
    label; ``None`` = instance discrimination (positives = the other views of the same sample).
    ``extra_items`` (M, d) with ``extra_labels`` (M,): items that are never anchors (BalancedCL's
    class prototypes; not gathered, every rank holds the same).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b, n_views, device = views[0].shape[0], len(views), views[0].device
    global_views, global_labels, offset = dist.gather_views(views, labels) if gather else (list(views), labels, 0)
    b_global = global_views[0].shape[0]
    if labels is None:  # sample ids, unique across ranks
        labels = torch.arange(b, device=device) + offset
        global_labels = torch.arange(b_global, device=device)
    assert global_labels is not None  # gathered labels, or the sample ids just built
    items, item_labels = list(global_views), [global_labels.repeat(n_views)]
    if extra_items is not None:
        if extra_labels is None:
            raise ValueError("extra_items need extra_labels (one label per item)")
        items.append(extra_items)
        item_labels.append(extra_labels)
    y_items = torch.cat(item_labels)
    logits = torch.cat(list(views), 0) @ torch.cat(items, 0).T / temperature  # (V*B, N)
    # column of each local anchor among the global items
    local = torch.arange(b, device=device) + offset
    self_cols = torch.cat([local + v * b_global for v in range(n_views)])
    self_mask = self_cols[:, None] == torch.arange(logits.shape[1], device=device)[None, :]
    pos_mask = (labels.repeat(n_views)[:, None] == y_items[None, :]) & ~self_mask
    return ContrastiveLogits(logits, self_mask, pos_mask, y_items, n_views)


def per_sample_mean(loss_per_anchor: torch.Tensor, num_views: int, reduction: Reduction) -> torch.Tensor:
    """(V*B,) per-anchor losses -> (B,) per-sample means over the V anchors, or their mean."""
    per_sample = loss_per_anchor.view(num_views, -1).mean(0)
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"unknown reduction {reduction!r}; use 'mean' or 'none'")


def _multi_view_contrastive(
    views: Sequence[torch.Tensor], labels: torch.Tensor | None, temperature: float, reduction: Reduction, gather: bool
) -> torch.Tensor:
    """SupCon "L_out": ``-mean_{p in P(a)} log softmax_{b != a}(s_ab)[p]`` per anchor."""
    if len(views) < 2:
        raise ValueError(f"a contrastive loss needs at least 2 views, got {len(views)}")
    c = contrastive_logits(views, labels, temperature, gather)
    logits = c.logits.masked_fill(c.self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    # the other views of the same sample are always positive, so n_pos >= V - 1 >= 1
    loss_per_anchor = -(log_prob.masked_fill(~c.pos_mask, 0.0)).sum(1) / c.pos_mask.sum(1)
    return per_sample_mean(loss_per_anchor, c.num_views, reduction)


def nt_xent_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2, reduction: Reduction = "mean", gather: bool = True
) -> torch.Tensor:
    """NT-Xent over the 2B embeddings (positive once in the denominator, 2B - 2 negatives).

    ``z1``, ``z2``: (B, d) L2-normalised projections of the two views. ``reduction='none'``
    gives the per-sample loss (mean of the sample's two anchor directions), which BoostedCL
    tracks.
    """
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    return _multi_view_contrastive([z1, z2], None, temperature, reduction, gather)


def supcon_loss(
    views: Sequence[torch.Tensor], labels: torch.Tensor, temperature: float = 0.1, reduction: Reduction = "mean", gather: bool = True
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020), the "L_out" form.

    Positives of an anchor: every other embedding (any view) with the same label.
    """
    if labels.shape[0] != views[0].shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {views[0].shape[0]} samples")
    return _multi_view_contrastive(views, labels, temperature, reduction, gather)
