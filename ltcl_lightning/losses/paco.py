"""PaCo / GPaCo loss: supervised contrast over [learnable class centres, queries, keys, queue].

Cui, Zhong, Liu, Yu, Jia, "Parametric Contrastive Learning", ICCV 2021, and Cui, Zhong, Tian,
Liu, Yu, Jia, "Generalized Parametric Contrastive Learning", TPAMI 2023; official code
``dvlab-research/Parametric-Contrastive-Learning`` (``PaCo/LT/losses.py``,
``GPaCo/LT/losses.py``: ``PaCoLoss``). For an anchor ``a`` (label ``y``) the candidates are the
C class centres, with logits ``(w_c . h_a + b_c + log pi_c) / supt`` (the linear classifier on
the backbone feature: the centres are its weights; ``log pi`` the training prior, PaCo's logit
adjustment, ``log(pi + 1e-9)`` as official) and every contrastive item ``j != a`` with logit
``z_a . z_j / T``. With ``P(a)`` the same-label items:

    log p_aj   = l_aj - log( sum_c exp(l_ac) + gamma sum_{j != a} exp(l_aj) )
    loss_a     = - ( beta log p_{a,y} + alpha sum_{j in P(a)} log p_aj ) / ( beta + alpha |P(a)| )

(``smooth`` spreads ``beta`` over the other centres as the GPaCo code's label smoothing). The
official ``+ 1e-12`` inside the log and the max-subtraction are replaced by ``logsumexp``; the
value is the same to rounding. ``alpha`` weighs the sample positives (0.01-0.05 in the recipes,
so the centre dominates: the rebalancing), ``beta`` the centre positive, ``gamma`` the
contrastive items in the denominator.

PaCo: anchors are the queries only (online encoder); the keys come from a momentum encoder.
GPaCo: no momentum encoder; both views are anchors (``anchors='both'``), each with its centre
logits. Under DDP the queries and keys of all ranks are items (the official code contrasts with
its rank's own batch and the queue); the per-rank mean equals the single-process loss on the
global batch.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

from ltcl_lightning.losses.contrastive import Reduction, contrastive_logits, per_sample_mean


def paco_loss(
    q: torch.Tensor,
    k: torch.Tensor,
    labels: torch.Tensor,
    centre_logits: torch.Tensor,
    queue_keys: torch.Tensor,
    queue_labels: torch.Tensor,
    temperature: float,
    alpha: float,
    beta: float = 1.0,
    gamma: float = 1.0,
    log_prior: torch.Tensor | None = None,
    supt: float = 1.0,
    smooth: float = 0.0,
    anchors: Literal["query", "both"] = "query",
    reduction: Reduction = "mean",
    gather: bool = True,
) -> torch.Tensor:
    """PaCo (``anchors='query'``) or GPaCo (``'both'``) loss.

    Args:
        q, k: (B, p) unit-norm projections of the two views (PaCo: ``k`` from the momentum
            encoder, detached here; GPaCo: same encoder, with gradient).
        labels: (B,).
        centre_logits: (B, C) (``'query'``) or (2B, C) (``'both'``: views 1 then 2) classifier
            logits of the anchors' backbone features.
        queue_keys, queue_labels: (K, p), (K,) queued keys (may be empty).
        log_prior: (C,) log training prior added to the centre logits (None: no adjustment).
    """
    if temperature <= 0 or supt <= 0:
        raise ValueError(f"temperature and supt must be > 0, got {temperature}, {supt}")
    if alpha < 0 or beta < 0 or gamma < 0 or not 0 <= smooth < 1:
        raise ValueError(f"need alpha, beta, gamma >= 0 and 0 <= smooth < 1, got {alpha}, {beta}, {gamma}, {smooth}")
    if alpha == 0 and beta == 0:
        raise ValueError("alpha and beta are both 0: the loss has no positive term")
    if anchors not in ("query", "both"):
        raise ValueError(f"anchors must be 'query' (PaCo) or 'both' (GPaCo), got {anchors!r}")
    b, n_classes = q.shape[0], centre_logits.shape[1]
    n_anchors = b if anchors == "query" else 2 * b
    if centre_logits.shape[0] != n_anchors:
        raise ValueError(f"centre_logits must have {n_anchors} rows for anchors={anchors!r}, got {centre_logits.shape[0]}")
    if anchors == "query":
        k = k.detach()
    c = contrastive_logits(
        [q, k], labels, temperature, gather, extra_items=queue_keys.detach().to(q.dtype), extra_labels=queue_labels.to(labels.device)
    )
    sample_logits, self_mask, pos = c.logits[:n_anchors], c.self_mask[:n_anchors], c.pos_mask[:n_anchors]
    centre = centre_logits.to(sample_logits.dtype)
    if log_prior is not None:
        centre = centre + log_prior.to(centre)
    centre = centre / supt
    # denominator: every centre once, every item but self gamma times (log gamma in log space)
    weighted = sample_logits + (math.log(gamma) if gamma > 0 else float("-inf"))
    denom = torch.logsumexp(torch.cat([centre, weighted.masked_fill(self_mask, float("-inf"))], 1), dim=1, keepdim=True)
    log_p_centre = centre - denom
    log_p_items = (sample_logits - denom).masked_fill(~pos, 0.0)
    y = labels.repeat(n_anchors // b)
    one_hot = F.one_hot(y, n_classes).to(centre.dtype)
    w_centre = beta * ((1 - smooth) * one_hot + smooth / max(n_classes - 1, 1) * (1 - one_hot))
    numerator = (w_centre * log_p_centre).sum(1) + alpha * log_p_items.sum(1)
    loss_per_anchor = -numerator / (w_centre.sum(1) + alpha * pos.sum(1).to(centre.dtype))
    return per_sample_mean(loss_per_anchor, n_anchors // b, reduction)
