"""Digits-LT: the real handwritten digits that scikit-learn ships (1,797 8x8 images, 10 classes).

The offline dataset for the quickstart, the notebook and the tests. A balanced test split of
``test_per_class`` images per class is held out first (seeded); the rest is made long-tailed
with the same exponential profile and seeded selection as CIFAR-LT.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from ltcl_lightning.data.base import IndexedDataset, LongTailDataModule
from ltcl_lightning.data.longtail import check_val_per_class, class_counts_from_profile, hold_out_per_class, select_longtail_indices
from ltcl_lightning.data.transforms import View


class _DigitsImages(Dataset):
    """(3, 8, 8) uint8 image tensors and labels of ``sklearn.datasets.load_digits``."""

    def __init__(self):
        try:
            from sklearn.datasets import load_digits
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError(
                "DigitsLTDataModule needs scikit-learn (it ships the digits images): pip install 'ltcl-lightning[demo]'"
            ) from None
        digits = load_digits()
        imgs = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
        self.images = torch.from_numpy(imgs)[:, None].expand(-1, 3, -1, -1).contiguous()
        self.targets = digits.target.astype(np.int64)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        return self.images[i], int(self.targets[i])


class DigitsLTDataModule(LongTailDataModule):
    num_classes = 10
    image_size = 8

    def __init__(
        self,
        imbalance_factor: float = 10.0,
        profile: Literal["exp", "step"] = "exp",
        test_per_class: int = 30,
        val_per_class: int = 0,
        subset_seed: int = 0,
        *,
        batch_size: int = 128,
        num_workers: int = 0,
        train_views: Sequence[View] = ("digits", "digits"),
        mean: Sequence[float] | None = (0.3, 0.3, 0.3),
        std: Sequence[float] | None = (0.4, 0.4, 0.4),
        pin_memory: bool = False,
        **kwargs,
    ):
        """
        Args:
            imbalance_factor: n_max / n_min of the long-tailed training profile (>= 1).
            profile: ``exp`` or ``step`` class-count profile.
            test_per_class: balanced held-out test images per class (drawn before the tail).
            val_per_class: validate on a seeded, balanced hold-out of this many images per class
                (from the images the long-tailed subset leaves out; a class that uses all of them
                gives up its hold-out from training) instead of the test split. 0: no hold-out.
            subset_seed: seed of the test split and of the long-tailed selection.
            batch_size, num_workers, train_views, mean, std, pin_memory: as in
                :class:`~ltcl_lightning.data.base.LongTailDataModule`, with defaults that suit
                1,797 8x8 images on a CPU (in-process loading, the ``digits`` view).
            **kwargs: the other arguments of
                :class:`~ltcl_lightning.data.base.LongTailDataModule` (``eval_batch_size``,
                ``eval_view``, ``sampler``, ``seed``, ...), with its defaults.
        """
        super().__init__(
            batch_size=batch_size, num_workers=num_workers, train_views=train_views, mean=mean, std=std, pin_memory=pin_memory, **kwargs
        )
        if not imbalance_factor >= 1:
            raise ValueError(f"imbalance_factor must be >= 1 (n_max / n_min), got {imbalance_factor}")
        if test_per_class < 1:
            raise ValueError(f"test_per_class must be >= 1, got {test_per_class}")
        self.imbalance_factor = imbalance_factor
        self.profile = profile
        self.test_per_class = test_per_class
        self.val_per_class = check_val_per_class(val_per_class)
        self.subset_seed = subset_seed

    @cached_property
    def _base(self) -> _DigitsImages:
        return _DigitsImages()

    @cached_property
    def _split(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(training, validation, test) indices into the 1,797 images; validation is the test split
        without a hold-out."""
        labels = self._base.targets
        rng = np.random.RandomState(self.subset_seed)
        test, pool = [], []
        for c in range(self.num_classes):
            idx = np.where(labels == c)[0]
            rng.shuffle(idx)
            if len(idx) <= self.test_per_class:
                raise ValueError(f"class {c} has only {len(idx)} images; lower test_per_class={self.test_per_class}")
            test.append(idx[: self.test_per_class])
            pool.append(idx[self.test_per_class :])
        pool_idx = np.concatenate(pool)
        n_max = min(len(p) for p in pool)
        counts = class_counts_from_profile(self.num_classes, n_max, self.imbalance_factor, self.profile)
        chosen = select_longtail_indices(labels[pool_idx], counts, seed=self.subset_seed)
        train, test_idx = pool_idx[chosen], np.concatenate(test)
        if not self.val_per_class:
            return train, test_idx, test_idx
        train, val, _ = hold_out_per_class(labels, train, self.val_per_class, seed=self.subset_seed, pool=pool_idx)
        return train, val, test_idx

    def train_targets(self) -> np.ndarray:
        return self._base.targets[self._split[0]]

    @property
    def validates_on_test(self) -> bool:
        """The balanced test split, unless a ``val_per_class`` hold-out."""
        return not self.val_per_class

    def build_datasets(self, stage: str) -> dict:
        train_idx, val_idx, test_idx = self._split
        out = {}
        if stage == "fit":
            out["train"] = IndexedDataset(self._base, self._base.targets, self.train_transform(), train_idx)
        if stage in ("fit", "validate"):
            out["val"] = IndexedDataset(self._base, self._base.targets, self.eval_transform(), val_idx)
        if stage in ("test", "predict"):
            out["test"] = IndexedDataset(self._base, self._base.targets, self.eval_transform(), test_idx)
        return out
