"""NT-Xent (SimCLR) and SupCon, gathered across ranks with gradients.

Specification: ``shared/specs/simclr_supcon.md``. One implementation serves both: NT-Xent is
SupCon whose labels are the (globally unique) sample ids.

Under DDP every rank computes the loss of its own anchors against the embeddings of the whole
global batch (gathered with gradients); the mean over ranks equals the single-process loss on
the concatenated batch, and so do the gradients (tests/ddp/test_contrastive_ddp.py).
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from ltcl_lightning.utils import dist

Reduction = Literal["mean", "none"]


def _multi_view_contrastive(
    views: Sequence[torch.Tensor],
    labels: torch.Tensor | None,
    temperature: float,
    reduction: Reduction,
    gather: bool,
) -> torch.Tensor:
    """Core: anchors = every local view embedding; candidates = every global embedding but self.

    ``views``: V tensors of shape (B, d), L2-normalised rows. ``labels``: (B,) positives share a
    label; ``None`` = instance discrimination (positives = the other views of the same sample).
    Returns the mean over anchors, or (B,) per-sample means over the V anchors of a sample.
    """
    if len(views) < 2:
        raise ValueError(f"a contrastive loss needs at least 2 views, got {len(views)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    b = views[0].shape[0]
    n_views = len(views)
    anchors = torch.cat(list(views), 0)  # (V*B, d), view-major
    if gather:
        global_views, global_labels, offset = dist.gather_views(views, labels)
    else:
        global_views, global_labels, offset = list(views), labels, 0
    b_global = global_views[0].shape[0]
    candidates = torch.cat(global_views, 0)  # (V*Bg, d)
    if labels is None:  # sample ids, unique across ranks
        labels = torch.arange(b, device=anchors.device) + offset
        global_labels = torch.arange(b_global, device=anchors.device)

    logits = anchors @ candidates.T / temperature  # (V*B, V*Bg)
    # position of each local anchor among the global candidates (excluded from its own row)
    local = torch.arange(b, device=anchors.device) + offset
    self_cols = torch.cat([local + v * b_global for v in range(n_views)])
    rows = torch.arange(n_views * b, device=anchors.device)
    self_mask = torch.zeros_like(logits, dtype=torch.bool)
    self_mask[rows, self_cols] = True

    logits = logits.masked_fill(self_mask, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)

    anchor_labels = labels.repeat(n_views)
    cand_labels = global_labels.repeat(n_views)
    pos = (anchor_labels[:, None] == cand_labels[None, :]) & ~self_mask
    n_pos = pos.sum(1)
    # the other views of the same sample are always positive, so n_pos >= V - 1 >= 1
    loss_per_anchor = -(log_prob.masked_fill(~pos, 0.0)).sum(1) / n_pos
    per_sample = loss_per_anchor.view(n_views, b).mean(0)
    if reduction == "none":
        return per_sample
    if reduction == "mean":
        return per_sample.mean()
    raise ValueError(f"unknown reduction {reduction!r}")


def nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.2,
    reduction: Reduction = "mean",
    gather: bool = True,
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
    views: Sequence[torch.Tensor],
    labels: torch.Tensor,
    temperature: float = 0.1,
    reduction: Reduction = "mean",
    gather: bool = True,
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020), the "L_out" form.

    Positives of an anchor: every other embedding (any view) with the same label.
    """
    if labels.shape[0] != views[0].shape[0]:
        raise ValueError(f"{labels.shape[0]} labels for {views[0].shape[0]} samples")
    return _multi_view_contrastive(views, labels, temperature, reduction, gather)


def normalize(z: torch.Tensor) -> torch.Tensor:
    return F.normalize(z, dim=-1)
