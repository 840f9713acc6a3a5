"""Backbones by name. Each returns pooled features (no classifier) and knows its width.

- ``resnet18_cifar``: ResNet-18 with the CIFAR stem (3x3 stride 1, no max-pool), 512-d
  (SDCLR, BoostedCL). Kaiming-normal (fan_out) convs, BN weight 1 / bias 0.
- ``resnet32_cifar``: the LDAM-DRW ResNet-32 (3 stages of 5 BasicBlocks, 16/32/64 channels,
  option-A shortcuts), 64-d (ProCo, BalancedCL on CIFAR).
- ``resnet50``, ``resnext50_32x4d``: torchvision models without ``fc``, 2048-d, from scratch.
- ``tiny``: a 3-conv network for tests and the offline demo, 64-d.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, shortcut: str = "B"):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut_pad = 0
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            if shortcut == "A":  # LDAM ResNet-32: subsample + zero-pad channels, no parameters
                self.shortcut_pad = planes - in_planes
            else:
                self.downsample = nn.Sequential(
                    nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes)
                )
        self.stride = stride

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            return self.downsample(x)
        if self.shortcut_pad:
            x = x[:, :, :: self.stride, :: self.stride]
            p = self.shortcut_pad // 2
            return F.pad(x, (0, 0, 0, 0, p, self.shortcut_pad - p))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self._shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, widths: list[int], blocks: list[int], strides: list[int], shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        layers = []
        in_planes = widths[0]
        for i, (w, n, s) in enumerate(zip(widths, blocks, strides)):
            stage = []
            for j in range(n):
                stage.append(BasicBlock(in_planes, w, s if j == 0 else 1, shortcut))
                in_planes = w
            layers.append(nn.Sequential(*stage))
        self.layers = nn.ModuleList(layers)
        self.out_dim = in_planes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        for layer in self.layers:
            x = layer(x)
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)


class TinyNet(nn.Module):
    """Three 3x3 convs (32, 64, 64 channels; strides 1, 2, 2) and global pooling."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(inplace=True),
        )
        self.out_dim = 2 * width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flatten(F.adaptive_avg_pool2d(self.net(x), 1), 1)


class TorchvisionTrunk(nn.Module):
    """A torchvision ResNet/ResNeXt with ``fc`` replaced by identity (2048-d pooled features)."""

    def __init__(self, name: str):
        super().__init__()
        self.net = getattr(torchvision.models, name)(weights=None)
        self.out_dim = self.net.fc.in_features
        self.net.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "resnet18_cifar": lambda: CifarResNet([64, 128, 256, 512], [2, 2, 2, 2], [1, 2, 2, 2], shortcut="B"),
    "resnet32_cifar": lambda: CifarResNet([16, 32, 64], [5, 5, 5], [1, 2, 2], shortcut="A"),
    "resnet50": lambda: TorchvisionTrunk("resnet50"),
    "resnext50_32x4d": lambda: TorchvisionTrunk("resnext50_32x4d"),
    "tiny": lambda: TinyNet(),
}


def build_backbone(name: str | nn.Module) -> nn.Module:
    """A backbone by name, or a given module; ``module.out_dim`` is its feature width."""
    if isinstance(name, nn.Module):
        if not isinstance(getattr(name, "out_dim", None), int):
            raise ValueError(f"a backbone module must tell its feature width as an int `out_dim`; {type(name).__name__} does not")
        return name
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)}")
    return BACKBONES[name]()
