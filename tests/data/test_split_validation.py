"""A split file is validated against the dataset it indexes (issue 11, case 6): a CIFAR-100 file
read as CIFAR-10 (or the reverse) is refused; every published file passes with its own labels."""

from __future__ import annotations

import numpy as np
import pytest

from ltcl_lightning.data.cifar import CIFAR10LTDataModule, CIFAR100LTDataModule
from ltcl_lightning.data.longtail import check_subset_labels


@pytest.mark.parametrize("own,other", [("cifar10", "cifar100"), ("cifar100", "cifar10")])
def test_every_published_file_passes_with_its_labels_and_fails_with_the_others(own, other, splits_dir):
    own_labels = np.load(splits_dir / own / "train_labels.npy")
    other_labels = np.load(splits_dir / other / "train_labels.npy")
    files = sorted(p for p in (splits_dir / own).glob("*.npy") if p.name != "train_labels.npy")
    assert len(files) >= 17
    refused = 0
    for f in files:
        idx = np.load(f)
        check_subset_labels(idx, own_labels, str(f), own)
        if np.bincount(other_labels[idx]).min() == 0 or len(idx) * np.bincount(other_labels).min() / len(other_labels) < 50:
            continue  # an empty class (the class-count check refuses it) or too few images per class to test
        with pytest.raises(ValueError, match="does not look like a .* subset"):
            check_subset_labels(idx, other_labels, str(f), other)
        refused += 1
    assert refused >= 12


def test_cifar100_split_is_refused_by_cifar10(cifar10_dir, splits_dir):
    # before: accepted; CIFAR-10 trained on a near-balanced 9,754-image subset (956 .. 1017 per class)
    dm = CIFAR10LTDataModule(data_dir=str(cifar10_dir), split_file=str(splits_dir / "cifar100/split1_D_i.npy"))
    with pytest.raises(ValueError, match=r"does not look like a CIFAR-10 subset.*per class 956 \.\. 1017.*CIFAR-100 files"):
        _ = dm.class_counts


def test_cifar10_split_is_refused_by_cifar100_also_as_validation_split(cifar100_dir, splits_dir):
    dm = CIFAR100LTDataModule(
        data_dir=str(cifar100_dir),
        split_file=str(splits_dir / "cifar100/split1_D_i.npy"),
        val_split_file=str(splits_dir / "cifar10/valIdxList.npy"),
        num_workers=0,
    )
    assert sum(dm.class_counts) == 9754
    with pytest.raises(ValueError, match="does not look like a CIFAR-100 subset"):
        dm.setup("fit")


def test_random_subset_accepted_when_asked(cifar10_dir, tmp_path):
    path = tmp_path / "random.npy"
    np.save(path, np.random.default_rng(0).choice(50000, 5000, replace=False))
    with pytest.raises(ValueError, match="label-blind"):
        _ = CIFAR10LTDataModule(data_dir=str(cifar10_dir), split_file=str(path)).class_counts
    dm = CIFAR10LTDataModule(data_dir=str(cifar10_dir), split_file=str(path), check_split_labels=False)
    assert sum(dm.class_counts) == 5000


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_damaged_cifar_batch_file_is_named(damage, cifar10_dir, tmp_path):
    # before: EOFError / UnpicklingError ("invalid load key") / EOFError from deep inside torchvision
    import os

    root = tmp_path / "data"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    for f in (cifar10_dir / "cifar-10-batches-py").iterdir():  # links to the good files, one damaged copy
        (root / "cifar-10-batches-py" / f.name).symlink_to(f)
    bad = root / "cifar-10-batches-py" / "data_batch_3"
    data = bad.read_bytes()
    bad.unlink()
    bad.write_bytes({"truncated": data[: len(data) // 3], "random": os.urandom(2048), "empty": b""}[damage])
    dm = CIFAR10LTDataModule(data_dir=str(root), imbalance_factor=10)
    with pytest.raises(ValueError, match=r"file .*cifar-10-batches-py/data_batch_3 \(\d+ bytes\) is damaged"):
        _ = dm.class_counts
