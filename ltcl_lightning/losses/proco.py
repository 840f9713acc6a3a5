"""ProCo's closed-form expected contrastive loss (Du et al., TPAMI 2024; spec proco.md (b)).

For a feature z (unit norm, dimension p) and class j with vMF(mu_j, kappa_j), nu = p/2 - 1:

    ell_j(z) = log C_p(kappa_j) - log C_p(kappa~_j),   kappa~_j = || kappa_j mu_j + z / tau ||
             = g(kappa~_j^2) - g(kappa_j^2),          g(s) = log(I_nu(sqrt s) / sqrt(s)^nu),

the log of E_{x ~ vMF(mu_j, kappa_j)} exp(z.x / tau). The loss of one view is the logit-adjusted
cross-entropy over the C logits. Only z receives gradient:
d ell_j / dz = A_p(kappa~_j) (kappa_j mu_j + z / tau) / (tau kappa~_j).

kappa~^2 = kappa^2 ||mu||^2 + 2 kappa (z . mu) / tau + ||z||^2 / tau^2 comes from one (B, p) x
(p, C) float64 matmul, clamped at 0 against cancellation and never square rooted (g is analytic
in kappa~^2). Differences from the official code (same values up to float rounding):
``docs/methods/proco.md``.
"""

from __future__ import annotations

import torch

from ltcl_lightning.losses.bessel import log_iv_scaled
from ltcl_lightning.losses.classification import logit_adjusted_cross_entropy


def vmf_log_normalizer_term(kappa: torch.Tensor, dim: int) -> torch.Tensor:
    """log I_nu(kappa) - nu log kappa (float64, no gradient): the official ``logc``,
    equal to -log C_p(kappa) - (p/2) log(2 pi)."""
    kappa = kappa.detach().to(torch.float64)
    with torch.no_grad():
        return log_iv_scaled(dim / 2 - 1, kappa * kappa)


def proco_logits(z: torch.Tensor, kappa: torch.Tensor, mu: torch.Tensor, temperature: float) -> torch.Tensor:
    """(B, C) float64 logits ell_j(z) of the features ``z`` (B, p) against the classes' vMF
    distributions ``mu`` (C, p, unit rows) and ``kappa`` (C,). Differentiable in ``z`` only."""
    if z.ndim != 2 or mu.ndim != 2 or z.shape[1] != mu.shape[1]:
        raise ValueError(f"z must be (B, p) and mu (C, p) with the same p; got {tuple(z.shape)} and {tuple(mu.shape)}")
    if kappa.shape != mu.shape[:1]:
        raise ValueError(f"kappa must have shape ({mu.shape[0]},), got {tuple(kappa.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    p = z.shape[1]
    if p < 2:
        raise ValueError(f"the vMF feature dimension must be >= 2, got p={p}")
    z64 = z.to(torch.float64)
    kappa64 = kappa.detach().to(torch.float64)
    mu64 = mu.detach().to(torch.float64)
    inv_t = 1.0 / temperature
    dot = z64 @ mu64.T  # (B, C)
    # ||mu||^2 kept (not assumed 1): float32 mean directions are unit only to ~1e-7, which
    # at kappa ~ 1e5 moves kappa~ by ~1e-2; this way the logits are those of the given mu
    base = (kappa64 * kappa64 * (mu64 * mu64).sum(1)).unsqueeze(0) + (z64 * z64).sum(1, keepdim=True) * (inv_t * inv_t)
    kt2 = torch.addcmul(base, dot, (2.0 * inv_t) * kappa64.unsqueeze(0))
    logc = vmf_log_normalizer_term(kappa64, p)
    return log_iv_scaled(p / 2 - 1, kt2) - logc.unsqueeze(0)


def proco_loss(
    z: torch.Tensor,
    target: torch.Tensor,
    kappa: torch.Tensor,
    mu: torch.Tensor,
    temperature: float,
    class_prior: torch.Tensor | None = None,
    logit_adjust_tau: float = 1.0,
) -> torch.Tensor:
    """Mean over the batch of CE(ell(z) + tau_LA log(pi), y) (float64 scalar)."""
    return logit_adjusted_cross_entropy(proco_logits(z, kappa, mu, temperature), target, class_prior, logit_adjust_tau)
