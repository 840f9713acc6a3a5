"""The base by composition: the online probe as a child module, a backbone given as a module, the
declared number of views, and the named best-epoch record (old checkpoints still load)."""

import lightning.pytorch as pl
import pytest
import torch

from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.methods import CrossEntropy, SimCLR
from ltcl_lightning.modules.backbones import TinyNet
from ltcl_lightning.modules.heads import OnlineLinearProbe


def _trainer(tmp_path, **kw):
    return pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path, **kw
    )


def test_simclr_refuses_a_third_view(tmp_path):
    model = SimCLR(10, backbone="tiny")
    with pytest.raises(
        ValueError, match=r"SimCLR trains on 2 views per image, but the datamodule has train_views=\['digits', 'digits', 'digits'\]"
    ):
        _trainer(tmp_path, fast_dev_run=True).fit(model, DigitsLTDataModule(train_views=["digits"] * 3))
    batch = (torch.arange(2), [torch.randn(2, 3, 8, 8)] * 3, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="a training batch has 3 views"):
        model.training_step(batch, 0)


def test_backbone_module_and_probe_owns_its_group():
    net = TinyNet(width=8)
    model = SimCLR(10, backbone=net, probe_lr=0.05)
    assert model.backbone is net and model.feat_dim == 16 and "backbone" not in model.hparams
    assert isinstance(model.probe, OnlineLinearProbe)
    method_group, probe_group = model.parameter_groups()
    assert probe_group == {"params": [model.probe.weight, model.probe.bias], "lr": 0.05, "weight_decay": 0.0}
    others = [p for n, p in model.named_parameters() if not n.startswith("probe.")]
    assert len(method_group["params"]) == len(others) and all(a is b for a, b in zip(method_group["params"], others))
    with pytest.raises(ValueError, match="out_dim"):
        SimCLR(10, backbone=torch.nn.Conv2d(3, 4, 3))


def test_probe_keys_of_earlier_checkpoints_load():
    model = SimCLR(10, backbone="tiny")
    state = model.state_dict()
    assert {k for k in state if k.startswith("probe")} == {"probe.weight", "probe.bias"}  # the 0.1.0 names
    state["probe.weight"] = torch.full_like(state["probe.weight"], 0.5)
    model.load_state_dict(state, strict=True)
    assert torch.equal(model.probe.weight, torch.full_like(model.probe.weight, 0.5))


def test_best_epoch_record_is_named_and_old_positional_buffer_loads(tmp_path):
    dm = DigitsLTDataModule(batch_size=128)
    trainer = _trainer(tmp_path, max_epochs=1, callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)])
    model = CrossEntropy(10, backbone="tiny")
    trainer.fit(model, dm)
    ckpt = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert ckpt["best_val"] == model.best_val and ckpt["best_val"]["epoch"] == 0 and "best_val" not in ckpt["state_dict"]
    # the layout of ltcl_lightning 0.1.0: a float64 buffer [epoch, acc, mean_class_acc, many, medium, few, group_std]
    old = dict(ckpt)
    b = ckpt["best_val"]
    old["state_dict"] = {
        **ckpt["state_dict"],
        "best_val": torch.tensor(
            [b["epoch"], b["acc"], b["mean_class_acc"], b["many"], b["medium"], b["few"], b["group_std"]], dtype=torch.float64
        ),
    }
    del old["best_val"]
    torch.save(old, tmp_path / "old.ckpt")
    loaded = CrossEntropy.load_from_checkpoint(tmp_path / "old.ckpt")
    assert loaded.best_val == pytest.approx(model.best_val)
    resumed = CrossEntropy(10, backbone="tiny")  # and a resume from it (nothing left to train)
    _trainer(tmp_path, max_epochs=1).fit(resumed, dm, ckpt_path=str(tmp_path / "old.ckpt"))
    assert resumed.last_eval["val_best"] == pytest.approx(model.best_val)
    old["state_dict"]["best_val"] = torch.zeros(4, dtype=torch.float64)
    torch.save(old, tmp_path / "bad.ckpt")
    with pytest.raises(ValueError, match="best_val buffer has 4 entries; the ltcl_lightning 0.1.0 layout has 7"):
        CrossEntropy.load_from_checkpoint(tmp_path / "bad.ckpt")
