"""Backbones by name. Each returns pooled features (no classifier) and knows its width.

- ``resnet18_cifar``: torchvision's ResNet-18 with the CIFAR stem (``conv1`` 3x3 stride 1, no
  max-pool, no ``fc``), 512-d (SDCLR, BoostedCL): its ``state_dict`` is torchvision's. Kaiming-normal
  (fan_out) convs, BN weight 1 / bias 0. Checkpoints of the earlier layout (``layers.<i>.``
  instead of ``layer<i+1>.``) still load.
- ``resnet32_cifar``: the LDAM-DRW ResNet-32 (3 stages of 5 BasicBlocks, 16/32/64 channels,
  option-A shortcuts), 64-d (ProCo, BalancedCL on CIFAR).
- ``resnet50``, ``resnext50_32x4d``: torchvision models without ``fc``, 2048-d, from scratch.
- ``tiny``: a 3-conv network for tests and the offline demo, 64-d.
- ``timm:<name>``: any timm model, from scratch, classifier removed (the ``timm`` extra).
- any ``nn.Module`` with an int ``out_dim`` (its feature width), passed from Python.

``ltcl export`` writes ``resnet18_cifar`` / ``resnet50`` / ``resnext50_32x4d`` weights with
torchvision's keys (:func:`to_torchvision_state_dict`, :data:`TORCHVISION_EQUIVALENT`).
"""

from __future__ import annotations

from collections.abc import Callable

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
                self.downsample = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
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
        for w, n, s in zip(widths, blocks, strides):
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


class CifarResNet18(torchvision.models.ResNet):
    """torchvision's ResNet-18 with the CIFAR stem: ``conv1`` = 3x3 stride 1 (no bias), ``maxpool``
    and ``fc`` = identity, so ``forward`` returns the 512-d pooled features and the weights are
    torchvision's (``torchvision.models.resnet18()`` with the same three replacements loads them).

    The stem is re-initialised like every other convolution (Kaiming-normal, fan_out), as in the
    SDCLR / BoostedCL ResNet-18. A ``state_dict`` of the layout used before this class (the
    stages as ``layers.0`` ... ``layers.3``) is renamed on load (``layer1`` ... ``layer4``), so old
    checkpoints keep loading, SDCLR's masks and dual batch-norms included.
    """

    def __init__(self):
        super().__init__(torchvision.models.resnet.BasicBlock, [2, 2, 2, 2])
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
        self.maxpool = nn.Identity()  # the CIFAR stem has no max-pool
        self.fc = nn.Identity()  # features, no classifier
        self.out_dim = 512
        self._register_load_state_dict_pre_hook(_rename_legacy_stages)


def _rename_legacy_stages(state_dict, prefix, *args) -> None:
    """``<prefix>layers.<i>.`` (the earlier ResNet-18-CIFAR layout) -> ``<prefix>layer<i+1>.``."""
    head = prefix + "layers."
    for key in [k for k in state_dict if k.startswith(head)]:
        i, rest = key[len(head) :].split(".", 1)
        state_dict[f"{prefix}layer{int(i) + 1}.{rest}"] = state_dict.pop(key)


class TinyNet(nn.Module):
    """Three 3x3 convs (32, 64, 64 channels; strides 1, 2, 2) and global pooling."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * width, 2 * width, 3, 2, 1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=True),
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


class TimmBackbone(nn.Module):
    """Any timm model by name (``backbone: timm:resnet50d``), built from scratch (no weight
    download) without its classifier: pooled ``num_features``-d features. Needs the ``timm``
    extra (``pip install "ltcl-lightning[timm]"``)."""

    def __init__(self, model_name: str):
        super().__init__()
        try:
            import timm
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError(f"backbone 'timm:{model_name}' needs timm: pip install 'ltcl-lightning[timm]'") from None
        if model_name not in timm.list_models():
            close = timm.list_models(f"*{model_name[:6]}*")[:8]
            raise ValueError(f"timm has no model {model_name!r} (similar: {close})")
        self.net = timm.create_model(model_name, pretrained=False, num_classes=0)
        self.out_dim = int(self.net.num_features)  # type: ignore[arg-type]  # timm models tell their width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


BACKBONES: dict[str, Callable[[], nn.Module]] = {
    "resnet18_cifar": CifarResNet18,
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
    if name.startswith("timm:"):
        return TimmBackbone(name[len("timm:") :])
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {sorted(BACKBONES)} or 'timm:<model name>'")
    return BACKBONES[name]()


# ----- torchvision layout (ltcl export) ----------------------------------------------------------
def torchvision_resnet18_cifar() -> nn.Module:
    """``torchvision.models.resnet18()`` with the CIFAR stem set by hand, as a user would (``conv1``
    3x3 stride 1 without bias, ``maxpool`` = ``fc`` = identity): what ``ltcl export`` documents for
    ``resnet18_cifar`` weights (512-d pooled features)."""
    net = torchvision.models.resnet18(weights=None)
    net.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net


#: backbone name -> (torchvision constructor call that receives the exported weights, builder)
TORCHVISION_EQUIVALENT: dict[str, tuple[str, Callable[[], nn.Module]]] = {
    "resnet18_cifar": (
        "torchvision.models.resnet18(); conv1 = Conv2d(3, 64, 3, 1, 1, bias=False); maxpool = fc = Identity()",
        torchvision_resnet18_cifar,
    ),
    "resnet50": ("torchvision.models.resnet50(); fc = Identity()", lambda: _no_fc(torchvision.models.resnet50(weights=None))),
    "resnext50_32x4d": (
        "torchvision.models.resnext50_32x4d(); fc = Identity()",
        lambda: _no_fc(torchvision.models.resnext50_32x4d(weights=None)),
    ),
}


def _no_fc(net: nn.Module) -> nn.Module:
    net.fc = nn.Identity()
    return net


def to_torchvision_state_dict(name: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A ``resnet18_cifar`` / ``resnet50`` / ``resnext50_32x4d`` backbone's ``state_dict`` with
    the keys of the torchvision model (``TORCHVISION_EQUIVALENT``): ``resnet18_cifar`` already has
    them; the trunk's ``net.`` prefix of the other two goes."""
    if name not in TORCHVISION_EQUIVALENT:
        raise ValueError(f"backbone {name!r} has no torchvision equivalent (known: {sorted(TORCHVISION_EQUIVALENT)})")
    return dict(state) if name == "resnet18_cifar" else {k.removeprefix("net."): v for k, v in state.items()}
