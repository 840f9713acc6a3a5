"""CIFAR-LT and Digits-LT datamodules on real-format data, and their errors."""

import numpy as np
import pytest
import torch

from ltcl_lightning.data.cifar import CIFAR10LTDataModule, CIFAR100LTDataModule
from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.data.longtail import class_counts_from_profile, select_longtail_indices


def test_cifar100_lt_counts_and_indices(cifar100_dir, splits_dir):
    dm = CIFAR100LTDataModule(str(cifar100_dir), imbalance_factor=100, num_workers=0)
    labels = np.load(splits_dir / "cifar100" / "train_labels.npy")
    assert dm.class_counts == class_counts_from_profile(100, 500, 100)
    np.testing.assert_array_equal(dm.train_indices, select_longtail_indices(labels, dm.class_counts, 0))
    assert dm.group_sizes("threshold") == {"many": 35, "medium": 35, "few": 30}
    assert dm.class_names[:2] == ["class0", "class1"]


def test_cifar10_lt_if50(cifar10_dir):
    dm = CIFAR10LTDataModule(str(cifar10_dir), imbalance_factor=50, num_workers=0)
    assert sum(dm.class_counts) == 13996
    assert dm.group_sizes() == {"many": 9, "medium": 1, "few": 0}


def test_split_file_and_batch_contract(cifar100_dir, splits_dir):
    dm = CIFAR100LTDataModule(
        str(cifar100_dir),
        split_file=str(splits_dir / "cifar100" / "split2_D_i.npy"),
        val_split_file=str(splits_dir / "cifar100" / "valIdxList.npy"),
        batch_size=16,
        num_workers=0,
        train_views=["simclr", "crop_flip", "eval"],
    )
    assert sum(dm.class_counts) == 9754 and max(dm.class_counts) == 450 and min(dm.class_counts) == 4
    dm.setup("fit")
    index, views, target = next(iter(dm.train_dataloader()))
    assert index.dtype == torch.long and target.dtype == torch.long and len(views) == 3
    assert all(v.shape == (16, 3, 32, 32) and v.dtype == torch.float32 for v in views)
    # index is the position in the subset: the label must be the real label of that image
    labels = np.load(splits_dir / "cifar100" / "train_labels.npy")
    idx = np.load(splits_dir / "cifar100" / "split2_D_i.npy")
    np.testing.assert_array_equal(target.numpy(), labels[idx[index.numpy()]])
    assert len(dm.datasets["val"]) == 5000
    i, v, t = next(iter(dm.val_dataloader()))
    assert len(v) == 1


def test_missing_archive_names_the_file(tmp_path):
    dm = CIFAR100LTDataModule(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*missing \['train', 'test', 'meta'\].*download=True"):
        dm.setup("fit")


@pytest.mark.parametrize("bad", [0.5, 0])
def test_imbalance_below_one(bad, tmp_path):
    with pytest.raises(ValueError, match="imbalance_factor must be >= 1"):
        CIFAR100LTDataModule(str(tmp_path), imbalance_factor=bad)


def test_bad_split_file_reaches_the_user(cifar100_dir, tmp_path):
    np.save(tmp_path / "dup.npy", np.array([3, 3, 4]))
    dm = CIFAR100LTDataModule(str(cifar100_dir), split_file=str(tmp_path / "dup.npy"))
    with pytest.raises(ValueError, match="repeats"):
        _ = dm.class_counts


def test_split_file_missing_classes(cifar100_dir, tmp_path):
    np.save(tmp_path / "few.npy", np.arange(20))
    dm = CIFAR100LTDataModule(str(cifar100_dir), split_file=str(tmp_path / "few.npy"))
    with pytest.raises(ValueError, match="classes have no training image"):
        _ = dm.class_counts


def test_batch_larger_than_train_set_with_drop_last():
    dm = DigitsLTDataModule(batch_size=10_000, drop_last=True)
    with pytest.raises(ValueError, match="larger than the training set"):
        dm.setup("fit")


def test_digits_lt():
    dm = DigitsLTDataModule(imbalance_factor=10, test_per_class=30)
    counts = dm.class_counts
    assert counts[0] / counts[-1] == pytest.approx(10, rel=0.1) and counts == sorted(counts, reverse=True)
    dm.setup("fit")
    train_idx, _, test_idx = dm._split
    assert len(set(train_idx) & set(test_idx)) == 0
    assert np.bincount(dm._base.targets[test_idx]).tolist() == [30] * 10
    i, views, t = next(iter(dm.train_dataloader()))
    assert views[0].shape[1:] == (3, 8, 8)


def test_unknown_view_preset():
    dm = DigitsLTDataModule(train_views=["nope"])
    with pytest.raises(ValueError, match="unknown view preset 'nope'"):
        dm.setup("fit")


def test_cutout_hole_is_black_before_normalisation():
    from ltcl_lightning.data.transforms import CIFAR_MEAN, CIFAR_STD, autoaugment_cutout

    for seed in range(5):
        torch.manual_seed(seed)
        out = autoaugment_cutout(32)(torch.randint(1, 255, (3, 32, 32), dtype=torch.uint8))
        # erasing after Normalize would leave a 16x16 square of exact zeros (the mean colour)
        assert int((out == 0).all(0).sum()) == 0
        raw = out * torch.tensor(CIFAR_STD)[:, None, None] + torch.tensor(CIFAR_MEAN)[:, None, None]
        assert int((raw.abs() < 1e-6).all(0).sum()) >= 16 * 16  # black hole (plus any black padding)
