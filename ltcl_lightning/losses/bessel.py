"""Modified Bessel functions of the first kind for the von Mises-Fisher distribution, in torch.

vMF on S^{p-1}: C_p(kappa) = kappa^nu / ((2 pi)^{p/2} I_nu(kappa)), nu = p/2 - 1. Everything the
ProCo loss needs is the function

    g_nu(s) = log( I_nu(x) / x^nu ),   s = x^2,

(``log_iv_scaled``) which is analytic in s (finite at s = 0: -log(2^nu Gamma(nu + 1))), and its
derivative dg/ds = A_nu(x) / (2x) with A_nu(x) = I_{nu+1}(x) / I_nu(x) (the vMF mean resultant
length A_p(kappa)). Working in s = x^2 means the ProCo logits never take the square root of a
squared norm that cancellation may have driven to 0.

Method: the uniform asymptotic (Debye) expansion (DLMF 10.41.3 with the u_k of 10.41.10, up to
``DEBYE_TERMS`` terms, coefficients generated exactly from the recurrence DLMF 10.41.9),

    log I_nu(x) = nu * eta - log(2 pi nu)/2 - log(1 + z^2)/4 + log(1 + sum_k u_k(t) / nu^k),
    z = x / nu, t = 1/sqrt(1 + z^2),

rewritten with r = sqrt(nu^2 + s) so that no log x appears:
g_nu(s) = r - nu log(nu + r) - log(2 pi r)/2 + log(1 + sum_k u_k(nu/r) / nu^k).
It is accurate to ~1e-14 (relative to |log I|) for nu >= ``NU_MIN`` at every x >= 0. For
smaller orders (feature dimension p < 2 NU_MIN + 2) it is evaluated at order nu + m >= NU_MIN
and brought down by m steps of the backward recurrence I_{n-1} = (2n/x) I_n + I_{n+1}, which
is stable downwards (a short elementwise loop, m < NU_MIN, no host synchronisation). Order
nu < 0 (p < 2) raises.

All functions run in float64 on the input's device, need no scipy, never synchronise with the
host, and are differentiable in x (custom autograd with the exact derivative, first order).
Differences from the official ProCo code: it uses a Miller backward recurrence over 2 nu orders
(a Python loop with a host sync per order), inaccurate for x >> nu (spec proco.md (b)).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch

#: most Debye correction terms u_1 .. u_K used (fewer where nu is large enough, see _debye_terms)
DEBYE_TERMS = 8
#: smallest order evaluated directly by the Debye expansion
NU_MIN = 30.0
#: target relative size of the first omitted Debye term
_TRUNCATION = 1e-15


def _debye_polynomials(k_max: int) -> list[list[Fraction]]:
    """Coefficients (by power of t) of u_0 .. u_k_max, exact, from DLMF 10.41.9:
    u_{k+1}(t) = t^2 (1 - t^2) u_k'(t) / 2 + (1/8) int_0^t (1 - 5 s^2) u_k(s) ds."""
    polys = [[Fraction(1)]]
    for _ in range(k_max):
        u = polys[-1]
        nxt = [Fraction(0)] * (len(u) + 3)
        for j, c in enumerate(u):
            if j >= 1:  # t^2 (1 - t^2) / 2 * j c t^{j-1}
                nxt[j + 1] += Fraction(j) * c / 2
                nxt[j + 3] -= Fraction(j) * c / 2
            # (1/8) int_0^t (1 - 5 s^2) c s^j ds
            nxt[j + 1] += c / (8 * (j + 1))
            nxt[j + 3] -= 5 * c / (8 * (j + 3))
        while nxt and nxt[-1] == 0:
            nxt.pop()
        polys.append(nxt)
    return polys


_U = _debye_polynomials(DEBYE_TERMS + 1)


def _sup_abs(poly: list[Fraction]) -> float:
    """max over t in [0, 1] of |u_k(t)| on a fine grid (for choosing the number of terms)."""
    t = torch.linspace(0.0, 1.0, 4097, dtype=torch.float64)
    acc = torch.zeros_like(t)
    for c in reversed(poly):
        acc = acc * t + float(c)
    return float(acc.abs().max())


_U_SUP = [_sup_abs(poly) for poly in _U]


@functools.lru_cache(maxsize=64)
def _debye_coefficients(nu: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Coefficients by power of t of S(t) = sum_{k=1..K} u_k(t) / nu^k and of S'(t), folded
    into one polynomial each (exact rational arithmetic, then rounded) so that one Horner pass
    evaluates the whole sum. K is the smallest number of terms whose first omitted term is
    below ``_TRUNCATION`` (at most ``DEBYE_TERMS``)."""
    k_max = DEBYE_TERMS
    for k in range(1, DEBYE_TERMS + 1):
        if _U_SUP[k + 1] / nu ** (k + 1) < _TRUNCATION:
            k_max = k
            break
    out = [Fraction(0)] * max(len(p) for p in _U[: k_max + 1])
    nu_q = Fraction(nu)
    for k in range(1, k_max + 1):
        for j, c in enumerate(_U[k]):
            out[j] += c / nu_q**k
    deriv = [j * c for j, c in enumerate(out)][1:]
    return tuple(float(c) for c in out), tuple(float(c) for c in deriv)


def _horner(coeffs: tuple[float, ...], t: torch.Tensor) -> torch.Tensor:
    # Python-float coefficients: no tensor is built from host data per call (on a GPU that is a
    # host-to-device copy every step), and out of place, so that torch.compile can trace it
    acc = torch.full_like(t, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        acc = acc * t + c
    return acc


def _debye_g_and_e(nu: float, s: torch.Tensor, need_e: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Debye expansion of g_nu(s) and of e_nu(s) = A_nu(x) / x = 2 dg/ds.

    With r = sqrt(nu^2 + s), t = nu / r and S the Debye sum:
      g = r - nu log(nu + r) - log(2 pi r)/2 + log(1 + S(t))
      e = 1/(nu + r) - 1/(2 r^2) - nu S'(t) / ((1 + S(t)) r^3)
    (the derivative of the truncated expansion; its terms decrease in size, so no
    cancellation at small x, and nothing of the size of g ~ x is subtracted at large x)."""
    coeffs, dcoeffs = _debye_coefficients(nu)
    r = torch.sqrt(s + nu * nu)
    t = nu / r
    u = _horner(coeffs, t)
    # out of place throughout: e is saved for backward, and a tensor saved for backward that
    # was built in place breaks torch.compile (InternalTorchDynamoError)
    g = r - nu * torch.log(r + nu) - 0.5 * torch.log(r * (2 * math.pi)) + torch.log1p(u)
    if not need_e:
        return g, None
    du = _horner(dcoeffs, t)
    inv_r = r.reciprocal()
    # e = 1/(nu + r) - (1/r^2) * (1/2 + nu S' / ((1 + S) r))
    corr = 0.5 + nu * (du / (u + 1.0)) * inv_r
    e = (r + nu).reciprocal() - corr * inv_r * inv_r
    return g, e


def _g_and_e(nu: float, s: torch.Tensor, need_e: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    if nu >= NU_MIN:
        return _debye_g_and_e(nu, s, need_e)
    m = int(math.ceil(NU_MIN - nu))
    g, e = _debye_g_and_e(nu + m, s)
    assert e is not None
    # backward recurrence I_{n-1} = (2n/x) I_n + I_{n+1}, stable downwards, written in
    # s = x^2 and e_n = A_n(x)/x:
    #   A_{n-1} = x / (2n + x A_n)  ->  e_{n-1} = 1 / (2n + s e_n)
    #   log I_{n-1} = log I_n - log A_{n-1}  ->  g_{n-1} = g_n + log(2n + s e_n)
    for j in range(m):
        n = nu + m - j
        q = 2 * n + s * e
        g = g + torch.log(q)
        e = 1.0 / q
    return g, e


def _check_order(nu: float) -> float:
    nu = float(nu)
    if not nu >= 0 or math.isinf(nu):
        raise ValueError(
            f"Bessel order nu must be a finite number >= 0 (nu = p/2 - 1 for features of dimension p >= 2), "
            f"got nu={nu}. A vMF distribution needs p >= 2."
        )
    return nu


class _LogIvScaled(torch.autograd.Function):
    @staticmethod
    def forward(ctx, s: torch.Tensor, nu: float) -> torch.Tensor:  # type: ignore[override]
        g, e = _g_and_e(nu, s, need_e=ctx.needs_input_grad[0])
        ctx.save_for_backward(e if e is not None else s.new_empty(0))
        return g

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (e,) = ctx.saved_tensors
        return grad * (0.5 * e), None  # dg/ds = A/(2x) = e/2


def log_iv_scaled(nu: float, s: torch.Tensor) -> torch.Tensor:
    """g_nu(s) = log(I_nu(x) / x^nu) with s = x^2 >= 0, float64, differentiable in s.

    ``-g_nu(kappa^2) - (p/2) log(2 pi)`` is log C_p(kappa), the vMF log-normaliser. Negative s
    (from rounding in a squared norm) is clamped to 0; NaN propagates."""
    nu = _check_order(nu)
    s = s.to(torch.float64).clamp_min(0.0)
    return _LogIvScaled.apply(s, nu)


def bessel_iv_ratio_scaled(nu: float, s: torch.Tensor) -> torch.Tensor:
    """A_nu(x) / x = I_{nu+1}(x) / (x I_nu(x)) with s = x^2 (no gradient), finite at x = 0: 1/(2 nu + 2)."""
    nu = _check_order(nu)
    with torch.no_grad():
        return _g_and_e(nu, s.detach().to(torch.float64).clamp_min(0.0))[1]  # type: ignore[return-value]  # need_e


def log_bessel_iv(nu: float, x: torch.Tensor) -> torch.Tensor:
    """log I_nu(x) for x >= 0 (float64; -inf at x = 0 for nu > 0), differentiable in x."""
    x = x.to(torch.float64)
    return log_iv_scaled(nu, x * x) + float(nu) * torch.log(x)


def bessel_iv_ratio(nu: float, x: torch.Tensor) -> torch.Tensor:
    """A_nu(x) = I_{nu+1}(x) / I_nu(x) for x >= 0 (float64; the vMF mean resultant length
    A_p(kappa) with nu = p/2 - 1), differentiable in x."""
    nu = _check_order(nu)
    x = x.to(torch.float64)
    if not x.requires_grad:
        return x * bessel_iv_ratio_scaled(nu, x * x)
    return _BesselRatio.apply(x, nu)


class _BesselRatio(torch.autograd.Function):
    """A_nu(x) with dA/dx = 1 - A^2 - (2 nu + 1) A / x (from the Bessel recurrences)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, nu: float) -> torch.Tensor:  # type: ignore[override]
        e = bessel_iv_ratio_scaled(nu, x * x)
        ctx.save_for_backward(x, e)
        ctx.nu = nu
        return x * e

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        x, e = ctx.saved_tensors
        a = x * e
        return grad * (1.0 - a * a - (2 * ctx.nu + 1) * e), None
