"""The self-supervised evaluation command end to end on a tiny pre-trained checkpoint (generated
CIFAR-100 archive, few epochs), checked against independent recomputations of its numbers; and
the probe's optimiser schedule against the official eval_sgd."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
from quick_fit import fit_and_save

from ltcl_lightning.data.boosted import BoostedCIFAR100LTDataModule
from ltcl_lightning.data.longtail import class_counts_from_profile
from ltcl_lightning.data.transforms import CIFAR_MEAN, CIFAR_STD
from ltcl_lightning.methods.boosted_cl import BoostedCL
from ltcl_lightning.methods.linear_probe import load_pretrained
from ltcl_lightning.probe import main, train_linear

N_TEST = 300


@pytest.fixture(scope="module")
def small_cifar100(tmp_path_factory, cifar100_dir) -> str:
    """The session archive's train set (linked) with a 300-image test set, to keep the test fast."""
    root = tmp_path_factory.mktemp("c100small")
    folder = root / "cifar-100-python"
    folder.mkdir()
    for name in ("train", "meta"):
        os.symlink(cifar100_dir / "cifar-100-python" / name, folder / name)
    labels = np.arange(N_TEST) % 100
    data = (
        np.repeat((labels[:, None] * 37 % 256).astype(np.uint8), 3072, axis=1) // 2
        + np.random.default_rng(1).integers(0, 64, (N_TEST, 3072), dtype=np.uint8)
    ).astype(np.uint8)
    with open(folder / "test", "wb") as f:
        pickle.dump(
            {"filenames": ["x.png"] * N_TEST, "fine_labels": labels.tolist(), "coarse_labels": (labels // 5).tolist(), "data": data}, f
        )
    return str(root)


def _subset(labels, per_class, offset, path):
    idx = np.concatenate([np.flatnonzero(labels == c)[offset : offset + per_class] for c in range(100)])
    np.save(path, idx.astype(np.int64))


def test_probe_command_end_to_end(small_cifar100, splits_dir, tmp_path):
    labels = np.load(splits_dir / "cifar100" / "train_labels.npy")
    counts = class_counts_from_profile(100, 6, 6)  # long-tailed pre-training set, 6 ... 1 per class
    rng = np.random.default_rng(0)
    perm_counts = list(rng.permutation(counts))  # head classes are not the low class ids
    pre = np.concatenate([np.flatnonzero(labels == c)[:n] for c, n in enumerate(perm_counts)])
    np.save(tmp_path / "pre.npy", pre.astype(np.int64))
    dm = BoostedCIFAR100LTDataModule(
        data_dir=small_cifar100, split_file=str(tmp_path / "pre.npy"), batch_size=32, num_workers=0, mean=CIFAR_MEAN, std=CIFAR_STD
    )
    model = BoostedCL(num_classes=100, backbone="tiny", class_counts=perm_counts, proj_hidden_dim=32, proj_dim=16)
    ckpt = fit_and_save(model, dm, tmp_path, name="bcl.ckpt")
    # the probe must feed the backbone inputs normalised as in pre-training
    saved_dm = load_pretrained(str(ckpt))[3]["_datamodule"]
    assert tuple(saved_dm["mean"]) == CIFAR_MEAN and tuple(saved_dm["std"]) == CIFAR_STD

    sd = tmp_path / "splits"
    sd.mkdir()
    _subset(labels, 3, 10, sd / "trainIdxList.npy")
    for k in (1, 2):
        _subset(labels, 2, 10 + k, sd / f"split{k}_test_100shot.npy")
        _subset(labels, 1, 12 + k, sd / f"split{k}_test_50shot.npy")
    out_json = tmp_path / "probe.json"
    out = main(
        [
            str(ckpt),
            "--data-dir",
            small_cifar100,
            "--splits-dir",
            str(sd),
            "--splits",
            "1,2",
            "--epochs",
            "3",
            "--batch-size",
            "100",
            "--num-workers",
            "0",
            "--device",
            "cpu",
            "--output",
            str(out_json),
        ]
    )
    saved = json.loads(out_json.read_text())
    assert set(saved["per_set"]) == {"full", "split1_100shot", "split2_100shot", "split1_50shot", "split2_50shot"}
    # groups: thirds of the checkpoint's pre-training counts (ascending, ties by class id)
    order = np.argsort(perm_counts, kind="stable")
    groups = {"few": order[:33], "medium": order[33:66], "many": order[66:]}
    for name, res in saved["per_set"].items():
        pc = np.array(res["per_class"])
        g = {k: pc[v].mean() for k, v in groups.items()}
        for k, v in g.items():
            assert res[k] == pytest.approx(v, abs=1e-6), (name, k)
        assert res["group_std"] == pytest.approx(np.std(list(g.values())), abs=1e-6)
        assert res["acc"] == pytest.approx(pc.mean(), abs=1e-6)  # balanced 3-per-class test set
    for shot, names in (("100", ["split1_100shot", "split2_100shot"]), ("50", ["split1_50shot", "split2_50shot"])):
        for key in ("acc", "many", "medium", "few", "group_std"):
            assert saved["summary"][shot][key] == pytest.approx(np.mean([saved["per_set"][n][key] for n in names]))
        assert saved["summary"][shot]["num_splits"] == 2
    assert out["summary"]["full"]["acc"] == saved["per_set"]["full"]["acc"]
    with pytest.raises(FileNotFoundError, match="split3_test_100shot"):
        main([str(ckpt), "--data-dir", small_cifar100, "--splits-dir", str(sd), "--splits", "3", "--shots", "100"])


def test_train_linear_follows_the_official_schedule_and_learns():
    g = torch.Generator().manual_seed(0)
    centers = torch.randn(5, 8, generator=g) * 4
    y = torch.arange(100) % 5
    x = centers[y] + 0.1 * torch.randn(100, 8, generator=g)
    lrs = []
    orig = torch.optim.lr_scheduler.ExponentialLR.step

    def spy(self, *a, **k):
        lrs.append(self.optimizer.param_groups[0]["lr"])
        return orig(self, *a, **k)

    torch.optim.lr_scheduler.ExponentialLR.step = spy
    try:
        torch.manual_seed(0)
        clf = train_linear(x, y, 5, epochs=30, lr=1e-2, min_lr=1e-6, weight_decay=5e-6, batch_size=10, generator=g)
    finally:
        torch.optim.lr_scheduler.ExponentialLR.step = orig
    gamma = (1e-6 / 1e-2) ** (1 / 30)
    # lrs[0]: the scheduler's constructor; then the lr in effect during each epoch, stepped after it
    np.testing.assert_allclose(lrs[1:], [1e-2 * gamma**e for e in range(30)], rtol=1e-9)
    assert (clf(x).argmax(1) == y).float().mean() == 1.0


def test_probe_normalisation_precedence():
    from argparse import Namespace

    from ltcl_lightning.probe import _normalisation

    saved = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    assert _normalisation(Namespace(mean=None, std=None), saved) == {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    cli = Namespace(mean=[0.5, 0.5, 0.5], std=[0.2, 0.2, 0.2])
    assert _normalisation(cli, saved) == {"mean": (0.5, 0.5, 0.5), "std": (0.2, 0.2, 0.2)}
    assert _normalisation(Namespace(mean=None, std=None), {}) == {}
    with pytest.raises(ValueError, match="both --mean and --std"):
        _normalisation(Namespace(mean=[0.5] * 3, std=None), {})
