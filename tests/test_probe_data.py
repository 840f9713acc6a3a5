"""``ltcl probe`` on any datamodule: the checkpoint's own (Digits-LT, ImageNet-100-LT with its
few-shot list), or ``--data`` that must agree with the checkpoint (classes, image size,
normalisation), and the LinearProbe stage's same check; kNN numbers against numpy."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from quick_fit import fit_and_save
from test_knn import numpy_knn

from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.data.imagenet import ImageNet100LTDataModule
from ltcl_lightning.longtail import GROUP_NAMES, class_groups
from ltcl_lightning.methods.linear_probe import LinearProbe, load_pretrained
from ltcl_lightning.methods.simclr import SimCLR
from ltcl_lightning.probe import main

FAST = ["--epochs", "2", "--num-workers", "0", "--device", "cpu", "--no-progress", "--knn-k", "20"]


def _fit(dm, tmp_path, num_classes: int) -> str:
    model = SimCLR(num_classes=num_classes, backbone="tiny", proj_hidden_dim=32, proj_dim=16, grouping="thirds")
    return fit_and_save(model, dm, tmp_path, steps=2)


@torch.no_grad()
def _features(backbone, ds):
    xs, ys = zip(*[(ds[i][1][0], ds[i][2]) for i in range(len(ds))])
    return backbone(torch.stack(xs)).numpy(), np.array(ys)


@pytest.fixture(scope="module")
def digits_ckpt(tmp_path_factory) -> str:
    return _fit(DigitsLTDataModule(imbalance_factor=10, batch_size=64, num_workers=0), tmp_path_factory.mktemp("dg"), 10)


def test_digits_checkpoint_is_probed_on_digits_with_knn_as_numpy(digits_ckpt, tmp_path):
    out = main([digits_ckpt, *FAST, "--output", str(tmp_path / "p.json")])
    assert out["datamodule"]["class_path"].endswith("DigitsLTDataModule")
    assert set(out["per_set"]) == {"full"} and set(out["knn"]["per_set"]) == {"full"}
    assert json.loads((tmp_path / "p.json").read_text())["knn"]["per_set"]["full"] == out["knn"]["per_set"]["full"]
    # independent recomputation: the checkpoint's backbone on the Digits train (eval view) and test images
    backbone, counts, _, _ = load_pretrained(digits_ckpt)
    dm = DigitsLTDataModule(imbalance_factor=10, num_workers=0, mean=(0.3,) * 3, std=(0.4,) * 3)
    dm.setup("test")
    x_tr, y_tr = _features(backbone, dm.train_eval_dataset())
    x_te, y_te = _features(backbone, dm.datasets["test"])
    pred = numpy_knn(x_tr, y_tr, x_te, 10, 20, 0.1).argmax(1)
    res = out["knn"]["per_set"]["full"]
    assert res["acc"] == pytest.approx((pred == y_te).mean(), abs=1e-6)
    groups = class_groups(counts, "thirds").numpy()
    per_class = np.array([(pred[y_te == c] == c).mean() for c in range(10)])
    np.testing.assert_allclose(res["per_class"], per_class, atol=1e-6)
    for g, name in enumerate(GROUP_NAMES):
        assert res[name] == pytest.approx(per_class[groups == g].mean(), abs=1e-6)


def test_digits_checkpoint_on_cifar10_is_refused_with_both_sides(digits_ckpt, tmp_path):
    # issue 11 item 8: a Digits-LT checkpoint was silently probed on CIFAR-10
    with pytest.raises(
        ValueError,
        match=r"image_size, mean, std differ.*DigitsLTDataModule: .*image_size=8.*"
        r"CIFAR10LTDataModule: .*image_size=32",
    ):
        main([digits_ckpt, "--data", "ltcl_lightning.data.cifar.CIFAR10LTDataModule", f"--data.init_args.data_dir={tmp_path}", *FAST])
    with pytest.raises(ValueError, match="takes no data_dir"):
        main([digits_ckpt, "--data-dir", str(tmp_path), *FAST])


def test_linear_probe_stage_refuses_other_data(digits_ckpt, tmp_path):
    probe = LinearProbe(num_classes=10, checkpoint=digits_ckpt)
    dm = DigitsLTDataModule(imbalance_factor=10, num_workers=0, mean=(0.5,) * 3, std=(0.5,) * 3)
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=1,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=str(tmp_path),
    )
    with pytest.raises(ValueError, match=r"mean, std differ.*mean=\(0\.3, 0\.3, 0\.3\).*mean=\(0\.5, 0\.5, 0\.5\)"):
        trainer.fit(probe, dm)


def test_imagenet100_lt_checkpoint_probes_full_and_fewshot(imagenet100_lt_folder, tmp_path):
    f = imagenet100_lt_folder
    dm = ImageNet100LTDataModule(
        data_dir=f["data_dir"],
        train_list=f["train_list"],
        val_list=f["val_list"],
        test_list=f["test_list"],
        num_classes=f["num_classes"],
        image_size=32,
        batch_size=8,
        num_workers=0,
        train_views=["simclr", "simclr"],
    )
    ckpt = _fit(dm, tmp_path, f["num_classes"])
    out = main([ckpt, f"--data.init_args.fewshot_list={f['fewshot_list']}", *FAST])
    assert out["datamodule"]["class_path"].endswith("ImageNet100LTDataModule")
    assert set(out["summary"]) == {"full", "fewshot"} == set(out["knn"]["summary"])
    assert out["datamodule"]["image_size"] == 32
    # the few-shot kNN: the 5 listed images vote for the 15 test-list images
    backbone = load_pretrained(ckpt)[0]
    dm = ImageNet100LTDataModule(
        data_dir=f["data_dir"],
        train_list=f["train_list"],
        test_list=f["test_list"],
        fewshot_list=f["fewshot_list"],
        num_classes=f["num_classes"],
        image_size=32,
        num_workers=0,
    )
    dm.setup("test")
    x_fs, y_fs = _features(backbone, dm.datasets["fewshot"])
    x_te, y_te = _features(backbone, dm.datasets["test"])
    assert (len(y_fs), len(y_te)) == (5, 15)
    pred = numpy_knn(x_fs, y_fs, x_te, 5, 20, 0.1).argmax(1)
    assert out["knn"]["per_set"]["fewshot"]["acc"] == pytest.approx((pred == y_te).mean(), abs=1e-6)
