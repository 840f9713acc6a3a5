"""``ltcl export``: the backbone loads into torchvision (ResNet-18-CIFAR, ResNet-50) with identical
features, SDCLR exports its dense branch; and the ``ltcl`` entry point's first contact."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from quick_fit import fit_and_save

from ltcl_lightning.commands import main as ltcl
from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.methods.linear_probe import load_pretrained
from ltcl_lightning.methods.sdclr import SDCLR
from ltcl_lightning.methods.simclr import SimCLR
from ltcl_lightning.modules.backbones import TORCHVISION_EQUIVALENT


def _checkpoint(model, tmp_path) -> str:
    return fit_and_save(model, DigitsLTDataModule(batch_size=16, num_workers=0), tmp_path, name="m.ckpt")


@pytest.mark.parametrize("method,backbone", [(SimCLR, "resnet18_cifar"), (SDCLR, "resnet18_cifar"), (SimCLR, "resnet50")])
def test_export_loads_into_torchvision_with_identical_features(method, backbone, tmp_path):
    kwargs = {"prune_ratio": 0.5} if method is SDCLR else {}
    ckpt = _checkpoint(method(num_classes=10, backbone=backbone, proj_hidden_dim=32, proj_dim=16, **kwargs), tmp_path)
    info = ltcl(["export", ckpt, str(tmp_path / "out" / "backbone.pt")])
    saved = json.loads((tmp_path / "out" / "backbone.json").read_text())
    assert saved == info
    assert saved["method"].endswith(method.__name__) and saved["datamodule"].endswith("DigitsLTDataModule")
    assert (saved["mean"], saved["image_size"], saved["feature_dim"]) == ([0.3, 0.3, 0.3], 8, 512 if "18" in backbone else 2048)
    net = TORCHVISION_EQUIVALENT[backbone][1]().eval()
    net.load_state_dict(torch.load(tmp_path / "out" / "backbone.pt", weights_only=True), strict=True)
    reference = load_pretrained(ckpt)[0].eval()  # SDCLR: backbone(x) is the dense branch
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(net(x), reference(x), rtol=0, atol=1e-5)
        if method is SDCLR:  # the pruned branch differs: the export is really the dense one
            assert not torch.allclose(reference(x, pruned=True), net(x), atol=1e-3)


def test_help_lists_every_command_and_version(capsys):
    ltcl(["--help"])
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "probe", "report", "export"):
        assert f"  {name} " in out, name
    ltcl(["--version"])
    assert capsys.readouterr().out.strip() == f"ltcl {__import__('ltcl_lightning').__version__}"


def test_report_and_help_start_without_lightning():
    code = (
        "import sys; from ltcl_lightning.commands import main; main(['--help'])\n"
        "try:\n    main(['report', '--help'])\nexcept SystemExit:\n    pass\n"
        "assert 'lightning' not in sys.modules and 'lightning.pytorch' not in sys.modules, 'lightning imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_timm_backbone_by_name_from_scratch():
    pytest.importorskip("timm")
    from ltcl_lightning.modules.backbones import build_backbone

    net = build_backbone("timm:resnet10t").eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, net.out_dim) and net.out_dim == 512
    model = SimCLR(num_classes=3, backbone="timm:resnet10t", proj_hidden_dim=16, proj_dim=8)
    assert model.feat_dim == 512 and model.hparams.backbone == "timm:resnet10t"
    with pytest.raises(ValueError, match="timm has no model 'resnet_nope'"):
        build_backbone("timm:resnet_nope")
