"""CIFAR-10-LT and CIFAR-100-LT from the standard CIFAR python archives (torchvision's format).

Two ways to make the training set long-tailed (spec data_and_eval.md section 1):
``imbalance_factor`` (the LDAM-DRW seeded construction, exact counts) or ``split_file`` (a
published ``.npy`` subset such as ``split1_D_i.npy`` of SDCLR/BCL). The test set is the balanced
10,000-image CIFAR test set.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property
from typing import Any, Literal

import numpy as np
from lightning.pytorch.utilities import rank_zero_info
from torchvision import datasets

from ltcl_lightning.data.base import IndexedDataset, LongTailDataModule
from ltcl_lightning.data.longtail import (
    check_subset_labels,
    check_val_per_class,
    class_counts_from_profile,
    hold_out_per_class,
    load_index_file,
    select_longtail_indices,
)
from ltcl_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD

_FILES = {
    10: (
        "cifar-10-batches-py",
        ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"],
        "cifar-10-python.tar.gz",
    ),
    100: ("cifar-100-python", ["train", "test", "meta"], "cifar-100-python.tar.gz"),
}


def _without_md5(cls: Any) -> type:
    """torchvision's CIFAR reader with its md5 check switched off (md5=None: existence only).

    The datamodule checks the archive's presence itself with a clear message; skipping the
    md5 lets archives written in the same format (test fixtures, re-packed copies) load too.
    """
    attrs = {
        "train_list": [[name, None] for name, _ in cls.train_list],
        "test_list": [[name, None] for name, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    }
    return type(cls.__name__ + "Files", (cls,), attrs)


_CIFAR10Files = _without_md5(datasets.CIFAR10)
_CIFAR100Files = _without_md5(datasets.CIFAR100)


class _CIFARLTDataModule(LongTailDataModule):
    num_classes: int
    image_size = 32
    _tv_class: type

    def __init__(
        self,
        data_dir: str = "data",
        imbalance_factor: float | None = 100.0,
        profile: Literal["exp", "step"] = "exp",
        split_file: str | None = None,
        val_split_file: str | None = None,
        val_per_class: int = 0,
        subset_seed: int = 0,
        download: bool = False,
        check_split_labels: bool = True,
        *,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        **kwargs,
    ):
        """
        Args:
            data_dir: folder holding the extracted archive (``cifar-100-python/`` or
                ``cifar-10-batches-py/``), as torchvision's CIFAR datasets expect.
            imbalance_factor: n_max / n_min of the exponential (or step) profile; 1 = balanced.
            split_file: a published ``.npy`` subset of the 50,000 train images; when given it
                defines the training set and ``imbalance_factor`` is not used.
            val_split_file: validate on these train-set indices (e.g. ``cifar100/valIdxList``)
                instead of the test set; they must be disjoint from the training subset.
            val_per_class: validate on a seeded, balanced hold-out of this many train images per
                class instead of the test set (``subset_seed``; drawn from the images the
                training subset leaves out, so only a class that uses all of its images, the head
                class of an ``imbalance_factor`` profile, gives up its hold-out from training:
                CIFAR-100-LT IF 100 with 10 per class trains on 490 head images instead of 500).
                0 (default): no hold-out.
            subset_seed: seed of the LDAM-DRW subset construction (0 as published).
            download: let torchvision download the archive (needs network).
            check_split_labels: refuse a split file whose class histogram looks label-blind (a
                CIFAR-100 file read as CIFAR-10 or the reverse); ``False`` for a deliberate random subset.
            mean, std: normalisation, the ImageNet statistics (as the SDCLR / BCL code uses).
            **kwargs: the loader and view arguments of
                :class:`~ltcl_lightning.data.base.LongTailDataModule` (``batch_size``,
                ``num_workers``, ``train_views``, ``sampler``, ...), with its defaults.
        """
        super().__init__(mean=mean, std=std, **kwargs)
        if split_file is None and imbalance_factor is None:
            raise ValueError("pass imbalance_factor (e.g. 100) or split_file (a .npy subset)")
        if split_file is None and not imbalance_factor >= 1:  # type: ignore[operator]  # not None: checked above
            raise ValueError(
                f"imbalance_factor must be >= 1 (n_max / n_min; 1 = balanced), got {imbalance_factor}. "
                "An imbalance ratio such as 0.01 is written as imbalance_factor=100."
            )
        self.data_dir = data_dir
        self.imbalance_factor = imbalance_factor
        self.profile = profile
        self.split_file = split_file
        self.val_split_file = val_split_file
        self.val_per_class = check_val_per_class(val_per_class, val_split_file=val_split_file)
        self.subset_seed = subset_seed
        self.download = download
        self.check_split_labels = check_split_labels
        if split_file is not None and imbalance_factor is not None:
            rank_zero_info(f"split_file={split_file} defines the training set; imbalance_factor is not used")

    # -- raw data ---------------------------------------------------------------------------
    def _check_archive(self) -> None:
        folder, files, archive = _FILES[self.num_classes]
        root = os.path.join(self.data_dir, folder)
        missing = [f for f in files if not os.path.isfile(os.path.join(root, f))]
        if missing and not self.download:
            raise FileNotFoundError(
                f"CIFAR-{self.num_classes} not found: {root} is missing {missing}. Extract the python "
                f"version of the archive ({archive}, from https://www.cs.toronto.edu/~kriz/cifar.html) "
                f"into {os.path.abspath(self.data_dir)}, so that {root}/ holds {files}; or pass "
                "download=True on a machine with network access."
            )

    def _tv(self, train: bool):
        self._check_archive()
        try:
            return self._tv_class(self.data_dir, train=train, download=self.download)
        except Exception as err:  # torchvision unpickles every batch file: name the one that is damaged
            raise self._damaged_file_error(err) from None

    def _damaged_file_error(self, err: Exception) -> Exception:
        import pickle

        folder, files, archive = _FILES[self.num_classes]
        for name in files:
            path = os.path.join(self.data_dir, folder, name)
            try:
                with open(path, "rb") as f:
                    entry = pickle.load(f, encoding="latin1")
                if not isinstance(entry, dict):
                    raise TypeError(f"holds a {type(entry).__name__}, not a dict")
            except Exception as bad:
                size = os.path.getsize(path)
                return ValueError(
                    f"CIFAR-{self.num_classes} file {path} ({size} bytes) is damaged: it does not unpickle "
                    f"({type(bad).__name__}: {str(bad)[:120] or 'end of file'}); a truncated download or extraction, "
                    f"or not a CIFAR batch. Extract {archive} again into {os.path.abspath(self.data_dir)}."
                )
        return err

    @cached_property
    def train_base(self):
        """The whole 50,000-image CIFAR train set (torchvision dataset, no transform)."""
        return self._tv(True)

    @cached_property
    def test_base(self):
        """The balanced 10,000-image CIFAR test set (torchvision dataset, no transform)."""
        return self._tv(False)

    @cached_property
    def _subsets(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(training indices, the ``val_per_class`` hold-out or None) in the 50,000 train images."""
        labels = np.asarray(self.train_base.targets, dtype=np.int64)
        if self.split_file is not None:
            train = self._load_split(self.split_file, labels)
        else:
            counts = class_counts_from_profile(
                self.num_classes,
                int(np.bincount(labels).max()),
                self.imbalance_factor,  # type: ignore[arg-type]  # not None without a split file
                self.profile,
            )
            train = select_longtail_indices(labels, counts, seed=self.subset_seed)
        if not self.val_per_class:
            return train, None
        train, val, taken = hold_out_per_class(labels, train, self.val_per_class, seed=self.subset_seed)
        if taken:
            rank_zero_info(
                f"val_per_class={self.val_per_class}: {len(taken)} class(es) had too few images outside the training subset and "
                f"gave up training images for the hold-out: {dict(list(taken.items())[:5])}"
            )
        return train, val

    @property
    def train_indices(self) -> np.ndarray:
        """Indices of the long-tailed training subset in the 50,000-image train set."""
        return self._subsets[0]

    @cached_property
    def val_indices(self) -> np.ndarray | None:
        """Indices of the validation images in the train set (``None``: the test set validates);
        a ``val_split_file`` that shares images with the training subset is refused."""
        if self.val_per_class or self.val_split_file is None:
            return self._subsets[1]
        val = self._load_split(self.val_split_file, np.asarray(self.train_base.targets, dtype=np.int64))
        shared = np.intersect1d(self.train_indices, val)
        if len(shared):
            where = self.split_file or f"the imbalance_factor={self.imbalance_factor} subset"
            raise ValueError(
                f"val_split_file {self.val_split_file!r} shares {len(shared)} images with the training set ({where}): the "
                "validation would score training images. Use a training split_file disjoint from it (the published "
                "split{k}_D_i files are disjoint from valIdxList), or val_per_class=N for a hold-out outside the training subset."
            )
        return val

    def _load_split(self, path: str, labels: np.ndarray) -> np.ndarray:
        idx = load_index_file(path, len(labels))
        if self.check_split_labels:
            other = 100 if self.num_classes == 10 else 10
            check_subset_labels(
                idx, labels, path, f"CIFAR-{self.num_classes}", hint=f" (the CIFAR-{other} files index the same 50,000 train images)"
            )
        return idx

    def train_targets(self) -> np.ndarray:
        return np.asarray(self.train_base.targets, dtype=np.int64)[self.train_indices]

    @property
    def validates_on_test(self) -> bool:
        """The test set, unless a hold-out (``val_per_class``) or an index file (``val_split_file``)."""
        return not self.val_per_class and self.val_split_file is None

    def class_names_list(self) -> list[str]:
        return list(self.train_base.classes)

    def build_datasets(self, stage: str) -> dict:
        out = {}
        train_labels = np.asarray(self.train_base.targets)
        if stage in ("fit",):
            out["train"] = IndexedDataset(self.train_base, train_labels, self.train_transform(), self.train_indices)
        if stage in ("fit", "validate"):
            if self.val_indices is not None:
                out["val"] = IndexedDataset(self.train_base, train_labels, self.eval_transform(), self.val_indices)
            else:
                out["val"] = IndexedDataset(self.test_base, self.test_base.targets, self.eval_transform())
        if stage in ("test", "predict"):
            out["test"] = IndexedDataset(self.test_base, self.test_base.targets, self.eval_transform())
        return out


class CIFAR10LTDataModule(_CIFARLTDataModule):
    """CIFAR-10-LT (IF 100: 12,406 images, 5,000 ... 50)."""

    num_classes = 10
    _tv_class = _CIFAR10Files


class CIFAR100LTDataModule(_CIFARLTDataModule):
    """CIFAR-100-LT (IF 100: 10,847 images, 500 ... 5)."""

    num_classes = 100
    _tv_class = _CIFAR100Files
