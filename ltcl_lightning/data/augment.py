"""View recipes as objects, each with two backends: per sample in loader workers, batched on the device.

A datamodule's ``train_views`` / ``eval_view`` take these objects (in YAML a ``class_path`` and
its ``init_args``, as for every other component) or the preset names of
:data:`ltcl_lightning.data.transforms.PRESETS`, which name such objects.

- ``per_sample(size)``: the torchvision v2 transform applied to one PIL image (or uint8 tensor)
  in a loader worker (the CPU path). It ends with uint8 images; the datamodule appends
  ``ToImage, ToDtype(float, scale), Normalize``.
- ``batched(x, generator)``: the same recipe for a batch ``x`` (B, C, H, W) of uint8 values held
  as float32, on the batch's device, with **independent random parameters per sample** drawn from
  ``generator`` (torchvision v2 on a batch would draw one set for the whole batch). Ops follow
  PIL's arithmetic (``data/batched.py``), so the two backends agree for equal parameters. It
  returns uint8 values (float32); the datamodule normalises.

The parameter draws follow torchvision's ``get_params`` / ``make_params`` distributions exactly
(tests compare histograms), from a different random stream: the two backends give the same
distribution of views, not the same views.
"""

from __future__ import annotations

from typing import Literal

import torch
from torchvision.transforms import InterpolationMode, v2

from ltcl_lightning.data import batched as B

Interpolation = Literal["bilinear", "bicubic"]
_MODES = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}


def _rand(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g, device=g.device)


class Augmentation:
    """A view recipe with a per-sample (worker) and a batched (device) implementation."""

    def per_sample(self, size: int) -> v2.Transform:
        raise NotImplementedError

    def batched(self, x: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} has no batched (device) implementation: use it with the worker backend (device_resident=false)"
        )

    def batched_list(self, images: list[torch.Tensor], generator: torch.Generator, host: torch.Generator, size: int) -> torch.Tensor:
        """The batched recipe for images of different sizes (decoded JPEGs: (C, H_i, W_i) uint8
        on the device). Recipes that start with a crop to ``size`` crop each image, the boxes
        drawn from the CPU generator ``host`` (the sizes are known on the host: no device value
        is read), and run the rest batched; by default the images must share one size."""
        shapes = {tuple(im.shape) for im in images}
        if len(shapes) != 1:
            raise ValueError(
                f"{type(self).__name__} needs images of one size for the batched backend, got {len(shapes)} "
                "sizes; use a recipe that crops first (SimCLRAugment, RandAugmentView, EvalView) or the worker backend"
            )
        return self.batched(torch.stack(images).float(), generator, size)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"


def crop_each(images: list[torch.Tensor], boxes: list[tuple[int, int, int, int]], size: int, interpolation: str) -> torch.Tensor:
    """Each image's box (top, left, height, width) resized to size x size (PIL arithmetic), stacked."""
    out = []
    for im, (top, left, h, w) in zip(images, boxes):
        crop = im[None, :, top : top + h, left : left + w].float()
        zero = torch.zeros(1, dtype=torch.long, device=im.device)
        out.append(B.resized_crop(crop, zero, zero, zero + h, zero + w, size, interpolation))
    return torch.cat(out)


def _blur_kernel(size: int) -> int:
    """The Gaussian blur's kernel for ``size``-pixel views: about a tenth of the side, odd, >= 3."""
    return max(3, (size // 10) | 1)


class SimCLRAugment(Augmentation):
    """SimCLR views (spec data_and_eval.md section 4): RandomResizedCrop, horizontal flip,
    ColorJitter with probability ``jitter_p`` (random order per sample), RandomGrayscale.

    Args:
        scale, ratio, interpolation: of the RandomResizedCrop (SDCLR / BoostedCL CIFAR: scale
            (0.1, 1), bicubic; SimCLR default (0.08, 1), bilinear).
        flip: random horizontal flip (p 0.5).
        jitter: ColorJitter (brightness, contrast, saturation, hue); 0 switches one off.
        jitter_p: probability of the jitter; grayscale_p: of the grey conversion (0: none).
        blur: Gaussian blur p 0.5, kernel max(3, size // 10 | 1), sigma U(0.1, 2), after the
            grey conversion (SDCLR ImageNet-100, PaCo ImageNet-LT).
    """

    def __init__(
        self,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        interpolation: Interpolation = "bilinear",
        flip: bool = True,
        jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur: bool = False,
    ):
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max <= 1, got {tuple(scale)}")
        if len(ratio) != 2 or not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be (min, max) with 0 < min <= max, got {tuple(ratio)}")
        if interpolation not in _MODES:
            raise ValueError(f"interpolation must be 'bilinear' or 'bicubic', got {interpolation!r}")
        if len(jitter) != 4 or min(jitter) < 0 or jitter[3] > 0.5:
            raise ValueError(f"jitter must be 4 non-negative strengths (hue <= 0.5), got {tuple(jitter)}")
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.interpolation = interpolation
        self.flip = flip
        self.jitter = tuple(float(j) for j in jitter)
        self.jitter_p = float(jitter_p)
        self.grayscale_p = float(grayscale_p)
        self.blur = blur

    def per_sample(self, size: int) -> v2.Transform:
        ops: list = [
            v2.RandomResizedCrop(size, scale=self.scale, ratio=self.ratio, interpolation=_MODES[self.interpolation], antialias=True)
        ]
        if self.flip:
            ops.append(v2.RandomHorizontalFlip())
        if any(self.jitter):
            ops.append(v2.RandomApply([v2.ColorJitter(*self.jitter)], p=self.jitter_p))
        if self.grayscale_p > 0:
            ops.append(v2.RandomGrayscale(p=self.grayscale_p))
        if self.blur:
            ops.append(v2.RandomApply([v2.GaussianBlur(_blur_kernel(size), sigma=(0.1, 2.0))], p=0.5))
        return v2.Compose(ops)

    def batched(self, x: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
        n, _, h, w = x.shape
        top, left, ch, cw = B.random_resized_crop_params(generator, n, h, w, self.scale, self.ratio)
        return self.after_crop(B.resized_crop(x, top, left, ch, cw, size, self.interpolation), generator)

    def batched_list(self, images: list[torch.Tensor], generator: torch.Generator, host: torch.Generator, size: int) -> torch.Tensor:
        # every image's box in one draw on the host (the sizes are host integers: no device read)
        hs, ws = torch.tensor([[im.shape[-2], im.shape[-1]] for im in images]).unbind(1)
        params = B.random_resized_crop_params(host, len(images), hs, ws, self.scale, self.ratio)
        boxes = list(zip(*(p.tolist() for p in params)))
        return self.after_crop(crop_each(images, boxes, size, self.interpolation), generator)

    def after_crop(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Flip, jitter, grey and blur of already cropped views."""
        n = x.shape[0]
        u = _rand(generator, n, 3)
        if self.flip:
            x = B.where_b(u[:, 0] < 0.5, x.flip(-1), x)
        if any(self.jitter):
            x = B.where_b(u[:, 1] < self.jitter_p, self._jitter(x, generator), x)
        if self.grayscale_p > 0:
            x = B.where_b(u[:, 2] < self.grayscale_p, B.grayscale(x), x)
        if self.blur:
            v = _rand(generator, n, 2)  # apply (p 0.5), sigma U(0.1, 2) as torchvision draws it
            sigma = 0.1 + 1.9 * v[:, 1]
            x = B.where_b(v[:, 0] < 0.5, B.gaussian_blur(x, _blur_kernel(x.shape[-1]), sigma), x)
        return x

    def _jitter(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        order = torch.argsort(_rand(g, n, 4), dim=1)  # a uniform random permutation per sample
        u = _rand(g, n, 4)
        bright, con, sat, hue = self.jitter

        def factor(strength: float, v: torch.Tensor) -> torch.Tensor:
            lo = max(0.0, 1.0 - strength)
            return lo + (1.0 + strength - lo) * v

        # a strength of 0 switches the op off (torchvision: parameter None): factor 1 is the
        # identity for the three blends; hue is skipped (PIL's HSV round trip is not lossless)
        return B.color_jitter(
            x, order, factor(bright, u[:, 0]), factor(con, u[:, 1]), factor(sat, u[:, 2]), (2 * u[:, 3] - 1) * hue if hue > 0 else None
        )


class CropFlip(Augmentation):
    """Supervised CIFAR view: RandomCrop(size, padding) with zero padding, horizontal flip."""

    def __init__(self, padding: int | None = None):
        self.padding = padding

    def _pad(self, size: int) -> int:
        return size // 8 if self.padding is None else self.padding

    def per_sample(self, size: int) -> v2.Transform:
        return v2.Compose([v2.RandomCrop(size, padding=self._pad(size)), v2.RandomHorizontalFlip()])

    def batched(self, x: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
        return _crop_flip(x, generator, size, self._pad(size))


def _crop_flip(x: torch.Tensor, g: torch.Generator, size: int, pad: int) -> torch.Tensor:
    n, _, h, w = x.shape
    top, left = B.random_crop_params(g, n, h, w, size, pad)
    side = torch.full_like(top, size)
    x = B.resized_crop(torch.nn.functional.pad(x, (pad, pad, pad, pad)), top, left, side, side, size, "nearest")
    return B.where_b(_rand(g, n) < 0.5, x.flip(-1), x)


def _policy_table(policies, space, height: int, width: int, device) -> tuple[torch.Tensor, ...]:
    """(P, 2) op ids, probabilities, magnitudes, signed flags of torchvision AutoAugment policies."""
    ops: list[list] = []
    probs: list[list] = []
    mags: list[list] = []
    signed: list[list] = []
    for policy in policies:
        row: tuple[list, list, list, list] = ([], [], [], [])
        for name, p, idx in policy:
            fn, is_signed = space[name]
            m = fn(10, height, width)
            row[0].append(B.OP_IDS[name])
            row[1].append(float(p))
            row[2].append(0.0 if m is None else float(m[idx]))
            row[3].append(bool(is_signed and m is not None))
        for acc, r in zip((ops, probs, mags, signed), row):
            acc.append(r)
    return (
        torch.tensor(ops, device=device),
        torch.tensor(probs, device=device, dtype=torch.float64),
        torch.tensor(mags, device=device, dtype=torch.float64),
        torch.tensor(signed, device=device),
    )


def torchvision_op_value(op: torch.Tensor, magnitude: torch.Tensor) -> torch.Tensor:
    """torchvision's ``_apply_image_or_video_transform`` magnitudes -> PIL op values
    (:func:`ltcl_lightning.data.batched.apply_op`): shear tan(atan(m)) = m, translation -int(m)
    pixels (torchvision's translate moves the content right / down), enhance factors 1 + m,
    Posterize int(m) bits, Solarize threshold 255 m."""
    ids = B.OP_IDS
    v = magnitude.double()
    v = torch.where((op == ids["TranslateX"]) | (op == ids["TranslateY"]), -torch.trunc(v), v)
    v = torch.where((op >= ids["Brightness"]) & (op <= ids["Sharpness"]), 1.0 + v, v)
    v = torch.where(op == ids["Posterize"], torch.trunc(v), v)
    return torch.where(op == ids["Solarize"], 255.0 * v, v)


class AutoAugmentCutout(Augmentation):
    """ProCo / BalancedCL CIFAR classification view: crop + pad, flip, AutoAugment (CIFAR10
    policy, nearest, fill 0), Cutout of a (size/2)^2 black square kept inside the image.

    torchvision's AutoAugment CIFAR10 policy stands in for the DeepVoltaire copy of the official
    code (same 25 sub-policies; fill 0 instead of 128). Cutout is ``RandomErasing(p=1)`` of a
    (size/2)^2 square set to 0 (black) before ``Normalize``, as the official
    ``ToTensor -> Cutout -> Normalize``; the official hole's centre can sit near the border (the
    hole is then clipped), RandomErasing keeps the whole square inside the image."""

    def __init__(self):
        self._tables: dict = {}

    def per_sample(self, size: int) -> v2.Transform:
        side = size // 2
        area = (side * side) / (size * size)
        return v2.Compose(
            [
                v2.RandomCrop(size, padding=size // 8),
                v2.RandomHorizontalFlip(),
                v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
                v2.ToImage(),
                v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0),
            ]
        )

    def _table(self, h: int, w: int, device) -> tuple[torch.Tensor, ...]:
        key = (h, w, str(device))
        if key not in self._tables:  # built once per size and device: no host-to-device copy per step
            aa = v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10)
            self._tables[key] = _policy_table(aa._policies, aa._AUGMENTATION_SPACE, h, w, device)
        return self._tables[key]

    def batched(self, x: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
        x = _crop_flip(x, generator, size, size // 8)
        n, _, h, w = x.shape
        ops, probs, mags, signed = self._table(h, w, x.device)
        u = torch.rand(n, 5, generator=generator, device=generator.device, dtype=torch.float64)
        pid = (u[:, 0] * ops.shape[0]).long().clamp_max(ops.shape[0] - 1)
        for slot in range(2):
            op = ops[pid, slot]
            apply = u[:, 1 + slot] <= probs[pid, slot]
            mag = torch.where(signed[pid, slot] & (u[:, 3 + slot] <= 0.5), -mags[pid, slot], mags[pid, slot])
            x = B.where_b(apply, B.apply_op(x, op, torchvision_op_value(op, mag)), x)
        # RandomErasing: a side x side square inside the image, uniform position
        side = size // 2
        v = _rand(generator, n, 2)
        top = (v[:, 0] * (h - side + 1)).floor().long()
        left = (v[:, 1] * (w - side + 1)).floor().long()
        return B.box_fill(x, top, left, top + side, left + side, 0.0)


class RandAugmentView(Augmentation):
    """ImageNet / iNaturalist classification view: RandomResizedCrop, flip, ColorJitter(0.4, 0.4,
    0.4, 0), RandAugment(num_ops, magnitude) (torchvision, 31 bins, nearest, fill 0)."""

    def __init__(self, num_ops: int = 2, magnitude: int = 10):
        if num_ops < 0 or not 0 <= magnitude < 31:
            raise ValueError(f"num_ops must be >= 0 and magnitude in [0, 30], got {num_ops}, {magnitude}")
        self.num_ops = num_ops
        self.magnitude = magnitude
        self._tables: dict = {}

    def per_sample(self, size: int) -> v2.Transform:
        return v2.Compose(
            [
                v2.RandomResizedCrop(size, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(0.4, 0.4, 0.4, 0.0),
                v2.RandAugment(num_ops=self.num_ops, magnitude=self.magnitude),
            ]
        )

    def _table(self, h: int, w: int, device):
        key = (h, w, str(device))
        if key not in self._tables:
            space = v2.RandAugment._AUGMENTATION_SPACE
            ops, mags, signed = [], [], []
            for name, (fn, is_signed) in space.items():
                m = fn(31, h, w)
                ops.append(B.OP_IDS[name])
                mags.append(0.0 if m is None else float(m[self.magnitude]))
                signed.append(bool(is_signed and m is not None))
            self._tables[key] = (
                torch.tensor(ops, device=device),
                torch.tensor(mags, device=device, dtype=torch.float64),
                torch.tensor(signed, device=device),
            )
        return self._tables[key]

    _BASE = SimCLRAugment(scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.4, 0.0), jitter_p=1.0, grayscale_p=0.0)

    def batched(self, x: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
        return self._randaugment(self._BASE.batched(x, generator, size), generator)

    def batched_list(self, images: list[torch.Tensor], generator: torch.Generator, host: torch.Generator, size: int) -> torch.Tensor:
        return self._randaugment(self._BASE.batched_list(images, generator, host, size), generator)

    def _randaugment(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        ops, mags, signed = self._table(h, w, x.device)
        for _ in range(self.num_ops):
            u = torch.rand(n, 2, generator=generator, device=generator.device, dtype=torch.float64)
            k = (u[:, 0] * ops.shape[0]).long().clamp_max(ops.shape[0] - 1)
            mag = torch.where(signed[k] & (u[:, 1] <= 0.5), -mags[k], mags[k])
            x = B.apply_op(x, ops[k], torchvision_op_value(ops[k], mag))
        return x


class EvalView(Augmentation):
    """Test-time view: optional Resize(resize) (shorter side, bilinear, antialias) +
    CenterCrop(size) (ImageNet: 256 -> 224); CIFAR / Digits: the image as it is."""

    def __init__(self, resize: int | None = None):
        self.resize = resize

    def per_sample(self, size: int) -> v2.Transform:
        if self.resize is None:
            return v2.Identity()
        return v2.Compose([v2.Resize(self.resize, antialias=True), v2.CenterCrop(size)])

    def batched(self, x: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
        n, _, h, w = x.shape
        if self.resize is None:
            if (h, w) != (size, size):
                raise ValueError(f"EvalView without resize expects {size}x{size} images, got {h}x{w}")
            return x
        # torchvision's Resize(int): the shorter side to `resize`, the longer int(resize * long / short)
        if w <= h:
            rw, rh = self.resize, int(self.resize * h / w)
        else:
            rh, rw = self.resize, int(self.resize * w / h)
        top, left = int(round((rh - size) / 2.0)), int(round((rw - size) / 2.0))
        zero = torch.zeros(n, dtype=torch.long, device=x.device)
        x = B.resized_crop(x, zero, zero, zero + h, zero + w, (rh, rw), "bilinear")
        return x[:, :, top : top + size, left : left + size]

    def batched_list(self, images: list[torch.Tensor], generator: torch.Generator, host: torch.Generator, size: int) -> torch.Tensor:
        if self.resize is None:
            return super().batched_list(images, generator, host, size)
        return torch.cat([self.batched(im[None].float(), generator, size) for im in images])
