"""BoostedCL's memorisation-boosted augmentation (Zhou et al., ICML 2022, "Contrastive Learning
with Boosted Memorization", arXiv 2205.12693) and the datamodules that serve it.

Specification: ``boosted_cl.md`` sections b, h and j. Each training item gets the
SimCLR CIFAR augmentation (crop scale (0.1, 1), bicubic) followed by a RandAugment whose
strength comes from the sample's weight ``w`` in [0, 1] (large momentum loss = hard to
memorise = large ``w``):

=========  ====  ==========================  ===========
variant    k     magnitude m (of 30)         op prob p
=========  ====  ==========================  ===========
BCL-I      1     10 + (S - 10) w             w
BCL-D      >= 2  5 + (S - 5) w u             w
=========  ====  ==========================  ===========

with ``S = rand_strength`` (30) and one ``u ~ U[0, 1)`` per item shared by both views. ``k`` ops
are drawn with replacement from the 15-op list and each is applied independently with
probability ``p``; the op value is ``v = m / 30 * (max - min) + min``.

The weights live in a float32 tensor in shared memory, created before any loader worker
starts and updated **in place** (:meth:`BoostedIndexedDataset.set_sample_weights`), so workers
see new weights in the next epoch even with ``persistent_workers=True``. (A plain numpy
attribute, as in the official code, is only seen by freshly forked workers: with persistent
workers BCL silently becomes SimCLR, spec section h.)

Deliberate differences from the official code (MediaBrain-SJTU/BCL ``a2342f8``):

- The pipeline is built once, not per item; all randomness comes from torch's RNG, which
  the DataLoader seeds per worker (the official code's numpy draws repeat across workers on
  torch < 1.9, quirk 12).
- BCL-D draws ``u`` as a scalar (the official ``np.random.rand(1)`` breaks on numpy >= 2,
  quirk 1).
- Cutout's centre is uniform over the image (the official ``np.random.uniform(w)`` draws from
  ``[1, w)``: same thing up to one pixel).
- At ``w = 0`` no random number is drawn for the RandAugment stage, so a ``w = 0`` item is
  bit-identical to the plain SimCLR augmentation under the same seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, TypeVar

import numpy as np
import PIL.Image
import PIL.ImageDraw
import PIL.ImageEnhance
import PIL.ImageOps
import torch
from torch.utils.data import Dataset
from torchvision.transforms import InterpolationMode, v2

from ltcl_lightning.data import batched as B
from ltcl_lightning.data.augment import Interpolation, SimCLRAugment
from ltcl_lightning.data.base import IndexedDataset
from ltcl_lightning.data.cifar import CIFAR10LTDataModule, CIFAR100LTDataModule
from ltcl_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, _finish

#: RandAugment magnitudes are on a 0..30 scale (``v = m / 30 * (max - min) + min``)
MAX_MAGNITUDE = 30.0
_Num = TypeVar("_Num", float, torch.Tensor)
_AFFINE = PIL.Image.Transform.AFFINE
_CUTOUT_FILL = (125, 123, 114)


# ----- the 15 ops (spec section b table; official randaug.py) ------------------------------
# Geometric ops take ``sign`` (+1 / -1, drawn with probability 1/2); the others ignore it.
def _shear_x(img, v, sign, r):
    return img.transform(img.size, _AFFINE, (1, sign * v, 0, 0, 1, 0))


def _shear_y(img, v, sign, r):
    return img.transform(img.size, _AFFINE, (1, 0, 0, sign * v, 1, 0))


def _translate_x(img, v, sign, r):
    return img.transform(img.size, _AFFINE, (1, 0, sign * v * img.size[0], 0, 1, 0))


def _translate_y(img, v, sign, r):
    return img.transform(img.size, _AFFINE, (1, 0, 0, 0, 1, sign * v * img.size[1]))


def _rotate(img, v, sign, r):
    return img.rotate(sign * v)


def _auto_contrast(img, v, sign, r):
    return PIL.ImageOps.autocontrast(img)


def _invert(img, v, sign, r):
    return PIL.ImageOps.invert(img)


def _equalize(img, v, sign, r):
    return PIL.ImageOps.equalize(img)


def _solarize(img, v, sign, r):
    return PIL.ImageOps.solarize(img, v)


def _posterize(img, v, sign, r):
    return PIL.ImageOps.posterize(img, max(1, int(v)))


def _contrast(img, v, sign, r):
    return PIL.ImageEnhance.Contrast(img).enhance(v)


def _color(img, v, sign, r):
    return PIL.ImageEnhance.Color(img).enhance(v)


def _brightness(img, v, sign, r):
    return PIL.ImageEnhance.Brightness(img).enhance(v)


def _sharpness(img, v, sign, r):
    return PIL.ImageEnhance.Sharpness(img).enhance(v)


def _cutout(img, v, sign, r):
    """A ``v * width`` square of grey (125, 123, 114) centred at a uniform random pixel."""
    if v <= 0:
        return img
    side = v * img.size[0]
    w, h = img.size
    cx, cy = r[0] * w, r[1] * h
    x0, y0 = int(max(0.0, cx - side / 2.0)), int(max(0.0, cy - side / 2.0))
    x1, y1 = min(w, x0 + side), min(h, y0 + side)
    img = img.copy()
    PIL.ImageDraw.Draw(img).rectangle((x0, y0, x1, y1), _CUTOUT_FILL)
    return img


#: (name, op(img, value, sign, (r0, r1)), min, max): the official list, Identity and
#: SamplePairing commented out there too (its comment says 16 ops; there are 15).
RANDAUG_OPS: tuple[tuple[str, Callable, float, float], ...] = (
    ("ShearX", _shear_x, 0.0, 0.6),
    ("ShearY", _shear_y, 0.0, 0.6),
    ("TranslateX", _translate_x, 0.0, 0.66),
    ("TranslateY", _translate_y, 0.0, 0.66),
    ("Rotate", _rotate, 0.0, 60.0),
    ("AutoContrast", _auto_contrast, 0.0, 1.0),
    ("Invert", _invert, 0.0, 1.0),
    ("Equalize", _equalize, 0.0, 1.0),
    ("Solarize", _solarize, 0.0, 110.0),
    ("Posterize", _posterize, 4.0, 8.0),
    ("Contrast", _contrast, 0.1, 1.9),
    ("Color", _color, 0.1, 1.9),
    ("Brightness", _brightness, 0.1, 1.9),
    ("Sharpness", _sharpness, 0.1, 1.9),
    ("Cutout", _cutout, 0.0, 0.4),
)


def op_value(magnitude: _Num, lo: _Num, hi: _Num) -> _Num:
    """``v = m / 30 * (max - min) + min`` (official ``RandAugment_prob``); floats or tensors."""
    return magnitude / MAX_MAGNITUDE * (hi - lo) + lo


class ProbRandAugment:
    """RandAugment with per-call magnitude and per-op probability (official ``RandAugment_prob``).

    ``num_ops`` ops are drawn with replacement; each is applied with probability ``prob``.
    Works on PIL images. All random numbers come from torch's global RNG (one draw per call).
    """

    def __init__(self, num_ops: int, ops: Sequence[tuple[str, Callable, float, float]] = RANDAUG_OPS):
        if num_ops < 1:
            raise ValueError(f"num_ops must be >= 1, got {num_ops}")
        self.num_ops = num_ops
        self.ops = list(ops)

    def __call__(self, img, magnitude: float, prob: float):
        if prob <= 0.0:
            return img
        k, n_ops = self.num_ops, len(self.ops)
        # per drawn op: which op, apply?, sign, two cutout coordinates
        r = torch.rand(k, 5).tolist()
        for choice, coin, sign, rx, ry in r:
            if coin >= prob:
                continue
            name, op, lo, hi = self.ops[min(int(choice * n_ops), n_ops - 1)]
            img = op(img, op_value(magnitude, lo, hi), 1.0 if sign < 0.5 else -1.0, (rx, ry))
        return img


#: op names of RANDAUG_OPS -> ids of the batched op bank (``data/batched.py``)
_BATCHED_IDS = [B.OP_IDS[name] for name, *_ in RANDAUG_OPS]
_SIGNED = {"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"}


def _op_tables(device: torch.device, tables: dict) -> tuple[torch.Tensor, ...]:
    key = str(device)
    if key not in tables:  # per-device tables, built once (no host-to-device copy per step)
        tables[key] = (
            torch.tensor(_BATCHED_IDS, device=device),
            torch.tensor([lo for _, _, lo, _ in RANDAUG_OPS], dtype=torch.float64, device=device),
            torch.tensor([hi for _, _, _, hi in RANDAUG_OPS], dtype=torch.float64, device=device),
            torch.tensor([name in _SIGNED for name, *_ in RANDAUG_OPS], device=device),
            torch.tensor(_CUTOUT_FILL, dtype=torch.float32, device=device),
        )
    return tables[key]


def boosted_op(
    x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sign: torch.Tensor, rx: torch.Tensor, ry: torch.Tensor, tables: dict
) -> torch.Tensor:
    """Op ``RANDAUG_OPS[k[i]]`` with value ``v[i]``, sign ``sign[i]`` (+-1) and cutout centre
    (rx[i], ry[i]) applied to image i: the batched form of ``op(img, v, sign, (rx, ry))``."""
    _, _, h, w = x.shape
    ids, _, _, signed, grey = _op_tables(x.device, tables)
    op = ids[k]
    v = v.double()
    # PIL units: geometric ops signed, translations a fraction of the size, posterize >= 1 bit
    value = torch.where(signed[k], sign.double() * v, v)
    value = torch.where(op == B.OP_IDS["TranslateX"], value * w, torch.where(op == B.OP_IDS["TranslateY"], value * h, value))
    value = torch.where(op == B.OP_IDS["Posterize"], v.trunc().clamp_min(1.0), value)
    # Cutout as _cutout: a v * width square at the centre (rx w, ry h); PIL's rectangle includes
    # its far corner (columns int(x0) .. int(x1)); nothing at v <= 0
    side = v * w
    x0 = (rx.double() * w - side / 2).clamp_min(0.0).trunc()
    y0 = (ry.double() * h - side / 2).clamp_min(0.0).trunc()
    x1 = torch.minimum(x0 + side, torch.full_like(x0, float(w))).trunc()
    y1 = torch.minimum(y0 + side, torch.full_like(y0, float(h))).trunc()
    box = torch.stack([y0, x0, y1 + 1, x1 + 1], 1).long()
    box = torch.where((v > 0)[:, None], box, torch.zeros_like(box))
    return B.apply_op(x, op, value, cutout=box, cutout_fill=grey)


def draw_boosted_ops(
    n: int, magnitude: torch.Tensor, prob: torch.Tensor, num_ops: int, generator: torch.Generator, tables: dict
) -> list[dict[str, Any]]:
    """The per-sample draws of :class:`ProbRandAugment` for ``n`` items (the same five uniforms
    per op as the per-sample path: choice, coin, sign, cutout x, cutout y): one dict per op slot
    with the op index ``k``, ``apply`` (coin < prob), ``value`` (``op_value(m, min, max)``),
    ``sign`` and the cutout centre."""
    dev = generator.device
    _, lo, hi, _, _ = _op_tables(dev, tables)
    n_ops = lo.numel()
    out = []
    for _ in range(num_ops):
        r = torch.rand(n, 5, generator=generator, device=dev, dtype=torch.float64)
        k = (r[:, 0] * n_ops).long().clamp_max(n_ops - 1)
        out.append(
            {
                "k": k,
                "apply": r[:, 1] < prob,
                "value": op_value(magnitude.double(), lo[k], hi[k]),
                "sign": torch.where(r[:, 2] < 0.5, 1.0, -1.0).double(),
                "rx": r[:, 3],
                "ry": r[:, 4],
            }
        )
    return out


def prob_randaugment_batched(
    x: torch.Tensor, magnitude: torch.Tensor, prob: torch.Tensor, num_ops: int, generator: torch.Generator, tables: dict
) -> torch.Tensor:
    """:class:`ProbRandAugment` for a batch: per sample its own magnitude, probability and op draws."""
    for d in draw_boosted_ops(x.shape[0], magnitude, prob, num_ops, generator, tables):
        out = boosted_op(x, d["k"], d["value"], d["sign"], d["rx"], d["ry"], tables)
        x = B.where_b(d["apply"], out, x)
    return x


class BoostedViews:
    """Two views of one image: SimCLR base + :class:`ProbRandAugment` driven by the weight ``w``.

    ``rand_k == 1`` is BCL-I (m = 10 + (S - 10) w), ``rand_k >= 2`` BCL-D (m = 5 + (S - 5) w u
    with one ``u ~ U[0, 1)`` per item, shared by both views); ``p = w`` in both.
    """

    def __init__(
        self,
        size: int = 32,
        rand_k: int = 1,
        rand_strength: float = 30.0,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        crop_scale: tuple[float, float] = (0.1, 1.0),
        interpolation: InterpolationMode = InterpolationMode.BICUBIC,
        num_views: int = 2,
    ):
        if rand_k < 1:
            raise ValueError(f"rand_k must be >= 1 (1 = BCL-I, 2 = BCL-D), got {rand_k}")
        if not 0 < rand_strength <= MAX_MAGNITUDE:
            raise ValueError(f"rand_strength must be in (0, 30] (the RandAugment scale), got {rand_strength}")
        if rand_k == 1 and rand_strength < 10:
            raise ValueError(f"BCL-I (rand_k=1) maps w to 10 + (rand_strength - 10) w: rand_strength must be >= 10, got {rand_strength}")
        if rand_k >= 2 and rand_strength < 5:
            raise ValueError(f"BCL-D (rand_k>=2) maps w to 5 + (rand_strength - 5) w u: rand_strength must be >= 5, got {rand_strength}")
        self.rand_k = rand_k
        self.rand_strength = float(rand_strength)
        self.num_views = num_views
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self.interpolation: Interpolation = "bicubic" if interpolation == InterpolationMode.BICUBIC else "bilinear"
        self._tables: dict = {}
        # the SimCLR CIFAR augmentation of the reference (spec data_and_eval.md section 4) on PIL
        self.base = v2.Compose(
            [
                v2.RandomResizedCrop(size, scale=crop_scale, interpolation=interpolation, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                v2.RandomGrayscale(p=0.2),
            ]
        )
        self.randaug = ProbRandAugment(rand_k)
        self.finish = v2.Compose(_finish(mean, std))

    @property
    def diverse(self) -> bool:
        return self.rand_k != 1

    def magnitude(self, w: float, u: float = 0.0) -> float:
        """RandAugment magnitude of an item with weight ``w`` (and BCL-D draw ``u``)."""
        if self.diverse:
            return 5.0 + (self.rand_strength - 5.0) * w * u
        return 10.0 + (self.rand_strength - 10.0) * w

    @staticmethod
    def probability(w: float) -> float:
        return w

    def __call__(self, img, w: float) -> list[torch.Tensor]:
        w = float(w)
        if not 0.0 <= w <= 1.0:  # also rejects NaN
            raise ValueError(f"sample weight must be in [0, 1], got {w}")
        if w > 0.0:
            u = float(torch.rand(())) if self.diverse else 0.0
            m, p = self.magnitude(w, u), self.probability(w)
        views = []
        for _ in range(self.num_views):
            x = self.base(img)
            if w > 0.0:
                x = self.randaug(x, m, p)
            views.append(self.finish(x))
        return views

    def batched(self, x: torch.Tensor, w: torch.Tensor, generator: torch.Generator, size: int) -> list[torch.Tensor]:
        """The views of a batch ``x`` (uint8 values as float32, on the device) with per-sample
        weights ``w`` (B,): the batched SimCLR base for every view first, then the batched
        weight-driven RandAugment (at ``w = 0`` nothing is applied: the SimCLR recipe, and the
        base views are bit-identical to :class:`SimCLRAugment`'s under the same generator)."""
        base = SimCLRAugment(scale=self.crop_scale, interpolation=self.interpolation)
        views = [base.batched(x, generator, size) for _ in range(self.num_views)]
        w = w.to(torch.float64)
        u = torch.rand(x.shape[0], generator=generator, device=generator.device, dtype=torch.float64) if self.diverse else 0.0
        m = 5.0 + (self.rand_strength - 5.0) * w * u if self.diverse else 10.0 + (self.rand_strength - 10.0) * w
        return [prob_randaugment_batched(v, m, w, self.rand_k, generator, self._tables) for v in views]

    def __repr__(self) -> str:
        return f"BoostedViews(rand_k={self.rand_k}, rand_strength={self.rand_strength}, base={self.base!r})"


# ----- weights shared with the loader workers ---------------------------------------------------
class BoostedIndexedDataset(IndexedDataset):
    """An :class:`IndexedDataset` whose transform also gets the item's weight ``w``.

    ``sample_weights`` is a float32 tensor of the dataset's length in shared memory (zeros =
    plain SimCLR augmentation, as in the reference's first epoch).
    """

    def __init__(self, base: Dataset, targets: np.ndarray, transform: Callable, indices: np.ndarray | None = None):
        super().__init__(base, targets, transform, indices)
        # shared before any worker exists, so forked, spawned and persistent workers all map it
        self.sample_weights = torch.zeros(len(self), dtype=torch.float32).share_memory_()
        self._weights_np: np.ndarray | None = None

    @classmethod
    def from_indexed(cls, ds: IndexedDataset) -> BoostedIndexedDataset:
        """The same items as ``ds`` (same base, indices, targets and transform), with weights."""
        out = cls.__new__(cls)
        out.__dict__.update(ds.__dict__)
        out.sample_weights = torch.zeros(len(ds), dtype=torch.float32).share_memory_()
        out._weights_np = None
        return out

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_weights_np"] = None  # a numpy view would be pickled as a copy; rebuild it in the worker
        return state

    def set_sample_weights(self, weights: torch.Tensor) -> None:
        """Publish new weights to this process and its loader workers (in-place copy)."""
        weights = torch.as_tensor(weights).detach()
        if weights.shape != self.sample_weights.shape:
            raise ValueError(
                f"got {tuple(weights.shape)} sample weights for a training set of {len(self)} samples: "
                "the model's per-sample state and the data disagree (was the model built for another split?)"
            )
        if not torch.isfinite(weights).all() or weights.min() < 0 or weights.max() > 1:
            raise ValueError(f"sample weights must be finite and in [0, 1]; got min {weights.min()}, max {weights.max()}")
        self.sample_weights.copy_(weights.to("cpu", torch.float32))

    def weight(self, i: int) -> float:
        if self._weights_np is None:
            self._weights_np = self.sample_weights.numpy()
        return float(self._weights_np[i])

    def __getitem__(self, i: int):
        views = self.transform(self.load(i), self.weight(i))
        return i, views, int(self.targets[i])


class BoostedDataModuleMixin:
    """Turns a ``LongTailDataModule`` whose training set is an ``IndexedDataset`` into BoostedCL's:
    the training views are :class:`BoostedViews` driven by the per-sample weights.

    Worker backend: the training set becomes a :class:`BoostedIndexedDataset` (weights in
    shared memory). Device-resident backend (``device_resident=True``): the weights given to
    :meth:`set_sample_weights` are kept on the training device (copied there once per
    publication) and read by sample index in :meth:`resident_views`, on the device.

    Args (besides the datamodule's own; ``train_views`` is replaced by the boosted two views):
        rand_k: RandAugment ops per view: 1 = BCL-I, >= 2 = BCL-D.
        rand_strength: S, the largest magnitude (of 30).
        crop_scale: scale range of the SimCLR crop ((0.1, 1) in the CIFAR recipes).
    """

    rand_k: int
    rand_strength: float
    crop_scale: tuple[float, float]

    def __init__(self, *args, rand_k: int = 1, rand_strength: float = 30.0, crop_scale: Sequence[float] = (0.1, 1.0), **kwargs):
        _reject_train_views(kwargs)
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]
        if len(crop_scale) != 2 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must be (min, max) with 0 < min <= max <= 1, got {tuple(crop_scale)}")
        # validates rand_k / rand_strength early, at construction, not in the first worker
        BoostedViews(rand_k=rand_k, rand_strength=rand_strength)
        self.rand_k, self.rand_strength = rand_k, float(rand_strength)
        self.crop_scale = (float(crop_scale[0]), float(crop_scale[1]))
        self._weights: torch.Tensor | None = None
        self._weights_on: dict[str, torch.Tensor] = {}

    def train_transform(self) -> BoostedViews:  # type: ignore[override]
        # image_size, mean, std: the LongTailDataModule this mixin completes
        return BoostedViews(
            self.image_size,  # type: ignore[attr-defined]
            self.rand_k,
            self.rand_strength,
            self.mean,  # type: ignore[attr-defined]
            self.std,  # type: ignore[attr-defined]
            crop_scale=self.crop_scale,
        )

    @cached_property
    def boosted_views(self) -> BoostedViews:
        return self.train_transform()

    def build_datasets(self, stage: str) -> dict:
        out = super().build_datasets(stage)  # type: ignore[misc]
        train = out.get("train")
        if train is not None:
            if type(train) is not IndexedDataset:
                raise TypeError(f"{type(self).__name__} expects the parent to build an IndexedDataset, got {type(train).__name__}")
            out["train"] = BoostedIndexedDataset.from_indexed(train)
        return out

    def set_sample_weights(self, weights: torch.Tensor) -> None:
        """Publish BoostedCL's per-sample weights to the training set and its workers, or, on
        the device-resident path, to the device-side views."""
        train = self.datasets.get("train")  # type: ignore[attr-defined]
        if not isinstance(train, BoostedIndexedDataset):
            raise RuntimeError(f"{type(self).__name__}.setup('fit') has not built the training set yet")
        train.set_sample_weights(weights)  # validates (shape, range) and keeps the host copy
        self._weights = train.sample_weights
        self._weights_on = {}

    def weights_on(self, device: torch.device) -> torch.Tensor:
        """The published weights on ``device`` (zeros before the first publication)."""
        key = str(device)
        if key not in self._weights_on:
            train = self.datasets["train"]  # type: ignore[attr-defined]
            host = self._weights if self._weights is not None else train.sample_weights
            self._weights_on[key] = host.to(device)
        return self._weights_on[key]

    def resident_views(self, x: torch.Tensor, index: torch.Tensor, train: bool, generator: torch.Generator) -> list[torch.Tensor]:
        if not train:
            return super().resident_views(x, index, train, generator)  # type: ignore[misc]
        w = self.weights_on(x.device)[index]
        return self.boosted_views.batched(x, w, generator, self.image_size)  # type: ignore[attr-defined]


def _reject_train_views(kwargs: dict) -> None:
    # the CLI passes the parent's default; anything else would be silently ignored
    views = kwargs.get("train_views")
    if views is not None and [v if callable(v) else str(v) for v in views] != ["simclr", "simclr"]:
        raise ValueError(
            f"train_views={list(views)} would be ignored: BoostedCL's datamodules build their own two views "
            "(SimCLR base + weight-driven RandAugment; set rand_k, rand_strength, crop_scale instead)"
        )


class BoostedCIFAR100LTDataModule(BoostedDataModuleMixin, CIFAR100LTDataModule):  # type: ignore[misc]  # its own views
    """CIFAR-100-LT with BoostedCL's augmentation (``rand_k=1`` BCL-I, ``rand_k=2`` BCL-D).

    Same arguments as :class:`CIFAR100LTDataModule` (``train_views`` is replaced by the boosted
    two-view pipeline), plus ``rand_k``, ``rand_strength`` (30) and ``crop_scale`` ((0.1, 1)).
    """


class BoostedCIFAR10LTDataModule(BoostedDataModuleMixin, CIFAR10LTDataModule):  # type: ignore[misc]  # its own views
    """CIFAR-10-LT with BoostedCL's augmentation (see :class:`BoostedCIFAR100LTDataModule`)."""
