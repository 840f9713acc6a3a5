"""Debiased and hard-negative NT-Xent, in log space.

- **Debiased NT-Xent** (Chuang, Robinson, Lin, Torralba, Jegelka, "Debiased Contrastive
  Learning", NeurIPS 2020, official ``chingyaoc/DCL`` ``main.py``). Not lightly's ``DCLLoss``,
  which is *decoupled* contrastive learning (Yeh et al. 2022).
- **Hard-negative NT-Xent** (Robinson, Chuang, Sra, Jegelka, "Contrastive Learning with Hard
  Negative Samples", ICLR 2021, official ``joshr17/HCL`` ``image/main.py``, ``criterion``).

For an anchor with positive score ``pos = exp(s+ / t)`` and the ``N = 2B - 2`` negative scores
``neg_j = exp(s_j / t)`` (every other embedding of the global batch but its own positive):

    imp_j = neg_j ** beta                                  (importance weights, HCL eq. 5)
    R     = sum_j imp_j neg_j / mean_j imp_j
    Ng    = (R - tau_plus N pos) / (1 - tau_plus)           (debiasing, DCL eq. 6)
    Ng    = max(Ng, N exp(-1 / t))                          (the official clamp)
    loss  = -log(pos / (pos + Ng))

``beta = 0`` is the debiased loss (R = sum_j neg_j); ``tau_plus = 0`` and ``beta = 0`` is
NT-Xent (the clamp cannot bind: every ``neg_j >= exp(-1 / t)`` for unit vectors). The official
code exponentiates ``s / t`` (in fp16 ``exp(s / t)`` overflows for t < 0.09 and
``imp * neg = exp((1 + beta) s / t)`` sooner; in bf16 a sum of exponentials keeps 8 bits);
here everything stays in log space:
``log R = logsumexp((1 + beta) s / t) - logsumexp(beta s / t) + log N`` and
``log Ng = log R + log1p(-tau_plus N pos / R) - log1p(-tau_plus)`` (``-inf`` where the
bracket is <= 0, which the clamp then replaces). Half-precision inputs are upcast to float32.

Under DDP the embeddings of all ranks are gathered with gradients (as NT-Xent), so ``N`` is
``2 B_global - 2`` and the per-rank mean over ranks equals the single-process loss on the
global batch (tests/ddp/test_hard_negative_ddp.py). The official code is single-GPU.
"""

from __future__ import annotations

import math

import torch

from ltcl_lightning.losses.contrastive import Reduction, contrastive_logits, per_sample_mean


def _check(temperature: float, tau_plus: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not 0.0 <= tau_plus < 1.0:
        raise ValueError(f"tau_plus (the positive-class prior) must be in [0, 1), got {tau_plus}")


def hard_negative_nt_xent_loss(
    z1: torch.Tensor,
    z2: torch.Tensor,
    temperature: float = 0.5,
    tau_plus: float = 0.1,
    beta: float = 1.0,
    reduction: Reduction = "mean",
    gather: bool = True,
) -> torch.Tensor:
    """HCL's hard-negative, debiased NT-Xent of two views ``z1``, ``z2`` (B, d), unit rows.

    ``beta``: concentration of the importance weights on hard negatives (0 = uniform: the
    debiased loss). ``tau_plus``: class prior of the positives among the negatives (0 = no
    debiasing). ``reduction='none'``: (B,) mean of each sample's two anchor directions (as
    :func:`~ltcl_lightning.losses.contrastive.nt_xent_loss`). Defaults: the official CIFAR/STL
    values (t 0.5, tau_plus 0.1, beta 1).
    """
    _check(temperature, tau_plus)
    if z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    c = contrastive_logits([z1, z2], None, temperature, gather)
    logits = c.logits.float() if c.logits.dtype in (torch.float16, torch.bfloat16) else c.logits
    n_neg = logits.shape[1] - 2  # 2 B_global - 2: every item but the anchor and its positive
    if n_neg < 1:
        raise ValueError("the hard-negative NT-Xent needs at least 2 samples in the (global) batch")
    negative = ~(c.pos_mask | c.self_mask)
    log_pos = logits.masked_fill(~c.pos_mask, 0.0).sum(1)  # s+ / t (one positive per anchor)

    def lse(scale: float) -> torch.Tensor:
        return torch.logsumexp((scale * logits).masked_fill(~negative, float("-inf")), dim=1)

    log_r = lse(1.0) if beta == 0 else lse(1.0 + beta) - lse(beta) + math.log(n_neg)
    floor = math.log(n_neg) - 1.0 / temperature
    if tau_plus > 0:
        x = tau_plus * n_neg * torch.exp(log_pos - log_r)  # tau_plus N pos / R
        ok = x < 1
        raw = log_r + torch.log1p(-torch.where(ok, x, torch.zeros_like(x))) - math.log1p(-tau_plus)
        log_ng = torch.where(ok & (raw > floor), raw, torch.full_like(raw, floor))
    else:
        log_ng = torch.where(log_r > floor, log_r, torch.full_like(log_r, floor))
    loss_per_anchor = torch.logaddexp(log_pos, log_ng) - log_pos
    return per_sample_mean(loss_per_anchor, c.num_views, reduction)


def debiased_nt_xent_loss(
    z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5, tau_plus: float = 0.1, reduction: Reduction = "mean", gather: bool = True
) -> torch.Tensor:
    """DCL's debiased NT-Xent (Chuang et al. 2020): the hard-negative loss with ``beta = 0``."""
    return hard_negative_nt_xent_loss(z1, z2, temperature, tau_plus, 0.0, reduction, gather)
