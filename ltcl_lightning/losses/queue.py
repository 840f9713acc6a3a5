"""Supervised contrast of queries against momentum keys and a queue (MoCo-style contrast set).

The contrast set of PaCo / GPaCo (Cui et al., ICCV 2021, ``PaCo/LT/losses.py``):
``[queries, keys, queue]`` (KCL / TSC contrast ``[own key, queue, targets]``: ``losses/kcl.py``). An anchor is a query ``q_i`` (online encoder, with gradient); its
candidates are every query but itself, every key ``k_j`` (momentum encoder, no gradient) and
every queued key; positives share the anchor's label (its own key is always one).

Under DDP the queries (with gradients) and keys of **all** ranks are in the contrast set, so the
mean over ranks of the per-rank losses, and its gradient, equal the single-process loss on the
global batch (tests/ddp/test_momentum_queue_ddp.py). The official code contrasts against the
rank's own queries and keys plus the queue; with one GPU (the CIFAR recipe) they are the same.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ltcl_lightning.losses.contrastive import Reduction, contrastive_logits, per_sample_mean


class KeyedContrast(NamedTuple):
    logits: torch.Tensor  # (B, N): q_i . c_j / T, self column -inf
    positive: torch.Tensor  # (B, N) bool: same label, not self
    not_self: torch.Tensor  # (B, N) bool


def keyed_contrast(
    q: torch.Tensor,
    k: torch.Tensor,
    labels: torch.Tensor,
    queue_keys: torch.Tensor,
    queue_labels: torch.Tensor,
    temperature: float,
    gather: bool = True,
) -> KeyedContrast:
    """Logits of the local queries ``q`` (B, d) against ``[global q, global k, queue]``.

    ``k`` (B, d) is detached. ``queue_keys`` (K, d) / ``queue_labels`` (K,) may be empty.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if q.shape != k.shape:
        raise ValueError(f"queries and keys must have the same shape, got {tuple(q.shape)} and {tuple(k.shape)}")
    if labels.shape != (q.shape[0],):
        raise ValueError(f"{tuple(labels.shape)} labels for {q.shape[0]} queries")
    if queue_keys.shape[0] != queue_labels.shape[0] or (queue_keys.numel() and queue_keys.shape[1] != q.shape[1]):
        raise ValueError(f"queue keys {tuple(queue_keys.shape)} and labels {tuple(queue_labels.shape)} do not fit queries {tuple(q.shape)}")
    b = q.shape[0]
    # the kernel's anchors are both views; the key rows (no gradient) are dropped
    c = contrastive_logits(
        [q, k.detach()],
        labels,
        temperature,
        gather,
        extra_items=queue_keys.detach().to(q.dtype),
        extra_labels=queue_labels.to(labels.device),
    )
    not_self = ~c.self_mask[:b]
    return KeyedContrast(c.logits[:b].masked_fill(~not_self, float("-inf")), c.pos_mask[:b], not_self)


def queue_supcon_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    labels: torch.Tensor,
    queue_keys: torch.Tensor,
    queue_labels: torch.Tensor,
    temperature: float = 0.2,
    reduction: Reduction = "mean",
    gather: bool = True,
) -> torch.Tensor:
    """SupCon of each query over ``[queries, keys, queue]``: the mean over its positives of
    ``-log softmax`` (PaCo's loss without class centres, alpha = gamma = 1)."""
    c = keyed_contrast(q, k, labels, queue_keys, queue_labels, temperature, gather)
    log_prob = c.logits - torch.logsumexp(c.logits, dim=1, keepdim=True)
    return per_sample_mean(-log_prob.masked_fill(~c.positive, 0.0).sum(1) / c.positive.sum(1), 1, reduction)
