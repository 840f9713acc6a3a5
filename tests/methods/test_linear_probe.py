"""LinearProbe: the backbone of a pre-trained checkpoint stays frozen (weights and BN statistics),
only the classifier trains, and the groups come from the PRE-TRAINING class counts; the loader
serves SimCLR, BoostedCL and SDCLR checkpoints (SDCLR: dense branch, dense BN)."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from ltcl_lightning.data.boosted import BoostedCIFAR10LTDataModule
from ltcl_lightning.data.cifar import CIFAR10LTDataModule
from ltcl_lightning.methods.boosted_cl import BoostedCL
from ltcl_lightning.methods.linear_probe import LinearProbe, load_pretrained
from ltcl_lightning.methods.sdclr import SDCLR
from ltcl_lightning.methods.simclr import SimCLR

PRETRAIN_COUNTS = [8, 6, 5, 4, 3, 3, 3, 2, 2, 2]  # thirds: Many 0-3, Medium 4-6, Few 7-9 (no tie at a boundary)


def _trainer(root, **kw):
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        default_root_dir=str(root),
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
        **kw,
    )


def _split(tmp_path, labels, counts, name) -> str:
    idx = np.concatenate([np.flatnonzero(labels == c)[-n:] for c, n in enumerate(counts)])
    path = tmp_path / name
    np.save(path, idx.astype(np.int64))
    return str(path)


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, cifar10_dir, splits_dir) -> str:
    """A BoostedCL checkpoint after one real training step (tiny backbone, CIFAR-10)."""
    tmp = tmp_path_factory.mktemp("pre")
    labels = np.load(splits_dir / "cifar10" / "train_labels.npy")
    dm = BoostedCIFAR10LTDataModule(
        data_dir=str(cifar10_dir), split_file=_split(tmp, labels, PRETRAIN_COUNTS, "d.npy"), batch_size=20, num_workers=0
    )
    model = BoostedCL(num_classes=10, backbone="tiny", class_counts=PRETRAIN_COUNTS, proj_hidden_dim=32, proj_dim=16)
    trainer = _trainer(tmp, max_epochs=1, limit_train_batches=1, limit_val_batches=0)
    trainer.fit(model, dm)
    path = tmp / "bcl.ckpt"
    trainer.save_checkpoint(path)
    return str(path)


def test_backbone_frozen_only_classifier_trains_groups_from_pretraining(pretrained, cifar10_dir, splits_dir, tmp_path):
    labels = np.load(splits_dir / "cifar10" / "train_labels.npy")
    probe_split = _split(tmp_path, labels, [6] * 10, "probe.npy")  # balanced probe set
    dm = CIFAR10LTDataModule(data_dir=str(cifar10_dir), split_file=probe_split, train_views=["eval"], batch_size=20, num_workers=0)
    probe = LinearProbe(num_classes=10, checkpoint=pretrained, class_counts=[6] * 10)
    assert probe.class_counts.tolist() == PRETRAIN_COUNTS
    before = {k: v.clone() for k, v in probe.backbone.state_dict().items()}
    assert any("running_mean" in k for k in before)
    w_before = probe.classifier.weight.clone()
    _trainer(tmp_path, max_epochs=2, limit_val_batches=2).fit(probe, dm)
    for k, v in probe.backbone.state_dict().items():
        assert torch.equal(v, before[k]), f"backbone {k} changed during the probe"
    assert not torch.equal(probe.classifier.weight, w_before)
    assert not probe.backbone.training and all(not p.requires_grad for p in probe.backbone.parameters())
    # the optimiser holds the classifier only
    opt = probe.trainer.optimizers[0]
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == probe.classifier.weight.numel() + 10
    # groups: thirds of the pre-training counts (the balanced probe counts would make one group)
    _trainer(tmp_path, limit_test_batches=3).test(probe, dm)
    res = probe.last_eval["test"]
    per_class = res["per_class"].numpy()
    order = np.argsort(PRETRAIN_COUNTS, kind="stable")  # ascending
    few, medium, many = order[:3], order[3:6], order[6:]
    assert res["many"] == pytest.approx(per_class[many].mean())
    assert res["medium"] == pytest.approx(per_class[medium].mean())
    assert res["few"] == pytest.approx(per_class[few].mean())
    assert set(many) == {0, 1, 2, 3}


def test_loader_serves_simclr_boostedcl_and_sdclr(pretrained, tmp_path):
    x = torch.rand(4, 3, 32, 32)
    # BoostedCL (checkpoint without _class_path: the plain backbone route)
    backbone, counts, c, hp = load_pretrained(pretrained)
    ckpt = torch.load(pretrained, weights_only=False)
    ref = BoostedCL(**ckpt["hyper_parameters"])
    ref.load_state_dict(ckpt["state_dict"])
    ref.eval()
    assert torch.equal(backbone(x), ref.backbone(x)) and counts.tolist() == PRETRAIN_COUNTS and c == 10
    # SimCLR and SDCLR checkpoints written by hand (Lightning's format)
    for cls in (SimCLR, SDCLR):
        torch.manual_seed(0)
        model = cls(num_classes=10, backbone="tiny", class_counts=PRETRAIN_COUNTS)
        with torch.no_grad():  # make the BN statistics non-trivial
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
        model.eval()
        path = tmp_path / f"{cls.__name__}.ckpt"
        torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
        if cls is SDCLR:
            with pytest.raises(ValueError, match="method"):
                load_pretrained(str(path))  # dual-BN keys do not fit a plain backbone
            bb, *_ = load_pretrained(str(path), "ltcl_lightning.methods.sdclr.SDCLR")
            torch.save(
                {
                    "state_dict": model.state_dict(),
                    "hyper_parameters": {**model.hparams, "_class_path": "ltcl_lightning.methods.sdclr.SDCLR"},
                },
                path,
            )
            bb2, *_ = load_pretrained(str(path))
            assert torch.equal(bb2(x), model.backbone(x))
        else:
            bb, *_ = load_pretrained(str(path))
        assert torch.equal(bb(x), model.backbone(x))  # SDCLR: dense branch, dense BN (eval statistics)
    with pytest.raises(ValueError, match="100"):
        LinearProbe(num_classes=100, checkpoint=pretrained)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(str(tmp_path / "missing.ckpt"))
