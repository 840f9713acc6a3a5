"""Baselines train, evaluate, and refuse data they do not match."""

import lightning.pytorch as pl
import pytest
import torch

from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.methods import CrossEntropy, SimCLR, SupCon
from ltcl_lightning.modules.backbones import build_backbone


def _trainer(tmp_path, **kw):
    return pl.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False, default_root_dir=tmp_path, **kw
    )


@pytest.mark.parametrize("cls", [SimCLR, SupCon, CrossEntropy])
def test_fit_validate_and_group_metrics(cls, tmp_path):
    dm = DigitsLTDataModule(batch_size=64)
    model = cls(10, backbone="tiny")
    trainer = _trainer(tmp_path, max_epochs=1, limit_train_batches=2)
    trainer.fit(model, dm)
    assert model.class_counts.tolist() == dm.class_counts  # taken from the data
    m = trainer.callback_metrics
    for k in ("val/acc", "val/many", "val/medium", "val/few", "val/group_std", "val/acc_best"):
        assert k in m
    assert model.last_eval["val"]["num_samples"] == 300
    # calibration is logged for the supervised classifier only; top-5 not for 10 classes
    assert ("val/ece" in m) == (cls is CrossEntropy) and "val/top5" not in m
    assert 0.0 <= float(model.last_eval["val"]["ece"]) <= 1.0


def test_num_classes_disagreeing_with_data(tmp_path):
    with pytest.raises(ValueError, match="num_classes=7 but the datamodule DigitsLTDataModule has 10"):
        _trainer(tmp_path, fast_dev_run=True).fit(SimCLR(7, backbone="tiny"), DigitsLTDataModule())


def test_class_counts_disagreeing_with_data(tmp_path):
    with pytest.raises(ValueError, match="differ from the datamodule"):
        _trainer(tmp_path, fast_dev_run=True).fit(CrossEntropy(10, backbone="tiny", class_counts=[5] * 10), DigitsLTDataModule())


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone 'resnet19'.*resnet18_cifar"):
        build_backbone("resnet19")


@pytest.mark.parametrize("name, dim, size", [("resnet18_cifar", 512, 32), ("resnet32_cifar", 64, 32), ("tiny", 64, 8)])
def test_backbone_widths(name, dim, size):
    net = build_backbone(name)
    assert net.out_dim == dim
    assert net(torch.zeros(2, 3, size, size)).shape == (2, dim)


def test_resnet32_has_option_a_shortcuts():
    net = build_backbone("resnet32_cifar")
    n_params = sum(p.numel() for p in net.parameters())
    # LDAM ResNet-32 for CIFAR-10 has 464,154 parameters; its fc (64 x 10 + 10) is not part of the trunk
    assert n_params == 464_154 - 650
    assert not any(isinstance(m, torch.nn.Conv2d) and m.kernel_size == (1, 1) for m in net.modules())


def test_logit_adjusted_ce_uses_prior(tmp_path):
    dm = DigitsLTDataModule(batch_size=64)
    model = CrossEntropy(10, backbone="tiny", logit_adjust_tau=1.0)
    _trainer(tmp_path, fast_dev_run=True).fit(model, dm)
    prior = torch.tensor(dm.class_counts, dtype=torch.float64)
    torch.testing.assert_close(model.class_prior, prior / prior.sum())


def test_schedule_epochs_follow_the_loader_with_max_steps_only(tmp_path):
    """max_steps without max_epochs: an epoch is still len(loader) steps (585 images / 128 = 5)."""
    from ltcl_lightning.optim.schedules import WarmupCosine

    model = SimCLR(
        10, backbone="tiny", lr_schedule=WarmupCosine(warmup_epochs=1, min_lr=0.0), optimizer=lambda p: torch.optim.SGD(p, lr=0.4)
    )
    trainer = _trainer(tmp_path, max_steps=6, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, DigitsLTDataModule(batch_size=128))
    lr = trainer.optimizers[0].param_groups[0]["lr"]
    # warm-up 5 steps, 2 epochs = 10 steps in all; step 6 (after 6 steps): cosine at (6 + 1 - 5) / (10 - 5)
    # (the official LambdaLR convention; before issue 13 this lagged one step: (6 - 5) / (10 - 5 - 1))
    import math

    assert lr == pytest.approx(0.4 * 0.5 * (1 + math.cos(math.pi * 0.4)))


def test_best_epoch_survives_resume(tmp_path):
    dm = DigitsLTDataModule(batch_size=128)
    model = CrossEntropy(10, backbone="tiny")
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=2,
        logger=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
        callbacks=[pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True)],
    )
    trainer.fit(model, dm)
    best = dict(model.last_eval["val_best"])
    resumed = CrossEntropy(10, backbone="tiny")
    trainer2 = _trainer(tmp_path, max_epochs=2)
    trainer2.fit(resumed, dm, ckpt_path=str(tmp_path / "last.ckpt"))  # nothing left to train
    assert resumed.last_eval["val_best"]["epoch"] == best["epoch"]
    assert resumed.last_eval["val_best"]["acc"] == pytest.approx(best["acc"])
    assert resumed.last_eval["val_best"]["few"] == pytest.approx(best["few"])
