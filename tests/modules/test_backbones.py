"""``resnet18_cifar`` is torchvision's ResNet-18 with the CIFAR stem: torchvision's keys, the same
features as the earlier hand-written layout, and checkpoints of that layout (SDCLR's masks and dual
batch-norms included) still load."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torchvision
from quick_fit import fit_and_save

from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.methods.linear_probe import load_pretrained
from ltcl_lightning.methods.sdclr import SDCLR
from ltcl_lightning.modules.backbones import CifarResNet, build_backbone, torchvision_resnet18_cifar
from ltcl_lightning.modules.pruning import PrunableNetwork


def _legacy_resnet18():
    """The layout ``resnet18_cifar`` had before (stages in ``layers.0`` ... ``layers.3``)."""
    return CifarResNet([64, 128, 256, 512], [2, 2, 2, 2], [1, 2, 2, 2], shortcut="B")


def _x(seed=0):
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_resnet18_cifar_is_torchvision_resnet_with_torchvision_keys():
    net = build_backbone("resnet18_cifar")
    assert isinstance(net, torchvision.models.ResNet)
    ours = {k: v.shape for k, v in net.state_dict().items()}
    theirs = {k: v.shape for k, v in torchvision_resnet18_cifar().state_dict().items()}
    assert ours == theirs
    reference = torchvision_resnet18_cifar().eval()
    reference.load_state_dict(net.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(_x()), reference(_x()), rtol=0, atol=0)
    assert net.out_dim == 512 and net(_x()).shape == (3, 512)


def test_stem_is_initialised_like_the_other_convolutions():
    torch.manual_seed(0)
    w = build_backbone("resnet18_cifar").conv1.weight
    # Kaiming-normal, fan_out = 64 * 3 * 3: std sqrt(2 / 576) = 0.0589 (torchvision's default
    # for a fresh Conv2d, Kaiming-uniform with a = sqrt(5) on fan_in 27, would give 0.111)
    assert w.std().item() == pytest.approx(math.sqrt(2 / 576), rel=0.1)


def test_legacy_layout_loads_with_identical_features():
    torch.manual_seed(0)
    old = _legacy_resnet18()
    with torch.no_grad():  # non-trivial batch-norm statistics and affine parameters
        for m in old.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2), m.weight.uniform_(0.5, 1.5), m.bias.uniform_(-0.2, 0.2)
    assert any(k.startswith("layers.3.") for k in old.state_dict())
    new = build_backbone("resnet18_cifar")
    new.load_state_dict(old.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(new.eval()(_x(1)), old.eval()(_x(1)), rtol=0, atol=1e-6)


def test_legacy_sdclr_network_loads_masks_and_both_branches():
    torch.manual_seed(0)
    old = PrunableNetwork(_legacy_resnet18(), ratio=0.9)
    old.recompute_masks(0)
    new = PrunableNetwork(build_backbone("resnet18_cifar"), ratio=0.9)
    new.load_state_dict(old.state_dict(), strict=True)
    assert sorted(m.prune_mask.sum().item() for m in new.masked_convs().values()) == sorted(
        m.prune_mask.sum().item() for m in old.masked_convs().values()
    )
    old.eval(), new.eval()
    with torch.no_grad():
        for pruned in (False, True):
            torch.testing.assert_close(new(_x(2), pruned=pruned), old(_x(2), pruned=pruned), rtol=0, atol=1e-6)


def test_legacy_checkpoint_file_loads(tmp_path):
    """A whole SDCLR ``.ckpt`` with the earlier key names gives the same backbone."""
    model = SDCLR(num_classes=10, backbone="resnet18_cifar", proj_hidden_dim=32, proj_dim=16, prune_ratio=0.5)
    ckpt = fit_and_save(model, DigitsLTDataModule(batch_size=16, num_workers=0), tmp_path)
    saved = torch.load(ckpt, weights_only=False)
    saved["state_dict"] = {
        re.sub(r"\.layer([1-4])\.", lambda m: f".layers.{int(m.group(1)) - 1}.", k): v for k, v in saved["state_dict"].items()
    }
    assert any(".layers.0." in k for k in saved["state_dict"])
    legacy = tmp_path / "legacy.ckpt"
    torch.save(saved, legacy)
    a, b = load_pretrained(ckpt)[0].eval(), load_pretrained(str(legacy))[0].eval()
    with torch.no_grad():
        torch.testing.assert_close(b(_x(3)), a(_x(3)), rtol=0, atol=0)
        torch.testing.assert_close(b(_x(3), pruned=True), a(_x(3), pruned=True), rtol=0, atol=0)
