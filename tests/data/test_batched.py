"""The batched (device) augmentation backend against the per-sample PIL / torchvision path.

Stated tolerances: the colour, point and nearest-neighbour ops (Brightness, Contrast, Color,
Sharpness, hue, grey, AutoContrast, Equalize, Solarize, Posterize, Invert, crops with padding,
flips, shears, translations, rotations) are bit-exact against PIL; the bicubic / bilinear
resampling of RandomResizedCrop is within 1 grey level (PIL resamples in fixed point, here in
float32), on at most 10 % of the pixels; the Gaussian blur is within 1 grey level on fewer than
0.1 % of the pixels (torchvision's 2-D kernel against two 1-D passes).
"""

from __future__ import annotations

import math

import numpy as np
import PIL.Image
import PIL.ImageEnhance as E
import PIL.ImageOps as O
import pytest
import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from ltcl_lightning.data import batched as B
from ltcl_lightning.data.augment import AutoAugmentCutout, CropFlip, SimCLRAugment, torchvision_op_value
from ltcl_lightning.data.base import augmentation_seed


def _images(n: int = 8, size: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    # half noise, half smooth gradients (resampling and equalisation behave differently on them)
    half = n // 2
    imgs[half:] = (np.cumsum(imgs[half:].astype(np.int64), axis=1) // 24 % 256).astype(np.uint8)
    return imgs


IMGS = _images()
PILS = [PIL.Image.fromarray(a) for a in IMGS]
X = torch.from_numpy(IMGS).permute(0, 3, 1, 2).float()


def _t(img) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1).float()


def _ref(fn, *params) -> torch.Tensor:
    return torch.stack([_t(fn(p, *(float(v[i]) for v in params))) for i, p in enumerate(PILS)])


FACTORS = torch.tensor([0.0, 0.3, 0.7, 1.0, 1.3, 1.6, 1.9, 0.9])


@pytest.mark.parametrize(
    "name,batched,pil",
    [
        ("brightness", B.brightness, lambda p, f: E.Brightness(p).enhance(f)),
        ("contrast", B.contrast, lambda p, f: E.Contrast(p).enhance(f)),
        ("saturation", B.saturation, lambda p, f: E.Color(p).enhance(f)),
        ("sharpness", B.sharpness, lambda p, f: E.Sharpness(p).enhance(f)),
    ],
)
def test_enhance_ops_bit_exact(name, batched, pil):
    assert torch.equal(batched(X, FACTORS), _ref(pil, FACTORS)), name


def test_hue_bit_exact_with_torchvision_pil_kernel():
    h = torch.tensor([-0.5, -0.1, -0.03, 0.0, 0.02, 0.1, 0.37, 0.5])
    assert torch.equal(B.hue(X, h), _ref(lambda p, f: F.adjust_hue(p, f), h))


@pytest.mark.parametrize(
    "name,batched,pil",
    [
        ("grayscale", B.grayscale, lambda p: p.convert("L").convert("RGB")),
        ("autocontrast", B.autocontrast, O.autocontrast),
        ("equalize", B.equalize, O.equalize),
        ("invert", B.invert, O.invert),
    ],
)
def test_point_ops_bit_exact(name, batched, pil):
    assert torch.equal(batched(X), _ref(pil)), name


def test_solarize_posterize_bit_exact():
    thr = torch.tensor([0.0, 10.0, 100.0, 127.5, 128.0, 200.0, 255.0, 256.0])
    assert torch.equal(B.solarize(X, thr), _ref(lambda p, t: O.solarize(p, t), thr))
    bits = torch.tensor([1, 2, 3, 4, 5, 6, 7, 8])
    assert torch.equal(B.posterize(X, bits), _ref(lambda p, b: O.posterize(p, int(b)), bits))


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("out", [32, 12])
def test_resized_crop_within_one_level_of_pil(interpolation, out):
    top = torch.tensor([0, 3, 5, 10, 0, 2, 20, 7])
    left = torch.tensor([0, 1, 7, 12, 4, 0, 1, 9])
    h = torch.tensor([32, 20, 10, 15, 25, 30, 12, 3])
    w = torch.tensor([32, 25, 12, 20, 28, 18, 30, 5])
    got = B.resized_crop(X, top, left, h, w, out, interpolation)
    mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}[interpolation]
    ref = torch.stack(
        [
            _t(F.resized_crop(p, int(top[i]), int(left[i]), int(h[i]), int(w[i]), [out, out], interpolation=mode, antialias=True))
            for i, p in enumerate(PILS)
        ]
    )
    diff = (got - ref).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() <= 0.10


def test_padded_crop_and_flip_exact():
    top = torch.tensor([0, 8, 3, 4, 7, 1, 0, 8])
    left = torch.tensor([8, 0, 5, 4, 2, 6, 0, 8])
    side = torch.full_like(top, 32)
    got = B.resized_crop(torch.nn.functional.pad(X, (4, 4, 4, 4)), top, left, side, side, 32, "nearest")
    ref = torch.stack([_t(F.crop(F.pad(p, [4]), int(top[i]), int(left[i]), 32, 32)) for i, p in enumerate(PILS)])
    assert torch.equal(got, ref)
    assert torch.equal(got.flip(-1)[0], _t(F.horizontal_flip(F.crop(F.pad(PILS[0], [4]), 0, 8, 32, 32))))


_AA_CASES = [
    ("ShearX", 0.3),
    ("ShearX", -0.17),
    ("ShearY", 0.23),
    ("TranslateX", 14.5),
    ("TranslateX", -9.0),
    ("TranslateY", 6.0),
    ("Rotate", 30.0),
    ("Rotate", -13.3),
    ("Brightness", 0.5),
    ("Color", -0.7),
    ("Contrast", 0.9),
    ("Sharpness", -0.4),
    ("Posterize", 5.0),
    ("Solarize", 0.45),
    ("AutoContrast", 0.0),
    ("Equalize", 0.0),
    ("Invert", 0.0),
    ("Identity", 0.0),
]


@pytest.mark.parametrize("name,magnitude", _AA_CASES)
def test_autoaugment_ops_equal_torchvision_pil(name, magnitude):
    aa = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
    ref = torch.stack([_t(aa._apply_image_or_video_transform(p, name, magnitude, InterpolationMode.NEAREST, {})) for p in PILS])
    op = torch.full((len(PILS),), B.OP_IDS[name])
    got = B.apply_op(X, op, torchvision_op_value(op, torch.full((len(PILS),), magnitude, dtype=torch.float64)))
    # nearest-neighbour warps in PIL's 16.16 fixed point: bit-exact, borderline pixels included
    assert torch.equal(got, ref), name


def test_apply_op_selects_per_sample():
    ops = torch.tensor([B.OP_IDS[n] for n in ("Invert", "Identity", "Rotate", "Equalize", "Solarize", "ShearY", "Brightness", "Posterize")])
    vals = torch.tensor([0.0, 0.0, 20.0, 0.0, 100.0, 0.2, 1.5, 3.0], dtype=torch.float64)
    got = B.apply_op(X, ops, vals)
    assert torch.equal(got[0], 255 - X[0]) and torch.equal(got[1], X[1])
    assert torch.equal(got[2], _t(PILS[2].rotate(20.0)))
    assert torch.equal(got[3], _t(O.equalize(PILS[3])))
    assert torch.equal(got[5], _t(PILS[5].transform((32, 32), PIL.Image.Transform.AFFINE, (1, 0, 0, 0.2, 1, 0))))
    assert torch.equal(got[7], _t(O.posterize(PILS[7], 3)))


def test_gaussian_blur_of_an_impulse_equals_the_hand_computed_kernel():
    # a 200 on a zero 5 x 5 image, k = 3: the centre gets 200 w0^2 and its 4-neighbours 200 w0 w1,
    # with w = [e^-1/(2 s^2), 1, e^-1/(2 s^2)] / sum (float64 by hand), rounded
    x = torch.zeros(2, 1, 5, 5)
    x[:, 0, 2, 2] = 200.0
    sigma = torch.tensor([0.8, 1.7])
    out = B.gaussian_blur(x, 3, sigma)
    for i, s in enumerate(sigma.tolist()):
        e = math.exp(-1.0 / (2.0 * s * s))
        w_side, w_mid = e / (1 + 2 * e), 1 / (1 + 2 * e)
        assert out[i, 0, 2, 2] == round(200 * w_mid * w_mid)
        assert out[i, 0, 1, 2] == out[i, 0, 2, 3] == round(200 * w_mid * w_side)
        assert out[i, 0, 1, 1] == round(200 * w_side * w_side)
        assert out[i, 0, 0].sum() == 0  # two pixels away: outside the 3 x 3 kernel
    assert out[0, 0, 2, 2] > out[1, 0, 2, 2]  # each sample its own sigma


@pytest.mark.parametrize("size", [32, 96, 224])
def test_gaussian_blur_within_one_level_of_torchvision_pil(size):
    # the SDCLR recipe's kernel max(3, size // 10 | 1): 3, 9 and 23; torchvision v2 blurs PIL
    # images with the 2-D kernel, here two 1-D passes: equal but for float32 rounding at half levels
    imgs = _images(6, size)
    pils = [PIL.Image.fromarray(a) for a in imgs]
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float()
    sigma = torch.tensor([0.1, 0.45, 0.9, 1.3, 2.0, 1.65])
    k = max(3, (size // 10) | 1)
    ref = torch.stack([_t(F.gaussian_blur(p, [k, k], [float(s), float(s)])) for p, s in zip(pils, sigma)])
    diff = (B.gaussian_blur(x, k, sigma) - ref).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3
    assert not torch.equal(ref[2], x[2])  # the reference did blur


def test_blur_view_applies_half_the_time_with_uniform_sigma(monkeypatch):
    drawn = []

    def marked(x, k, sigma):  # record the draw; mark blurred views (values above 255)
        drawn.append((k, sigma))
        return x + 1000.0

    monkeypatch.setattr(B, "gaussian_blur", marked)
    aug = SimCLRAugment(interpolation="bicubic", blur=True)
    out = aug.batched(X[:1].expand(4000, -1, -1, -1), torch.Generator().manual_seed(0), 32)
    (k, sigma), blurred = drawn[0], (out > 255).flatten(1).all(1)
    assert k == 3 and sigma.shape == (4000,)
    assert abs(blurred.float().mean().item() - 0.5) < 0.03  # RandomApply p 0.5, per sample
    assert 0.1 <= sigma.min() and sigma.max() <= 2.0
    hist = np.histogram(sigma.numpy(), 10, (0.1, 2.0))[0] / 4000  # torchvision: U(0.1, 2)
    assert 0.5 * np.abs(hist - 0.1).sum() < 0.03
    # the worker backend has the same op, probability and range
    blur = aug.per_sample(32).transforms[-1]
    assert isinstance(blur, v2.RandomApply) and blur.p == 0.5
    assert blur.transforms[0].kernel_size == (3, 3) and tuple(blur.transforms[0].sigma) == (0.1, 2.0)


# ----- distributions of the drawn parameters ------------------------------------------------
def test_random_resized_crop_distribution_matches_torchvision():
    torch.manual_seed(0)
    n = 6000
    scale, ratio = (0.1, 1.0), (3 / 4, 4 / 3)
    ref = np.array([v2.RandomResizedCrop.get_params(torch.empty(3, 32, 32), list(scale), list(ratio)) for _ in range(n)])
    g = torch.Generator().manual_seed(1)
    got = torch.stack(B.random_resized_crop_params(g, n, 32, 32, scale, ratio), 1).numpy()
    for arr in (ref, got):
        assert (arr[:, 0] + arr[:, 2] <= 32).all() and (arr[:, 1] + arr[:, 3] <= 32).all() and (arr >= 0).all()
    # crop area and log-aspect histograms agree (10 bins, total variation < 0.03 with 6000 draws)
    for f in (lambda a: a[:, 2] * a[:, 3] / 1024.0, lambda a: np.log(a[:, 3] / a[:, 2]), lambda a: a[:, 0] / 32.0):
        lo, hi = min(f(ref).min(), f(got).min()), max(f(ref).max(), f(got).max())
        h1 = np.histogram(f(ref), 10, (lo, hi))[0] / n
        h2 = np.histogram(f(got), 10, (lo, hi))[0] / n
        assert 0.5 * np.abs(h1 - h2).sum() < 0.03


def test_simclr_views_draw_independent_parameters_per_sample():
    aug = SimCLRAugment(scale=(0.1, 1.0), interpolation="bicubic")
    x = X[:1].expand(256, -1, -1, -1)  # the same image 256 times
    out = aug.batched(x, torch.Generator().manual_seed(0), 32)
    distinct = len({tuple(v.flatten()[:64].tolist()) for v in out})
    assert distinct > 250
    grey = (out[:, 0] == out[:, 1]).all((1, 2)) & (out[:, 1] == out[:, 2]).all((1, 2))
    assert 0.1 < grey.float().mean() < 0.3  # RandomGrayscale p 0.2 (+ none by chance otherwise)


def test_color_jitter_order_is_a_uniform_permutation_per_sample():
    g = torch.Generator().manual_seed(0)
    order = torch.argsort(torch.rand(8000, 4, generator=g), 1)
    assert all(sorted(r) == [0, 1, 2, 3] for r in order[:50].tolist())
    first = torch.bincount(order[:, 0], minlength=4).float() / 8000
    assert torch.allclose(first, torch.full((4,), 0.25), atol=0.02)
    # the jitter with a fixed order equals the ops composed in that order
    b, c, s, h = (torch.full((8,), v) for v in (1.2, 0.7, 1.4, 0.05))
    orders = torch.tensor([[3, 1, 0, 2]] * 8)
    ref = B.saturation(B.brightness(B.contrast(B.hue(X, h), c), b), s)
    assert torch.equal(B.color_jitter(X, orders, b, c, s, h), ref)


def test_autoaugment_policies_are_drawn_per_sample():
    aug = AutoAugmentCutout()
    x = X[:1].expand(512, -1, -1, -1)
    out = aug.batched(x, torch.Generator().manual_seed(0), 32)
    # Cutout: exactly one 16 x 16 black square inside each image (p = 1)
    black = (out == 0).all(1)
    assert (black.sum((1, 2)) >= 256).all()
    assert len({tuple(v.flatten()[::7].tolist()) for v in out}) > 500


def test_crop_flip_offsets_uniform():
    g = torch.Generator().manual_seed(0)
    top, left = B.random_crop_params(g, 9000, 32, 32, 32, 4)
    counts = torch.bincount(top, minlength=9).float() / 9000
    assert top.min() == 0 and top.max() == 8 and torch.allclose(counts, torch.full((9,), 1 / 9), atol=0.015)
    assert CropFlip().batched(X, g, 32).shape == X.shape


def test_seeded_same_seed_same_batch_and_ranks_differ():
    aug = SimCLRAugment()

    def run(seed):
        return aug.batched(X, torch.Generator().manual_seed(seed), 32)

    assert torch.equal(run(augmentation_seed(0, 0, 3)), run(augmentation_seed(0, 0, 3)))
    assert not torch.equal(run(augmentation_seed(0, 0, 3)), run(augmentation_seed(0, 1, 3)))
    assert len({augmentation_seed(s, r, e) for s in range(3) for r in range(8) for e in range(50)}) == 3 * 8 * 50
    assert math.isfinite(float(run(1).mean()))


# ----- the device-resident datamodule ---------------------------------------------------------
def test_device_resident_digits_batches_follow_the_contract():
    from ltcl_lightning.data.base import ResidentBatch
    from ltcl_lightning.data.digits import DigitsLTDataModule

    worker = DigitsLTDataModule(batch_size=16, seed=3)
    resident = DigitsLTDataModule(batch_size=16, seed=3, device_resident=True)
    for dm in (worker, resident):
        dm.setup("fit")
    wb = next(iter(worker.train_dataloader()))
    rb = next(iter(resident.train_dataloader()))
    assert isinstance(rb, ResidentBatch) and rb.index.dtype == torch.long
    assert torch.equal(rb.index, wb[0])  # same sampler, same seed: the same images in the same order
    index, views, target = resident.on_after_batch_transfer(rb, 0)
    assert torch.equal(index, wb[0]) and torch.equal(target, wb[2])
    assert len(views) == 2 and views[0].shape == wb[1][0].shape and views[0].dtype == torch.float32
    # evaluation views are the normalised images: identical on both paths
    we = next(iter(worker.val_dataloader()))
    ri, rv, rt = resident.on_after_batch_transfer(next(iter(resident.val_dataloader())), 0)
    assert torch.equal(ri, we[0]) and torch.equal(rt, we[2])
    assert torch.allclose(rv[0], we[1][0], atol=1e-6)
    # the training views: normalised uint8 values, the same mean as the worker path roughly
    assert abs(float(views[0].mean()) - float(wb[1][0].mean())) < 0.3


def test_device_resident_rejects_plain_callables():
    from ltcl_lightning.data.digits import DigitsLTDataModule

    dm = DigitsLTDataModule(batch_size=8, device_resident=True, train_views=[lambda img: img])
    dm.setup("fit")
    with pytest.raises(TypeError, match="plain callable"):
        dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)


def test_crop_params_of_mixed_sizes_equal_the_one_size_draws():
    # one draw for images of different sizes (decode='device'): sample i's box is the one the
    # one-size function gives sample i of the same random numbers; 20 x 300 and 300 x 20 with
    # scale (0.9, 1) fit no try, so they take the centre-crop fallback
    sizes = [(50, 80), (300, 200), (17, 17), (20, 300), (300, 20), (50, 80), (224, 224), (20, 300)]
    hs, ws = torch.tensor(sizes).unbind(1)
    for scale in ((0.08, 1.0), (0.9, 1.0)):
        mixed = B.random_resized_crop_params(torch.Generator().manual_seed(3), len(sizes), hs, ws, scale, (3 / 4, 4 / 3))
        for i, (h, w) in enumerate(sizes):
            one = B.random_resized_crop_params(torch.Generator().manual_seed(3), len(sizes), h, w, scale, (3 / 4, 4 / 3))
            assert [int(p[i]) for p in mixed] == [int(p[i]) for p in one], (scale, h, w)
    # the fallback is torchvision's: 20 x 300 (W / H 15 > 4/3): full height, width round(20 * 4/3) = 27, centred
    fallback = B.random_resized_crop_params(torch.Generator().manual_seed(3), 1, 20, 300, (0.9, 1.0), (3 / 4, 4 / 3))
    assert [int(p[0]) for p in fallback] == [0, (300 - 27) // 2, 20, 27]
