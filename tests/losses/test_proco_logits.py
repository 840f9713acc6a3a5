"""ProCo logits / loss against an independent float64 computation with scipy's Bessel functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import special

from ltcl_lightning.losses.proco import proco_logits, proco_loss, vmf_log_normalizer_term


def _unit(rng, n, p):
    x = rng.standard_normal((n, p))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _reference_logits(z, kappa, mu, tau):
    """The official formulation in numpy float64: materialise kappa mu + z / tau (B, C, p),
    take its norm, and log C_p via scipy.special.ive."""
    p = z.shape[1]
    nu = p / 2 - 1

    def log_i_minus(x):  # log I_nu(x) - nu log x
        return np.log(special.ive(nu, x)) + x - nu * np.log(x)

    kt = np.linalg.norm(kappa[None, :, None] * mu[None] + z[:, None, :] / tau, axis=2)
    return log_i_minus(kt) - log_i_minus(kappa)[None, :]


def _case(p, c, b, tau, seed, kappa_range):
    rng = np.random.default_rng(seed)
    z = _unit(rng, b, p)
    mu = _unit(rng, c, p)
    kappa = np.exp(rng.uniform(np.log(kappa_range[0]), np.log(kappa_range[1]), c))
    y = rng.integers(0, c, b)
    prior = rng.uniform(0.01, 1, c)
    prior /= prior.sum()
    return z, mu, kappa, y, prior


@pytest.mark.parametrize("p,tau,kappa_range", [(128, 0.1, (5.0, 2e4)), (1024, 0.07, (2e3, 1e5)), (16, 0.2, (0.5, 300.0))])
def test_logits_and_loss_match_scipy(p, tau, kappa_range):
    z, mu, kappa, y, prior = _case(p, 7, 5, tau, 0, kappa_range)
    ref = _reference_logits(z, kappa, mu, tau)
    got = proco_logits(torch.from_numpy(z), torch.from_numpy(kappa), torch.from_numpy(mu), tau)
    assert got.dtype == torch.float64 and got.shape == (5, 7)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-10, atol=1e-9)
    # loss: CE(ell + log pi, y), mean over the batch
    adj = ref + np.log(prior)[None]
    lse = np.log(np.exp(adj - adj.max(1, keepdims=True)).sum(1)) + adj.max(1)
    ref_loss = float(np.mean(lse - adj[np.arange(5), y]))
    loss = proco_loss(torch.from_numpy(z), torch.from_numpy(y), torch.from_numpy(kappa), torch.from_numpy(mu), tau, torch.from_numpy(prior))
    assert float(loss) == pytest.approx(ref_loss, rel=1e-10, abs=1e-10)


def test_float32_inputs_match_the_float64_reference():
    # the model feeds float32 features and state; logits are float64 and stay close to exact
    z, mu, kappa, y, prior = _case(128, 10, 8, 0.1, 1, (20.0, 1e5))
    z32, mu32, k32 = (torch.from_numpy(a).float() for a in (z, mu, kappa))
    ref = _reference_logits(z32.double().numpy(), k32.double().numpy(), mu32.double().numpy(), 0.1)
    got = proco_logits(z32, k32, mu32, 0.1)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-8, rtol=0)


def test_logit_is_log_vmf_moment_generating_function():
    # ell_j(z) = log E_{x ~ vMF(mu_j, kappa_j)} exp(z.x / tau); in p = 3 the vMF is sampled
    # exactly (Wood 1994): w = 1 + log(u + (1 - u) e^{-2 kappa}) / kappa
    rng = np.random.default_rng(3)
    tau, kappa = 0.5, 4.0  # p = 3
    mu = np.array([0.0, 0.0, 1.0])
    z = _unit(rng, 1, 3)[0]
    u = rng.uniform(size=400_000)
    w = 1 + np.log(u + (1 - u) * np.exp(-2 * kappa)) / kappa
    phi = rng.uniform(0, 2 * np.pi, size=u.shape)
    s = np.sqrt(1 - w * w)
    x = np.stack([s * np.cos(phi), s * np.sin(phi), w], 1)
    mc = np.log(np.mean(np.exp(x @ z / tau)))
    ell = proco_logits(torch.from_numpy(z[None]), torch.tensor([kappa], dtype=torch.float64), torch.from_numpy(mu[None]), tau)
    assert float(ell) == pytest.approx(mc, abs=5e-3)


def test_gradient_matches_finite_differences_and_spec_formula():
    z, mu, kappa, y, prior = _case(12, 4, 3, 0.1, 2, (2.0, 500.0))
    zt = torch.from_numpy(z).requires_grad_()
    kt, mt, pt, yt = torch.from_numpy(kappa), torch.from_numpy(mu), torch.from_numpy(prior), torch.from_numpy(y)
    assert torch.autograd.gradcheck(lambda v: proco_loss(v, yt, kt, mt, 0.1, pt), (zt,), eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(lambda v: proco_logits(v, kt, mt, 0.1), (zt,), eps=1e-6, atol=1e-7)
    # d ell_j / dz = A_p(kt_j) (kappa_j mu_j + z / tau) / (tau kt_j)   (spec proco.md (b))
    tau, nu = 0.1, 12 / 2 - 1
    v = kappa[None, :, None] * mu[None] + z[:, None, :] / tau
    ktn = np.linalg.norm(v, axis=2)
    a = special.ive(nu + 1, ktn) / special.ive(nu, ktn)
    expected = (a / (tau * ktn))[:, :, None] * v  # (B, C, p)
    for j in range(4):
        (g,) = torch.autograd.grad(proco_logits(zt, kt, mt, tau)[:, j].sum(), zt)
        np.testing.assert_allclose(g.numpy(), expected[:, j], rtol=1e-10)


def test_cancellation_is_guarded():
    # kappa = 1/tau and z = -mu: kappa~ = 0 exactly; the logit is g(0) - g(kappa^2), finite, with
    # a finite gradient (a norm taken of the (B, C, p) tensor would give NaN there)
    p, tau = 128, 0.1
    rng = np.random.default_rng(4)
    mu = torch.from_numpy(_unit(rng, 1, p))
    kappa = torch.tensor([1 / tau], dtype=torch.float64)
    z = (-mu).clone().requires_grad_()
    ell = proco_logits(z, kappa, mu, tau)
    nu = p / 2 - 1
    from math import lgamma, log

    g0 = -(nu * log(2) + lgamma(nu + 1))
    expected = g0 - float(vmf_log_normalizer_term(kappa, p))
    assert float(ell.detach()) == pytest.approx(expected, rel=1e-9)
    (g,) = torch.autograd.grad(ell.sum(), z)
    assert torch.isfinite(g).all()


def test_only_features_receive_gradient_and_inputs_are_checked():
    z, mu, kappa, y, prior = _case(8, 3, 2, 0.1, 5, (1.0, 50.0))
    kt = torch.from_numpy(kappa).requires_grad_()
    mt = torch.from_numpy(mu).requires_grad_()
    zt = torch.from_numpy(z).requires_grad_()
    proco_logits(zt, kt, mt, 0.1).sum().backward()
    assert zt.grad is not None and kt.grad is None and mt.grad is None
    with pytest.raises(ValueError, match="same p"):
        proco_logits(zt, kt, mt[:, :4], 0.1)
    with pytest.raises(ValueError, match="temperature"):
        proco_logits(zt, kt, mt, 0.0)
