"""Batched image ops with independent parameters per sample, for augmentation on the device.

Every function takes a batch ``x`` of shape (B, C, H, W), float32 holding the **uint8 values**
0..255 of the images (what ``uint8_batch.float()`` gives), and per-sample parameter tensors of
shape (B,), and returns the same kind of batch. Each op rounds / truncates / clips exactly where
the PIL op of the per-sample worker path does (PIL works on uint8 images, torchvision's PIL
kernels call it), so that for the same parameters a batched op reproduces the per-sample op:
bit-exactly for the point, colour and nearest-neighbour affine ops, within one grey level for
the resampling of :func:`resized_crop` (PIL's fixed-point arithmetic against float32 here) and a
few levels for hue (see ``tests/data/test_batched.py`` for the stated tolerances).

Nothing here branches on tensor values in Python, indexes with boolean masks or calls
``.item()``: per-sample choices are ``torch.where`` selections, so a step never waits for the
device. Parameters are drawn by the callers with an explicit ``torch.Generator`` on the device.
"""

from __future__ import annotations

import math

import torch

_CONSTANTS: dict[tuple[str, str], torch.Tensor] = {}


def device_constant(name: str, device: torch.device, build) -> torch.Tensor:
    """A constant tensor built on the host once and copied to ``device`` once (a tensor built
    from host data on every call is a host-to-device copy on every step)."""
    key = (name, str(device))
    if key not in _CONSTANTS:
        _CONSTANTS[key] = build().to(device)
    return _CONSTANTS[key]


# ----- resampling (RandomResizedCrop / RandomCrop with padding) -----------------------------


def _bicubic(t: torch.Tensor) -> torch.Tensor:
    # PIL's bicubic filter (a = -0.5, support 2); torch's F.interpolate uses a = -0.75
    a = -0.5
    t = t.abs()
    near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
    far = ((t - 5.0) * t + 8.0) * t * a - 4.0 * a
    return torch.where(t < 1.0, near, torch.where(t < 2.0, far, torch.zeros_like(t)))


def _bilinear(t: torch.Tensor) -> torch.Tensor:
    return (1.0 - t.abs()).clamp_min(0.0)


def _nearest_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int) -> torch.Tensor:
    # PIL NEAREST resize: source pixel int(start + (o + 0.5) * scale)
    scale = length.double() / out_size
    o = torch.arange(out_size, device=start.device, dtype=torch.float64)
    src = (start.double()[:, None] + (o[None] + 0.5) * scale[:, None]).floor().long()
    return torch.nn.functional.one_hot(src.clamp(0, in_size - 1), in_size).float()


_FILTERS = {"bicubic": (_bicubic, 2.0), "bilinear": (_bilinear, 1.0)}


def resample_weights(start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int, interpolation: str) -> torch.Tensor:
    """(B, out_size, in_size) weights of PIL's resize of the window [start, start + length) of
    an axis of ``in_size`` pixels to ``out_size`` pixels (``ImagingResample``'s coefficients:
    the filter widened by the scale when shrinking (antialias), taps limited to the window, each
    row normalised to sum 1)."""
    if interpolation == "nearest":
        return _nearest_weights(start, length, in_size, out_size)
    if interpolation not in _FILTERS:
        raise ValueError(f"interpolation must be 'bicubic', 'bilinear' or 'nearest', got {interpolation!r}")
    kernel, support = _FILTERS[interpolation]
    dev = start.device
    # float32 (fast on every GPU): the taps differ from float64 ones by up to ~2e-5 and the
    # resampled values by up to ~4e-3 of a grey level (500-1000 px inputs; 7e-4 at 32 px), which
    # moves a value that close to a rounding boundary by one level: inside the stated tolerance
    length = length.float()[:, None, None]
    scale = length / out_size
    filterscale = scale.clamp_min(1.0)
    centre = (torch.arange(out_size, device=dev, dtype=torch.float32)[None, :, None] + 0.5) * scale
    pos = torch.arange(in_size, device=dev, dtype=torch.float32)[None, None, :] - start.float()[:, None, None]
    inside = (pos >= 0) & (pos < length)
    w = kernel((pos - centre + 0.5) / filterscale) * inside
    # taps beyond the filter's support contribute 0 through the kernel itself
    w = w * ((pos + 0.5 - centre).abs() < support * filterscale + 0.5)
    return w / w.sum(-1, keepdim=True)


def resized_crop(
    x: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    height: torch.Tensor,
    width: torch.Tensor,
    size: int | tuple[int, int],
    interpolation: str = "bilinear",
) -> torch.Tensor:
    """Crop box (top, left, height, width) of each image resized to ``size``, as PIL's
    ``img.crop(box).resize(size, filter)`` (torchvision's ``resized_crop`` on PIL images): a
    horizontal pass rounded to uint8, then a vertical pass rounded to uint8. The box may reach
    outside the image (zero padding, as ``RandomCrop(padding=...)``): pad first."""
    out_h, out_w = (size, size) if isinstance(size, int) else size
    _, _, h_in, w_in = x.shape
    wx = resample_weights(left, width, w_in, out_w, interpolation)  # (B, out_w, W)
    wy = resample_weights(top, height, h_in, out_h, interpolation)  # (B, out_h, H)
    tmp = torch.einsum("bchw,bow->bcho", x, wx).round_().clamp_(0.0, 255.0)
    return torch.einsum("bcho,bph->bcpo", tmp, wy).round_().clamp_(0.0, 255.0)


def random_resized_crop_params(
    generator: torch.Generator,
    n: int,
    height: int | torch.Tensor,
    width: int | torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    attempts: int = 10,
):
    """torchvision's ``RandomResizedCrop.get_params`` for ``n`` images at once: ``attempts``
    tries of (area ~ U(scale) * H * W, log-aspect ~ U(log ratio)); the first try that fits
    wins, else the centre crop of the clamped aspect ratio. ``height`` / ``width``: one size for
    all, or (n,) integer tensors on the generator's device (images of different sizes). Returns
    long tensors (top, left, height, width) of shape (n,)."""
    dev = generator.device
    # one size stays a Python number (no host data copied to the device); sizes per sample are
    # tensors on the generator's device (the host generator of decode='device')
    hgt, wid = (height, width) if isinstance(height, int) and isinstance(width, int) else (height.double(), width.double())  # type: ignore[union-attr]

    def col(v):
        return v[:, None] if torch.is_tensor(v) else v

    u = torch.rand(n, attempts, 4, generator=generator, device=dev, dtype=torch.float64)
    target = col(hgt * wid) * (scale[0] + (scale[1] - scale[0]) * u[..., 0])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u[..., 1])
    w = torch.sqrt(target * aspect).round().long()
    h = torch.sqrt(target / aspect).round().long()
    ok = (w > 0) & (w <= col(wid)) & (h > 0) & (h <= col(hgt))
    first = torch.argmax(ok.int(), dim=1, keepdim=True)  # index of the first True (0 if none)
    any_ok = ok.any(1)
    w_t, h_t = w.gather(1, first)[:, 0], h.gather(1, first)[:, 0]
    i_t = (u[..., 2].gather(1, first)[:, 0] * (hgt - h_t + 1)).floor().long()
    j_t = (u[..., 3].gather(1, first)[:, 0] * (wid - w_t + 1)).floor().long()
    fi, fj, fh, fw = _centre_crop(hgt, wid, ratio)
    return torch.where(any_ok, i_t, fi), torch.where(any_ok, j_t, fj), torch.where(any_ok, h_t, fh), torch.where(any_ok, w_t, fw)


def _centre_crop(height, width, ratio: tuple[float, float]):
    """torchvision's fallback box (top, left, height, width): the centre crop of the aspect ratio
    clamped to ``ratio``, rounded half to even (Python's round there); for Python numbers or
    per-sample tensors."""
    if not torch.is_tensor(height):
        in_ratio = width / height
        if in_ratio < min(ratio):
            fw, fh = width, int(round(width / min(ratio)))
        elif in_ratio > max(ratio):
            fh, fw = height, int(round(height * max(ratio)))
        else:
            fw, fh = width, height
        return (height - fh) // 2, (width - fw) // 2, fh, fw
    per_ratio = width / height
    tw = torch.where(per_ratio > max(ratio), (height * max(ratio)).round(), width).long()
    th = torch.where(per_ratio < min(ratio), (width / min(ratio)).round(), height).long()
    return torch.div(height.long() - th, 2, rounding_mode="floor"), torch.div(width.long() - tw, 2, rounding_mode="floor"), th, tw


def random_crop_params(generator: torch.Generator, n: int, height: int, width: int, size: int, padding: int):
    """``RandomCrop(size, padding)``: top / left in the padded image, uniform integers."""
    dev = generator.device
    u = torch.rand(n, 2, generator=generator, device=dev, dtype=torch.float64)
    top = (u[:, 0] * (height + 2 * padding - size + 1)).floor().long()
    left = (u[:, 1] * (width + 2 * padding - size + 1)).floor().long()
    return top, left


# ----- colour (PIL ImageEnhance / ImageOps semantics) -----------------------------------------


def where_b(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample selection: ``a[i]`` where ``mask[i]``, else ``b[i]``."""
    return torch.where(mask.view(-1, *([1] * (a.ndim - 1))), a, b)


def _col(v: torch.Tensor) -> torch.Tensor:
    return v.to(torch.float32).view(-1, 1, 1, 1)


def blend(degenerate: torch.Tensor, img: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``Image.blend(degenerate, img, factor)``: ``deg + f (img - deg)`` in float32, clipped
    to [0, 255] and truncated (what every ``ImageEnhance`` op does)."""
    # multiply, then add (no fused multiply-add: PIL's C rounds the product to float first)
    return ((img - degenerate) * _col(factor)).add_(degenerate).clamp_(0.0, 255.0).floor_()


def luma(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB -> L (ITU-R 601-2 in 16-bit fixed point): (B, 1, H, W)."""
    xi = x.to(torch.int32)
    lum = (xi[:, 0] * 19595 + xi[:, 1] * 38470 + xi[:, 2] * 7471 + 0x8000) >> 16
    return lum[:, None].to(x.dtype)


def grayscale(x: torch.Tensor) -> torch.Tensor:
    return luma(x).expand_as(x).contiguous()


def brightness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(torch.zeros_like(x), x, factor)


def contrast(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    mean = torch.floor(luma(x).mean((1, 2, 3), keepdim=True) + 0.5)  # int(mean of L + 0.5)
    return blend(mean.expand_as(x), x, factor)


def saturation(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return blend(grayscale(x), x, factor)


def smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageFilter.SMOOTH``: 3x3 kernel [1 1 1; 1 5 1; 1 1 1] / 13, rounded; the one-pixel
    border is copied unchanged."""
    c = x.shape[1]
    k = torch.ones(3, 3, dtype=x.dtype, device=x.device)
    k[1, 1] = 5.0
    out = x.clone()
    inner = torch.nn.functional.conv2d(x, (k / 13.0).expand(c, 1, 3, 3), groups=c)
    out[:, :, 1:-1, 1:-1] = torch.floor(inner + 0.5).clamp_(0.0, 255.0)
    return out


def sharpness(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageEnhance.Sharpness``: blend with :func:`smooth`."""
    return blend(smooth(x), x, factor)


def gaussian_blur(x: torch.Tensor, kernel_size: int, sigma: torch.Tensor) -> torch.Tensor:
    """torchvision's ``gaussian_blur`` on uint8 images (which it also applies to PIL images) with
    one ``sigma`` per sample: the kernel ``exp(-t^2 / 2 sigma^2)``, normalised, at
    ``t = -(k-1)/2 .. (k-1)/2``; reflect padding; rounded half to even.

    torchvision convolves with the 2-D outer product; here the two 1-D passes (k instead of k^2
    multiply-adds per pixel). The sums differ in float32 rounding only, which moves a value that
    lies within about 1e-4 of a half level by one level."""
    n, c, h, w = x.shape
    lim = (kernel_size - 1) / 2.0
    t = torch.linspace(-lim, lim, kernel_size, dtype=torch.float32, device=x.device)
    k1 = torch.softmax(-0.5 * (t[None] / sigma.to(torch.float32)[:, None]) ** 2, dim=1).repeat_interleave(c, 0)  # (n c, k)
    pad = kernel_size // 2
    y = torch.nn.functional.pad(x.reshape(1, n * c, h, w), (pad, pad, pad, pad), mode="reflect")
    y = torch.nn.functional.conv2d(y, k1[:, None, None, :], groups=n * c)  # along the width
    y = torch.nn.functional.conv2d(y, k1[:, None, :, None], groups=n * c)  # along the height
    return y.reshape(n, c, h, w).round_()


def _rgb_to_pil_hsv(x: torch.Tensor) -> torch.Tensor:
    # Pillow's rgb2hsv_row (Convert.c), in float32 as there, values truncated to uint8
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    maxc = torch.maximum(r, torch.maximum(g, b))
    minc = torch.minimum(r, torch.minimum(g, b))
    cr = maxc - minc
    flat = cr == 0
    crs = torch.where(flat, torch.ones_like(cr), cr)
    s = crs / torch.where(maxc == 0, torch.ones_like(maxc), maxc)
    rc, gc, bc = (maxc - r) / crs, (maxc - g) / crs, (maxc - b) / crs
    # r == maxc: float arithmetic; the other branches add a double literal first (C promotion)
    rd, gd, bd = rc.double(), gc.double(), bc.double()
    # and every assignment to the C float h rounds to float32
    h = torch.where(r == maxc, (bc - gc).double(), torch.where(g == maxc, 2.0 + rd - bd, 4.0 + gd - rd)).float()
    h = torch.fmod(h.double() / 6.0 + 1.0, 1.0).float().double()
    uh = torch.where(flat, 0.0, (h * 255.0).floor().clamp(0, 255)).float()
    us = torch.where(flat, 0.0, (s.double() * 255.0).floor().clamp(0, 255).float())
    return torch.stack([uh, us, maxc], 1)


def _pil_hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    # Pillow's hsv2rgb (Convert.c): C round() is half away from zero (the values are >= 0)
    h, s, v = hsv[:, 0].double(), hsv[:, 1].double(), hsv[:, 2].double()
    i = torch.floor(h * 6.0 / 255.0)
    f = (h * 6.0 / 255.0 - i).float().double()  # stored in C floats
    fs = (s / 255.0).float().double()

    p = torch.floor(v * (1.0 - fs) + 0.5).clamp(0, 255)
    q = torch.floor(v * (1.0 - fs * f) + 0.5).clamp(0, 255)
    t = torch.floor(v * (1.0 - fs * (1.0 - f)) + 0.5).clamp(0, 255)
    # sector i picks (r, g, b) among (v, t, p, q): one gather instead of six selections
    cand = torch.stack([v, t, p, q], 1).float()
    table = device_constant("hsv_sectors", hsv.device, lambda: torch.tensor(_HSV_SECTORS))
    idx = table[i.long() % 6].movedim(-1, 1)  # (B, 3, H, W)
    out = cand.gather(1, idx)
    return torch.where((s == 0)[:, None], hsv[:, 2:3].expand_as(out), out)


#: Pillow's hsv2rgb: for sector i, the sources of (r, g, b) among (v, t, p, q) = (0, 1, 2, 3)
_HSV_SECTORS = ((0, 1, 2), (3, 0, 2), (2, 0, 1), (2, 3, 0), (1, 2, 0), (0, 2, 3))


def hue(x: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    """torchvision's PIL ``adjust_hue``: to Pillow's uint8 HSV, hue += int(factor * 255) mod 256,
    back to RGB."""
    hsv = _rgb_to_pil_hsv(x)
    shift = torch.trunc(factor.double() * 255.0).remainder(256.0).float().view(-1, 1, 1)
    hsv[:, 0] = torch.remainder(hsv[:, 0] + shift, 256.0)
    return _pil_hsv_to_rgb(hsv)


def color_jitter(
    x: torch.Tensor, order: torch.Tensor, b: torch.Tensor, c: torch.Tensor, s: torch.Tensor, h: torch.Tensor | None
) -> torch.Tensor:
    """torchvision's ``ColorJitter`` with a per-sample order ``order`` (B, 4) (a permutation of
    0 brightness, 1 contrast, 2 saturation, 3 hue) and per-sample factors, without
    data-dependent control flow. ``h=None``: no hue op.

    The three blends are cheap, hue (an HSV round trip) is not, so hue runs once: the blends
    before each sample's hue position, then hue on every sample's state at that moment, then
    the blends after it. Each stage computes the three blends for the whole batch and keeps, per
    sample, the one its order names."""

    def blends(x: torch.Tensor, stage: int, active: torch.Tensor) -> torch.Tensor:
        # the three ops are blend(degenerate, x, factor): one blend with a per-sample
        # degenerate image (0, the grey mean, the grey image) and factor
        op = order[:, stage]
        lum = luma(x)
        mean = torch.floor(lum.mean((1, 2, 3), keepdim=True) + 0.5)
        deg = torch.where((op == 1).view(-1, 1, 1, 1), mean, lum)
        deg = torch.where((op == 0).view(-1, 1, 1, 1), 0.0, deg).expand_as(x)
        factor = torch.where(op == 0, b, torch.where(op == 1, c, s))
        return where_b(active & (op != 3), blend(deg, x, factor), x)

    if h is None:
        for stage in range(4):
            x = blends(x, stage, order[:, stage] != 3)
        return x
    hue_at = torch.argmax((order == 3).int(), dim=1)  # position of the hue op in each order
    pre = x
    for stage in range(4):
        pre = blends(pre, stage, hue_at > stage)
    x = hue(pre, h)
    for stage in range(4):
        x = blends(x, stage, hue_at < stage)
    return x


def invert(x: torch.Tensor) -> torch.Tensor:
    return 255.0 - x


def solarize(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.solarize``: pixels >= threshold are inverted."""
    return torch.where(x < _col(threshold), x, 255.0 - x)


def posterize(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.posterize``: keep the top ``bits`` bits (1..8) of each value."""
    shift = (8 - bits.long().clamp(1, 8)).view(-1, 1, 1, 1)
    xi = x.long()
    return ((xi >> shift) << shift).to(x.dtype)


def autocontrast(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.autocontrast`` (cutoff 0): each channel's [min, max] stretched to [0, 255]
    with PIL's lookup table ``int(i * 255 / (hi - lo) - lo * 255 / (hi - lo))``."""
    lo = x.amin((2, 3), keepdim=True).double()
    hi = x.amax((2, 3), keepdim=True).double()
    span = hi - lo
    # tensor / tensor: a Python scalar over a tensor is computed as 255 * (1 / span), off by an ulp
    scale = torch.full_like(span, 255.0) / torch.where(span > 0, span, torch.ones_like(span))
    out = (x.double() * scale - lo * scale).clamp(0.0, 255.0).floor()
    return torch.where(span > 0, out, x.double()).to(x.dtype)


def equalize(x: torch.Tensor) -> torch.Tensor:
    """PIL ``ImageOps.equalize`` per channel: step = (N - count of the last used level) // 255,
    lut[i] = (step // 2 + #pixels below i) // step (identity when step is 0)."""
    b, c, h, w = x.shape
    xi = x.long().reshape(b * c, h * w)
    hist = torch.zeros(b * c, 256, dtype=torch.long, device=x.device).scatter_add_(1, xi, torch.ones_like(xi))
    last = hist.gather(1, xi.amax(1, keepdim=True))
    step = (h * w - last) // 255
    below = torch.cumsum(hist, 1) - hist
    safe = step.clamp_min(1)
    lut = ((step // 2 + below) // safe).clamp_max(255)
    lut = torch.where(step > 0, lut, torch.arange(256, device=x.device).expand_as(lut))
    return lut.gather(1, xi).view(b, c, h, w).to(x.dtype)


def _fill(fill: torch.Tensor | float) -> torch.Tensor | float:
    # a per-channel fill is a (C,) tensor already on the device (no host-to-device copy per call)
    return fill.view(1, -1, 1, 1) if torch.is_tensor(fill) else float(fill)


def affine_nearest(x: torch.Tensor, matrix: torch.Tensor, fill: torch.Tensor | float = 0.0) -> torch.Tensor:
    """PIL ``img.transform(size, AFFINE, (a, b, c, d, e, f), NEAREST, fillcolor=fill)``: output
    pixel (x, y) takes input pixel (a (x+.5) + b (y+.5) + c, d (x+.5) + e (y+.5) + f), floored,
    ``fill`` where that lies outside. ``matrix`` is (B, 6), the inverse map. As Pillow's
    ``affine_fixed`` (used whenever the coordinates fit in 16.16 fixed point, as at any image
    size used here), the coefficients are rounded to 16.16 fixed point and the coordinates
    computed in integers, so borderline pixels round exactly as PIL's do."""
    bsz, c, h, w = x.shape
    dev = x.device
    m = matrix.to(torch.float64)

    def fix(v: torch.Tensor) -> torch.Tensor:
        return torch.floor(v * 65536.0 + 0.5).long()[:, None, None]

    a0, a1, a3, a4 = fix(m[:, 0]), fix(m[:, 1]), fix(m[:, 3]), fix(m[:, 4])
    a2 = fix(m[:, 2] + m[:, 0] * 0.5 + m[:, 1] * 0.5)
    a5 = fix(m[:, 5] + m[:, 3] * 0.5 + m[:, 4] * 0.5)
    ys = torch.arange(h, device=dev)[None, :, None]
    xs = torch.arange(w, device=dev)[None, None, :]
    xin = (a2 + a1 * ys + a0 * xs) >> 16
    yin = (a5 + a4 * ys + a3 * xs) >> 16
    inside = (xin >= 0) & (xin < w) & (yin >= 0) & (yin < h)
    flat = (yin.clamp(0, h - 1) * w + xin.clamp(0, w - 1)).view(bsz, 1, h * w).expand(bsz, c, h * w)
    out = x.reshape(bsz, c, h * w).gather(2, flat).view(bsz, c, h, w)
    return torch.where(inside[:, None], out, _fill(fill))


def box_fill(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, bottom: torch.Tensor, right: torch.Tensor, fill: torch.Tensor | float
) -> torch.Tensor:
    """Rows [top, bottom) x columns [left, right) of each image set to ``fill`` (Cutout)."""
    _, _, h, w = x.shape
    r = torch.arange(h, device=x.device)[None, :, None]
    cidx = torch.arange(w, device=x.device)[None, None, :]
    inside = (r >= top.view(-1, 1, 1)) & (r < bottom.view(-1, 1, 1)) & (cidx >= left.view(-1, 1, 1)) & (cidx < right.view(-1, 1, 1))
    return torch.where(inside[:, None], _fill(fill), x)


def normalize(x: torch.Tensor, mean: torch.Tensor | None, std: torch.Tensor | None) -> torch.Tensor:
    """uint8 values -> float in [0, 1] -> (x - mean) / std (``ToDtype(scale=True)`` + ``Normalize``);
    ``mean`` / ``std`` are (C,) tensors on the device."""
    x = x / 255.0
    if mean is None or std is None:
        return x
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


# ----- an op bank: one op per sample, chosen by id (AutoAugment / RandAugment / BoostedCL) ----

#: op ids of :func:`apply_op`
OP_IDS = {
    name: i
    for i, name in enumerate(
        (
            "Identity",
            "ShearX",
            "ShearY",
            "TranslateX",
            "TranslateY",
            "Rotate",
            "Brightness",
            "Color",
            "Contrast",
            "Sharpness",
            "Posterize",
            "Solarize",
            "AutoContrast",
            "Equalize",
            "Invert",
            "Cutout",
        )
    )
}


def _pil_rotate_matrix(angle_deg: torch.Tensor, w: int, h: int) -> torch.Tensor:
    # PIL Image.rotate(angle) without expand: inverse map about the centre (w/2, h/2)
    a = -torch.deg2rad(torch.remainder(angle_deg, 360.0))
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = w / 2.0, h / 2.0
    c = cos * (-cx) + sin * (-cy) + cx
    f = -sin * (-cx) + cos * (-cy) + cy
    return torch.stack([cos, sin, c, -sin, cos, f], 1)


def op_matrix(op: torch.Tensor, value: torch.Tensor, w: int, h: int) -> torch.Tensor:
    """(B, 6) inverse affine map of the geometric ops (identity for the others). ``value`` is in
    PIL units: shear factor, translation in pixels (positive moves the content left / up, as
    PIL's matrix), rotation in degrees."""
    v = value.double()
    one, zero = torch.ones_like(v), torch.zeros_like(v)
    ident = torch.stack([one, zero, zero, zero, one, zero], 1)
    m = where_b(op == OP_IDS["ShearX"], torch.stack([one, v, zero, zero, one, zero], 1), ident)
    m = where_b(op == OP_IDS["ShearY"], torch.stack([one, zero, zero, v, one, zero], 1), m)
    m = where_b(op == OP_IDS["TranslateX"], torch.stack([one, zero, v, zero, one, zero], 1), m)
    m = where_b(op == OP_IDS["TranslateY"], torch.stack([one, zero, zero, zero, one, v], 1), m)
    return where_b(op == OP_IDS["Rotate"], _pil_rotate_matrix(v, w, h), m)


def apply_op(
    x: torch.Tensor, op: torch.Tensor, value: torch.Tensor, cutout: torch.Tensor | None = None, cutout_fill: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """Apply op ``op[i]`` (an id of :data:`OP_IDS`) with value ``value[i]`` to image i, with PIL's
    semantics: geometric ops as :func:`op_matrix` (nearest, fill 0); Brightness / Color /
    Contrast / Sharpness ``ImageEnhance(...).enhance(value)``; Posterize ``value`` bits; Solarize
    threshold ``value``; Cutout a box ``cutout`` (B, 4) = (top, left, bottom, right) set to
    ``cutout_fill``. All ops are computed for the whole batch and selected per sample; the
    geometric ones share one warp and the four blends one blend."""
    _, _, h, w = x.shape
    geometric = (op >= OP_IDS["ShearX"]) & (op <= OP_IDS["Rotate"])
    out = where_b(geometric, affine_nearest(x, op_matrix(op, value, w, h)), x)
    # the four ImageEnhance ops: blend(degenerate, x, factor), one blend for all of them
    deg = torch.zeros_like(x)
    deg = where_b(op == OP_IDS["Color"], grayscale(x), deg)
    mean = torch.floor(luma(x).mean((1, 2, 3), keepdim=True) + 0.5).expand_as(x)
    deg = where_b(op == OP_IDS["Contrast"], mean, deg)
    deg = where_b(op == OP_IDS["Sharpness"], smooth(x), deg)
    enhance = (op >= OP_IDS["Brightness"]) & (op <= OP_IDS["Sharpness"])
    out = where_b(enhance, blend(deg, x, torch.where(enhance, value, torch.ones_like(value))), out)
    out = where_b(op == OP_IDS["Posterize"], posterize(x, torch.where(op == OP_IDS["Posterize"], value, 8.0).long()), out)
    out = where_b(op == OP_IDS["Solarize"], solarize(x, value), out)
    out = where_b(op == OP_IDS["AutoContrast"], autocontrast(x), out)
    out = where_b(op == OP_IDS["Equalize"], equalize(x), out)
    out = where_b(op == OP_IDS["Invert"], invert(x), out)
    if cutout is not None:
        out = where_b(op == OP_IDS["Cutout"], box_fill(x, cutout[:, 0], cutout[:, 1], cutout[:, 2], cutout[:, 3], cutout_fill), out)
    return out
