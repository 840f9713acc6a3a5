"""log I_nu and I_{nu+1}/I_nu against 40-digit values (spec proco.md (b)) and scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import special

from ltcl_lightning.losses.bessel import NU_MIN, bessel_iv_ratio, bessel_iv_ratio_scaled, log_bessel_iv, log_iv_scaled

# (nu, x, log I_nu(x), I_{nu+1}(x)/I_nu(x)) from mpmath at 40 digits (spec proco.md (b))
TABLE = [
    (63, 1.0, -244.67368264192412, 0.0078120305543653793),
    (63, 10.0, -99.225267506635253, 0.077660976382128364),
    (63, 100.0, 77.440120645354006, 0.54832914971433527),
    (63, 128 * 90 / 19, 598.92055579140576, 0.90066135023858926),
    (63, 1000.0, 993.64247312598229, 0.93848438951094097),
    (63, 1e4, 9994.2774445144197, 0.99366984553771064),
    (511, 10.0, -1857.3505479459571, 0.0097646956694267087),
    (511, 100.0, -675.91852719913484, 0.096743994869946756),
    (511, 1000.0, 867.64996930856957, 0.61159996862410609),
    (511, 1024 * 90 / 19, 4818.4692642376096, 0.90008258761157814),
    (511, 1e5, 99992.018991297291, 0.99489805608282998),
]


@pytest.mark.parametrize("nu,x,log_i,ratio", TABLE)
def test_against_40_digit_table(nu, x, log_i, ratio):
    xt = torch.tensor([x], dtype=torch.float64)
    assert abs(float(log_bessel_iv(nu, xt)) - log_i) <= 2e-11 * max(1.0, abs(log_i) / 1e3)
    assert float(bessel_iv_ratio(nu, xt)) == pytest.approx(ratio, rel=1e-12)


def _scipy_log_iv(nu, x):
    with np.errstate(all="ignore"):
        ive = special.ive(nu, x)
    ok = (ive > 1e-290) & np.isfinite(ive)
    return np.where(ok, np.log(np.where(ok, ive, 1.0)) + x, np.nan), ok


# orders below NU_MIN go through the backward-recurrence path, the others straight through Debye
@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0, 4.5, 15.0, NU_MIN - 0.5, NU_MIN, 63.0, 511.0])
def test_against_scipy(nu):
    x = np.logspace(-3, 5, 97)
    ref, ok = _scipy_log_iv(nu, x)
    assert ok.sum() > 30  # enough points where scipy does not underflow
    got = log_bessel_iv(nu, torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-12, atol=1e-11)
    with np.errstate(all="ignore"):
        rref = special.ive(nu + 1, x) / special.ive(nu, x)
    okr = ok & (special.ive(nu + 1, x) > 1e-290)
    np.testing.assert_allclose(bessel_iv_ratio(nu, torch.from_numpy(x)).numpy()[okr], rref[okr], rtol=1e-11)


def test_scaled_function_is_finite_at_zero():
    # g_nu(0) = -log(2^nu Gamma(nu + 1)); A_nu(x)/x -> 1 / (2 nu + 2)
    for nu in (0.0, 2.5, 63.0, 511.0):
        s = torch.zeros(1, dtype=torch.float64)
        expected = -(nu * math.log(2) + math.lgamma(nu + 1))
        assert float(log_iv_scaled(nu, s)) == pytest.approx(expected, rel=1e-13, abs=1e-12)
        assert float(bessel_iv_ratio_scaled(nu, s)) == pytest.approx(1 / (2 * nu + 2), rel=1e-13)
    # small negative s from rounding is clamped to 0, not NaN
    assert torch.isfinite(log_iv_scaled(63.0, torch.tensor([-1e-12], dtype=torch.float64))).all()


def test_gradients_match_finite_differences():
    for nu in (3.0, 63.0, 511.0):
        s = torch.tensor([1e-2, 3.0, 400.0, 4e4, 2.5e7, 1e10], dtype=torch.float64, requires_grad=True)
        (grad,) = torch.autograd.grad(log_iv_scaled(nu, s).sum(), s)
        h = torch.minimum((s.detach() * 1e-6).clamp_min(1e-5 * (nu + 1) ** 2), s.detach() / 2)  # above the rounding noise of g
        fd = (log_iv_scaled(nu, s.detach() + h) - log_iv_scaled(nu, s.detach() - h)) / (2 * h)
        np.testing.assert_allclose(grad.numpy(), fd.numpy(), rtol=1e-6)
        # and the documented identity dg/ds = A/(2x)
        x = s.detach().sqrt()
        np.testing.assert_allclose(grad.numpy(), (bessel_iv_ratio(nu, x) / (2 * x)).numpy(), rtol=1e-12)
    x = torch.tensor([0.5, 50.0, 700.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: log_bessel_iv(63.0, t), (x,))
    assert torch.autograd.gradcheck(lambda t: bessel_iv_ratio(63.0, t), (x,))
    assert torch.autograd.gradcheck(lambda t: bessel_iv_ratio(2.0, t), (x,))


def test_invalid_order_raises():
    with pytest.raises(ValueError, match="p >= 2"):
        log_iv_scaled(-0.5, torch.ones(1))
    with pytest.raises(ValueError, match="nu=nan"):
        log_iv_scaled(float("nan"), torch.ones(1))


def test_float32_input_is_computed_in_float64():
    out = log_iv_scaled(63.0, torch.tensor([100.0], dtype=torch.float32))
    assert out.dtype == torch.float64
