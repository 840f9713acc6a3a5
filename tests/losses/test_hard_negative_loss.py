"""Hard-negative / debiased NT-Xent against an independent float64 loop that re-states the
official formulas (joshr17/HCL image/main.py ``criterion``, chingyaoc/DCL main.py), the two
limits (beta = 0: debiased; tau_plus = beta = 0: our NT-Xent), the clamp, gradcheck and
half-precision inputs at a temperature where the official exp() overflows."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ltcl_lightning.losses.contrastive import nt_xent_loss
from ltcl_lightning.losses.hard_negative import debiased_nt_xent_loss, hard_negative_nt_xent_loss


def official_loop(z1, z2, t, tau_plus, beta, estimator="hard"):
    """Per-anchor loop, float64, in the official order: exp scores, imp = neg**beta,
    reweight_neg = sum(imp neg) / mean(imp), Ng = (-tau_plus N pos + reweight_neg) / (1 - tau_plus),
    clamp at N e^{-1/t}, loss = -log(pos / (pos + Ng)), mean over the 2B anchors.
    ``estimator='dcl'``: DCL's main.py (no importance weights; clamp only when debiased)."""
    out = torch.cat([z1, z2]).double()
    b = z1.shape[0]
    n = 2 * b - 2
    losses = []
    for i in range(2 * b):
        p = (i + b) % (2 * b)
        pos = math.exp(float(out[i] @ out[p]) / t)
        neg = [math.exp(float(out[i] @ out[j]) / t) for j in range(2 * b) if j not in (i, p)]
        if estimator == "hard":
            imp = [math.exp(beta * math.log(v)) for v in neg]  # (beta * neg.log()).exp()
            reweight = sum(w * v for w, v in zip(imp, neg)) / (sum(imp) / len(imp))
            ng = max((-tau_plus * n * pos + reweight) / (1 - tau_plus), n * math.e ** (-1 / t))
        else:
            ng = sum(neg)
            if tau_plus > 0:
                ng = max((-tau_plus * n * pos + ng) / (1 - tau_plus), n * math.e ** (-1 / t))
        losses.append(-math.log(pos / (pos + ng)))
    return sum(losses) / len(losses), losses


def views(b=6, d=5, seed=0, dtype=torch.float64, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=torch.float64)
    z1 = F.normalize(x + spread * 0.3 * torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    z2 = F.normalize(x + spread * 0.3 * torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    return z1.to(dtype), z2.to(dtype)


@pytest.mark.parametrize("t,tau_plus,beta", [(0.5, 0.1, 1.0), (0.2, 0.05, 0.5), (0.5, 0.0, 2.0), (0.3, 0.1, 0.0)])
def test_matches_official_formula_loop(t, tau_plus, beta):
    z1, z2 = views()
    ref, per_anchor = official_loop(z1, z2, t, tau_plus, beta)
    got = hard_negative_nt_xent_loss(z1, z2, t, tau_plus, beta, gather=False)
    assert got.item() == pytest.approx(ref, rel=1e-12)
    per_sample = hard_negative_nt_xent_loss(z1, z2, t, tau_plus, beta, reduction="none", gather=False)
    b = z1.shape[0]
    expected = [(per_anchor[i] + per_anchor[i + b]) / 2 for i in range(b)]
    torch.testing.assert_close(per_sample, torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=0)


def test_clamp_binds_as_official():
    # large prior and near-identical positives: tau_plus N pos > R, the official clamp applies
    z1, z2 = views(spread=0.05)
    t, tau_plus = 0.5, 0.5
    ref, per_anchor = official_loop(z1, z2, t, tau_plus, 1.0)
    n = 2 * z1.shape[0] - 2
    floor_loss = [
        -math.log(p / (p + n * math.e ** (-1 / t)))
        for p in [math.exp(float(a @ b) / t) for a, b in zip(torch.cat([z1, z2]), torch.cat([z2, z1]))]
    ]
    assert any(abs(x - y) < 1e-12 for x, y in zip(per_anchor, floor_loss)), "the test needs the clamp to bind"
    got = hard_negative_nt_xent_loss(z1, z2, t, tau_plus, 1.0, gather=False)
    assert got.item() == pytest.approx(ref, rel=1e-12)
    assert debiased_nt_xent_loss(z1, z2, t, tau_plus, gather=False).item() == pytest.approx(
        official_loop(z1, z2, t, tau_plus, 0.0, "dcl")[0], rel=1e-12
    )


def test_beta_zero_is_official_debiased():
    z1, z2 = views(seed=1)
    for tau_plus in (0.0, 0.1, 0.3):
        ref = official_loop(z1, z2, 0.5, tau_plus, 0.0, "dcl")[0]
        assert debiased_nt_xent_loss(z1, z2, 0.5, tau_plus, gather=False).item() == pytest.approx(ref, rel=1e-12)
        assert hard_negative_nt_xent_loss(z1, z2, 0.5, tau_plus, 0.0, gather=False).item() == pytest.approx(ref, rel=1e-12)


def test_no_prior_no_beta_is_nt_xent():
    z1, z2 = views(b=7, seed=2)
    for t in (0.1, 0.2, 0.5):
        ours = hard_negative_nt_xent_loss(z1, z2, t, 0.0, 0.0, reduction="none", gather=False)
        torch.testing.assert_close(ours, nt_xent_loss(z1, z2, t, reduction="none", gather=False), rtol=0, atol=1e-12)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    hard_negative_nt_xent_loss(a1, a2, 0.2, 0.0, 0.0, gather=False).backward()
    b1, b2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    nt_xent_loss(b1, b2, 0.2, gather=False).backward()
    torch.testing.assert_close(a1.grad, b1.grad, rtol=0, atol=1e-12)
    torch.testing.assert_close(a2.grad, b2.grad, rtol=0, atol=1e-12)


def test_hard_negatives_weigh_more_with_beta():
    # with beta > 0 the loss grows: the negative term becomes a weighted mean dominated by hard ones
    z1, z2 = views(seed=3)
    vals = [hard_negative_nt_xent_loss(z1, z2, 0.5, 0.0, b, gather=False).item() for b in (0.0, 0.5, 1.0, 2.0)]
    assert vals == sorted(vals) and vals[-1] > vals[0] + 1e-3


def test_gradcheck():
    z1, z2 = views(b=4, d=3, seed=4)
    a1, a2 = z1.clone().requires_grad_(), z2.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x, y: hard_negative_nt_xent_loss(x, y, 0.5, 0.1, 1.0, gather=False), (a1, a2))


def test_half_precision_stays_finite_where_official_overflows():
    z1, z2 = views(b=16, d=8, seed=5, spread=0.2)
    t = 0.05  # exp(1 / 0.05) = 4.9e8 > fp16 max
    assert not torch.isfinite(torch.exp((z1.half() @ z2.half().T) / t)).all()
    ref = hard_negative_nt_xent_loss(z1, z2, t, 0.1, 1.0, gather=False)
    half = hard_negative_nt_xent_loss(z1.half(), z2.half(), t, 0.1, 1.0, gather=False)
    assert torch.isfinite(half) and half.item() == pytest.approx(ref.item(), rel=5e-2)


def test_bad_arguments():
    z1, z2 = views()
    with pytest.raises(ValueError, match="tau_plus"):
        hard_negative_nt_xent_loss(z1, z2, 0.5, 1.0)
    with pytest.raises(ValueError, match="temperature"):
        debiased_nt_xent_loss(z1, z2, 0.0)
