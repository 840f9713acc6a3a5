"""The seeded per-class validation hold-out (``val_per_class``) where no validation split is
published: balanced, disjoint from training and test, drawn from the images the long-tailed subset
leaves out (only a class without enough of them gives up training images), and labelled so."""

from types import SimpleNamespace

import numpy as np
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from ltcl_lightning.callbacks.metadata import label_best_checkpoints, selection
from ltcl_lightning.data.cifar import CIFAR10LTDataModule, CIFAR100LTDataModule
from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.data.longtail import class_counts_from_profile, hold_out_per_class, select_longtail_indices


def test_hold_out_by_hand():
    #            idx: 0  1  2  3  4  5  6  7  8  9
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2, 2])
    train = np.array([2, 1, 0, 3, 7])  # class 0 uses all 3 of its images, class 1 one of 4, class 2 one of 3
    new_train, val, taken = hold_out_per_class(labels, train, per_class=2, seed=0)
    assert np.bincount(labels[val]).tolist() == [2, 2, 2]
    assert set(val[labels[val] == 1]) <= {4, 5, 6} and set(val[labels[val] == 2]) == {8, 9}  # spare images first
    assert taken == {0: 2} and len(set(val) & set(new_train)) == 0
    assert new_train.tolist() == [i for i in train.tolist() if i not in set(val)]  # order kept
    assert new_train.tolist()[-2:] == [3, 7]
    assert np.array_equal(hold_out_per_class(labels, train, per_class=2, seed=0)[1], val)  # seeded: the same draw
    with pytest.raises(ValueError, match="class 0: it has 0 images outside the training subset and 3 in it, and would keep no"):
        hold_out_per_class(labels, train, per_class=3, seed=0)
    with pytest.raises(ValueError, match="val_per_class must be >= 1"):
        hold_out_per_class(labels, train, per_class=0)


def test_cifar100_if100_hold_out_on_the_real_labels(splits_dir):
    """The recipes' setting: only the head class (all 500 used) gives up its 10; the rest keep the
    published LDAM-DRW counts; 1,000 balanced validation images outside the training set."""
    labels = np.load(splits_dir / "cifar100" / "train_labels.npy")
    counts = class_counts_from_profile(100, 500, 100)
    subset = select_longtail_indices(labels, counts, seed=0)
    train, val, taken = hold_out_per_class(labels, subset, per_class=10, seed=0)
    assert taken == {0: 10}
    assert np.bincount(labels[train], minlength=100).tolist() == [490] + counts[1:]
    assert np.bincount(labels[val], minlength=100).tolist() == [10] * 100 and len(np.intersect1d(train, val)) == 0
    assert set(train) <= set(subset)


def test_cifar_datamodule_validates_on_the_hold_out(cifar10_dir):
    dm = CIFAR10LTDataModule(str(cifar10_dir), imbalance_factor=100, val_per_class=100, num_workers=0)
    assert dm.class_counts == [4900] + class_counts_from_profile(10, 5000, 100)[1:] and sum(dm.class_counts) == 12306
    assert selection(dm) == "validation"
    dm.setup("fit")
    val = dm.datasets["val"]
    assert len(val) == 1000 and len(np.intersect1d(dm.val_indices, dm.train_indices)) == 0
    assert selection(CIFAR10LTDataModule(str(cifar10_dir), imbalance_factor=100, num_workers=0)) == "test"


def test_cifar_refuses_a_validation_file_that_overlaps_training(cifar100_dir, splits_dir):
    """valIdxList is disjoint from the published D_i files, not from the imbalance_factor subset
    (1,104 shared images at IF 100): before, that validation scored training images silently."""
    dm = CIFAR100LTDataModule(
        str(cifar100_dir), imbalance_factor=100, val_split_file=str(splits_dir / "cifar100" / "valIdxList.npy"), num_workers=0
    )
    with pytest.raises(ValueError, match="shares 1104 images with the training set .*imbalance_factor=100.*val_per_class"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="pass val_split_file .* or val_per_class"):
        CIFAR100LTDataModule(str(cifar100_dir), val_split_file="cifar100/valIdxList", val_per_class=10)
    with pytest.raises(ValueError, match="val_per_class must be >= 0"):
        CIFAR100LTDataModule(str(cifar100_dir), val_per_class=-1)


def test_digits_hold_out_is_outside_train_and_test():
    dm = DigitsLTDataModule(val_per_class=10)
    train, val, test = dm._split
    assert np.bincount(dm._base.targets[val]).tolist() == [10] * 10
    assert not (set(val) & set(train)) and not (set(val) & set(test)) and not (set(train) & set(test))
    plain = DigitsLTDataModule()
    assert np.array_equal(plain._split[1], plain._split[2]) and selection(plain) == "test" and selection(dm) == "validation"
    assert len(train) < len(plain._split[0]) <= len(train) + 10 * 10


@pytest.mark.parametrize(
    "dm, filename, expected",
    [
        (DigitsLTDataModule(), "best-{epoch}", "best_on_test-{epoch}"),  # selects on the test split
        (DigitsLTDataModule(val_per_class=5), "best_on_test-{epoch}", "best-{epoch}"),  # a hold-out
        (DigitsLTDataModule(val_per_class=5), "best-{epoch}", "best-{epoch}"),
        (DigitsLTDataModule(), "best_on_test-{epoch}", "best_on_test-{epoch}"),
    ],
)
def test_best_checkpoint_is_named_after_what_selects_it(dm, filename, expected):
    best = ModelCheckpoint(monitor="val/acc", mode="max", filename=filename)
    other = ModelCheckpoint(monitor="train/loss", filename="best-{epoch}")  # not a validation selection: left alone
    label_best_checkpoints(SimpleNamespace(datamodule=dm, callbacks=[best, other]))
    assert (best.filename, other.filename) == (expected, "best-{epoch}")


def test_list_file_hold_out_validates_on_training_list_images(inat_folder):
    """iNat-format data without its val list: 1 image per class held out of the training list
    (seeded by val_seed), the val list given as the test list."""
    from ltcl_lightning.data.inaturalist import INaturalist2018DataModule

    f = inat_folder
    kw = dict(data_dir=f["data_dir"], train_list=f["train_list"], test_list=f["val_list"], num_classes=f["num_classes"], num_workers=0)
    dm = INaturalist2018DataModule(val_per_class=1, **kw)
    full = INaturalist2018DataModule(val_list=f["val_list"], **kw)
    assert dm.class_counts == [n - 1 for n in full.class_counts]
    paths = lambda lf: {lf.path(i) for i in range(len(lf))}  # noqa: E731
    assert len(dm.val_file) == f["num_classes"] and not paths(dm.val_file) & paths(dm.train_file)
    assert paths(dm.val_file) | paths(dm.train_file) == paths(full.train_file)
    assert paths(dm.test_file) == paths(full.val_file) and selection(dm) == "validation" and selection(full) == "test"
    assert "hold-out" in dm.val_file.where(0)
    again = INaturalist2018DataModule(val_per_class=1, **kw)
    assert paths(again.val_file) == paths(dm.val_file)  # seeded
    dm.setup("fit")
    assert len(dm.datasets["val"]) == f["num_classes"]
    with pytest.raises(ValueError, match="pass val_list .* or val_per_class"):
        INaturalist2018DataModule(val_per_class=1, **{**kw, "val_list": f["val_list"]})
    with pytest.raises(ValueError, match="would keep no training image"):
        _ = INaturalist2018DataModule(val_per_class=min(full.class_counts), **kw).class_counts
