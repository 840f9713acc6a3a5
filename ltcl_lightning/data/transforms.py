"""View transforms, built on ``torchvision.transforms.v2`` and the augmentation objects of
:mod:`ltcl_lightning.data.augment`.

A datamodule's ``train_views`` is a list with one entry per view: a preset name from
:data:`PRESETS` (it names an :class:`~ltcl_lightning.data.augment.Augmentation`), an
``Augmentation`` object, or any callable (worker path only). Views take the image size and the
normalisation from the datamodule, so the same name means the same recipe at 8, 32 or 224 px.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Union

import torch
from torchvision.transforms import InterpolationMode, v2

from ltcl_lightning.data.augment import Augmentation, AutoAugmentCutout, CropFlip, EvalView, Interpolation, RandAugmentView, SimCLRAugment

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
INAT_MEAN = (0.466, 0.471, 0.380)
INAT_STD = (0.195, 0.194, 0.192)

View = Union[str, Augmentation, Callable]  # noqa: UP007  # typing.Union: the form jsonargparse reads in every version


def _finish(mean: Sequence[float] | None, std: Sequence[float] | None) -> list:
    out: list = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if mean is not None and std is not None:
        out.append(v2.Normalize(mean=list(mean), std=list(std)))
    return out


def _with_finish(aug: Augmentation, size: int, mean, std) -> v2.Compose:
    t = aug.per_sample(size)
    ops = list(t.transforms) if isinstance(t, v2.Compose) else [] if isinstance(t, v2.Identity) else [t]
    return v2.Compose([*ops, *_finish(mean, std)])


def simclr_augmentation(
    size: int,
    mean: Sequence[float] | None = IMAGENET_MEAN,
    std: Sequence[float] | None = IMAGENET_STD,
    scale: tuple[float, float] = (0.08, 1.0),
    interpolation: InterpolationMode = InterpolationMode.BILINEAR,
    blur: bool = False,
    flip: bool = True,
) -> v2.Compose:
    """SimCLR augmentation (spec data_and_eval.md section 4): crop, flip, jitter p 0.8, grey p 0.2."""
    mode: Interpolation = "bicubic" if interpolation == InterpolationMode.BICUBIC else "bilinear"
    return _with_finish(SimCLRAugment(scale=scale, interpolation=mode, blur=blur, flip=flip), size, mean, std)


def crop_flip(size: int, mean=CIFAR_MEAN, std=CIFAR_STD, padding: int | None = None) -> v2.Compose:
    """Supervised CIFAR-style view: random crop with padding, flip."""
    return _with_finish(CropFlip(padding), size, mean, std)


def autoaugment_cutout(size: int, mean=CIFAR_MEAN, std=CIFAR_STD) -> v2.Compose:
    """ProCo/BalancedCL CIFAR classification view (see :class:`~ltcl_lightning.data.augment.AutoAugmentCutout`)."""
    return _with_finish(AutoAugmentCutout(), size, mean, std)


def randaugment_view(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """ImageNet/iNat classification view: RandomResizedCrop, flip, jitter, RandAugment(n=2, m=10)."""
    return _with_finish(RandAugmentView(), size, mean, std)


def eval_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize: int | None = None) -> v2.Compose:
    """Test-time transform: optional Resize(resize) + CenterCrop(size) (ImageNet: 256 -> 224)."""
    return _with_finish(EvalView(resize), size, mean, std)


#: preset name -> the augmentation object it names
PRESETS: dict[str, Callable[[], Augmentation]] = {
    "simclr": lambda: SimCLRAugment(),
    # SDCLR / BCL CIFAR recipe: scale (0.1, 1), bicubic
    "simclr_bicubic": lambda: SimCLRAugment(scale=(0.1, 1.0), interpolation="bicubic"),
    # SDCLR ImageNet recipe: bicubic, Gaussian blur p 0.5
    "simclr_blur": lambda: SimCLRAugment(interpolation="bicubic", blur=True),
    "crop_flip": lambda: CropFlip(),
    "autoaugment_cutout": lambda: AutoAugmentCutout(),
    "randaugment": lambda: RandAugmentView(),
    "eval": lambda: EvalView(),
    # small real images (Digits, 8x8): gentle crops, no flips (digits are not mirror-symmetric)
    "digits": lambda: SimCLRAugment(scale=(0.5, 1.0), ratio=(0.8, 1.25), flip=False, jitter=(0.4, 0.4, 0.0, 0.0), grayscale_p=0.0),
}


def resolve_view(view: View) -> Augmentation | Callable:
    """A preset name -> its :class:`Augmentation`; objects and callables pass through."""
    if isinstance(view, str):
        if view not in PRESETS:
            raise ValueError(f"unknown view preset {view!r}; choose one of {sorted(PRESETS)} or pass an Augmentation")
        return PRESETS[view]()
    if isinstance(view, Augmentation) or callable(view):
        return view
    raise TypeError(f"a view is a preset name, an Augmentation or a callable, got {type(view).__name__}")


def build_view(view: View, size: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> Callable:
    """The worker-path transform of a view: the augmentation's ``per_sample`` then
    ``ToImage, ToDtype(scale), Normalize``; a plain callable is used as it is."""
    aug = resolve_view(view)
    if isinstance(aug, Augmentation):
        return _with_finish(aug, size, mean, std)
    return aug


class MultiView:
    """Applies one transform per view to the same image; returns the list of views."""

    def __init__(self, transforms: Sequence[Callable]):
        if len(transforms) == 0:
            raise ValueError("at least one view transform is needed")
        self.transforms = list(transforms)

    def __call__(self, img) -> list[torch.Tensor]:
        return [t(img) for t in self.transforms]

    def __repr__(self) -> str:
        return f"MultiView({self.transforms!r})"
