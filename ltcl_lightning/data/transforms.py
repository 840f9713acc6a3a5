"""View transforms, built on ``torchvision.transforms.v2``.

A datamodule's ``train_views`` is a list with one entry per view: a preset name from
:data:`PRESETS` or any callable. Presets take the image size and the normalisation of the
dataset, so the same name means the same recipe at 8, 32 or 224 px.
"""

from __future__ import annotations

from typing import Callable, Sequence, Union

import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)
INAT_MEAN = (0.466, 0.471, 0.380)
INAT_STD = (0.195, 0.194, 0.192)

View = Union[str, Callable]


def _finish(mean: Sequence[float] | None, std: Sequence[float] | None) -> list:
    out: list = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if mean is not None and std is not None:
        out.append(v2.Normalize(mean=list(mean), std=list(std)))
    return out


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
    ops: list = [v2.RandomResizedCrop(size, scale=scale, interpolation=interpolation, antialias=True)]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    ops += [
        v2.RandomApply([v2.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        v2.RandomGrayscale(p=0.2),
    ]
    if blur:
        k = max(3, (size // 10) | 1)
        ops.append(v2.RandomApply([v2.GaussianBlur(k, sigma=(0.1, 2.0))], p=0.5))
    return v2.Compose(ops + _finish(mean, std))


def crop_flip(size: int, mean=CIFAR_MEAN, std=CIFAR_STD, padding: int | None = None) -> v2.Compose:
    """Supervised CIFAR-style view: random crop with padding, flip."""
    padding = size // 8 if padding is None else padding
    return v2.Compose([v2.RandomCrop(size, padding=padding), v2.RandomHorizontalFlip(), *_finish(mean, std)])


def autoaugment_cutout(size: int, mean=CIFAR_MEAN, std=CIFAR_STD) -> v2.Compose:
    """ProCo/BalancedCL CIFAR classification view: crop+pad, flip, AutoAugment (CIFAR10 policy),
    Cutout 16 px, then normalisation.

    torchvision's AutoAugment CIFAR10 policy stands in for the DeepVoltaire copy of the official
    code (same 25 sub-policies; fill 0 instead of 128). Cutout is a RandomErasing of a
    (size/2)^2 square set to 0 on the [0, 1] tensor, before ``Normalize`` (a black hole), as the
    official ``ToTensor -> Cutout -> Normalize``; the official hole's centre can sit near the
    border (the hole is then clipped), RandomErasing keeps the whole square inside the image.
    """
    side = size // 2
    area = (side * side) / (size * size)
    return v2.Compose(
        [
            v2.RandomCrop(size, padding=size // 8),
            v2.RandomHorizontalFlip(),
            v2.AutoAugment(v2.AutoAugmentPolicy.CIFAR10),
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.RandomErasing(p=1.0, scale=(area, area), ratio=(1.0, 1.0), value=0),
            v2.Normalize(mean=list(mean), std=list(std)),
        ]
    )


def randaugment_view(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> v2.Compose:
    """ImageNet/iNat classification view: RandomResizedCrop, flip, jitter, RandAugment(n=2, m=10)."""
    return v2.Compose(
        [
            v2.RandomResizedCrop(size, antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.4, 0.4, 0.4, 0.0),
            v2.RandAugment(num_ops=2, magnitude=10),
            *_finish(mean, std),
        ]
    )


def eval_transform(size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD, resize: int | None = None) -> v2.Compose:
    """Test-time transform: optional Resize(resize) + CenterCrop(size) (ImageNet: 256 -> 224)."""
    ops: list = []
    if resize is not None:
        ops += [v2.Resize(resize, antialias=True), v2.CenterCrop(size)]
    return v2.Compose(ops + _finish(mean, std))


#: name -> builder(size, mean, std)
PRESETS: dict[str, Callable[..., Callable]] = {
    "simclr": lambda size, mean, std: simclr_augmentation(size, mean, std),
    # SDCLR / BCL CIFAR recipe: scale (0.1, 1), bicubic
    "simclr_bicubic": lambda size, mean, std: simclr_augmentation(
        size, mean, std, scale=(0.1, 1.0), interpolation=InterpolationMode.BICUBIC
    ),
    # SDCLR ImageNet recipe: bicubic, Gaussian blur p 0.5
    "simclr_blur": lambda size, mean, std: simclr_augmentation(
        size, mean, std, interpolation=InterpolationMode.BICUBIC, blur=True
    ),
    "crop_flip": lambda size, mean, std: crop_flip(size, mean, std),
    "autoaugment_cutout": lambda size, mean, std: autoaugment_cutout(size, mean, std),
    "randaugment": lambda size, mean, std: randaugment_view(size, mean, std),
    "eval": lambda size, mean, std: eval_transform(size, mean, std),
    # small real images (Digits, 8x8): gentle crops, no flips (digits are not mirror-symmetric)
    "digits": lambda size, mean, std: v2.Compose(
        [
            v2.RandomResizedCrop(size, scale=(0.5, 1.0), ratio=(0.8, 1.25), antialias=True),
            v2.RandomApply([v2.ColorJitter(0.4, 0.4)], p=0.8),
            *_finish(mean, std),
        ]
    ),
}


def build_view(view: View, size: int, mean: Sequence[float] | None, std: Sequence[float] | None) -> Callable:
    if callable(view):
        return view
    if view not in PRESETS:
        raise ValueError(f"unknown view preset {view!r}; choose one of {sorted(PRESETS)} or pass a callable")
    return PRESETS[view](size, mean, std)


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
