"""KCL (Kang, Li, Xie, Yuan, Feng, "Exploring Balanced Feature Spaces for Representation
Learning", ICLR 2021) and TSC (Li, Cao, Yuan, Fan, Yang, Feris, Indyk, Katabi, "Targeted
Supervised Contrastive Learning for Long-Tailed Recognition", CVPR 2022), as in the TSC
repository ``LTH14/targeted-supcon`` (``moco/builder.py``, class ``KCL``; it also holds the
unofficial KCL re-implementation the TSC paper compares with).

An anchor is a query ``q_i``; its candidates are its own key ``k_i``, the queue of keys of
earlier batches and (TSC) the class targets ``t_c``, all at temperature ``T``:

    log p_ij  = log softmax_j([q_i . k_i, q_i . queue_j, q_i . t_c] / T)
    P_i       = {k_i} + (KCL) k keys of the queue with label y_i, drawn uniformly without
                replacement (all of them if fewer)
    T_i       = (TSC) the target(s) assigned to class y_i
    loss_i    = -( sum_{P_i} log p + tw sum_{T_i} log p ) / (|P_i| + |T_i|)

Balanced positives (k per anchor whatever the class frequency) are KCL's answer to the head
classes' many positives in SupCon; TSC's targets spread the class centres uniformly on the
sphere. The sampling takes random scores (``scores``, (B, K)) so that the caller owns the
randomness (same seed on every rank); ``num_positives=None`` keeps every queue positive.
The official normalises ``exp(logits)`` with ``F.normalize(p=1)`` and takes the log (overflows
in fp16 at T 0.07); here it is ``log_softmax``.
"""

from __future__ import annotations

import torch

from ltcl_lightning.losses.contrastive import Reduction


def sample_positives(positive: torch.Tensor, k: int | None, scores: torch.Tensor | None) -> torch.Tensor:
    """A uniformly random subset of at most ``k`` True entries per row of ``positive`` (B, K)
    (all of them with ``k=None``); ``scores`` (B, K) uniform random numbers."""
    if k is None:
        return positive
    if k < 1:
        raise ValueError(f"num_positives must be >= 1 (or None for all), got {k}")
    if positive.shape[1] == 0:
        return positive
    if scores is None or scores.shape != positive.shape:
        raise ValueError(f"sampling {k} positives needs random scores of shape {tuple(positive.shape)}")
    # the k largest random scores among the positives: a uniform k-subset (fewer if fewer exist)
    ranked = scores.masked_fill(~positive, -1.0)
    top = ranked.topk(min(k, positive.shape[1]), dim=1)
    chosen = torch.zeros_like(positive)
    chosen.scatter_(1, top.indices, top.values >= 0)
    return chosen & positive


def kcl_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    labels: torch.Tensor,
    queue_keys: torch.Tensor,
    queue_labels: torch.Tensor,
    temperature: float = 0.07,
    num_positives: int | None = 6,
    scores: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    target_positive: torch.Tensor | None = None,
    target_weight: float = 1.0,
    reduction: Reduction = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """KCL (``targets=None``) or TSC loss; returns ``(class part, target part)`` (the loss is
    their sum; the target part is already weighted by ``target_weight``).

    Args:
        q, k: (B, p) unit-norm queries (with gradient) and their keys (detached here).
        queue_keys, queue_labels: (K, p), (K,) keys of earlier batches.
        num_positives: KCL's k (6); ``None``: every same-label key of the queue.
        scores: (B, K) uniform random numbers for the sampling.
        targets: (T, p) TSC's class targets; ``target_positive`` (B, T) bool marks each
            anchor's assigned target(s).
        target_weight: TSC's ``tw`` (0.2 in the recipe).
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if q.shape != k.shape or labels.shape != (q.shape[0],):
        raise ValueError(f"queries {tuple(q.shape)}, keys {tuple(k.shape)} and labels {tuple(labels.shape)} do not match")
    if (targets is None) != (target_positive is None):
        raise ValueError("targets and target_positive go together (TSC) or are both None (KCL)")
    cols = [(q * k.detach()).sum(1, keepdim=True), q @ queue_keys.detach().to(q.dtype).T]
    if targets is not None:
        cols.append(q @ targets.to(q.dtype).T)
    log_prob = torch.log_softmax(torch.cat(cols, 1) / temperature, dim=1)
    queue_pos = sample_positives(labels[:, None] == queue_labels.to(labels.device)[None, :], num_positives, scores)
    n_queue = queue_keys.shape[0]
    class_term = log_prob[:, 0] + log_prob[:, 1 : 1 + n_queue].masked_fill(~queue_pos, 0.0).sum(1)
    count = 1 + queue_pos.sum(1).to(log_prob.dtype)
    target_term = torch.zeros_like(class_term)
    if targets is not None:
        assert target_positive is not None
        target_term = log_prob[:, 1 + n_queue :].masked_fill(~target_positive, 0.0).sum(1)
        count = count + target_positive.sum(1).to(log_prob.dtype)
    loss_class, loss_target = -class_term / count, -target_weight * target_term / count
    if reduction == "none":
        return loss_class, loss_target
    if reduction == "mean":
        return loss_class.mean(), loss_target.mean()
    raise ValueError(f"unknown reduction {reduction!r}")
