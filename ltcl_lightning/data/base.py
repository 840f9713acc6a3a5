"""``LongTailDataModule``: the base every benchmark datamodule plugs into.

Batch contract (every method relies on it): each training and evaluation batch is
``(index, views, target)``: ``index`` a LongTensor of positions in the stage's dataset (the
training subset for training: BoostedCL keys its per-sample state on it; the evaluation set for
evaluation: the metrics use it to count every image exactly once under DDP), ``views`` a list
of image tensors (one per view; evaluation has one view), ``target`` a LongTensor of labels.
"""

from __future__ import annotations

from functools import cached_property
from typing import Callable, Literal, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ltcl_lightning.data.samplers import build_sampler
from ltcl_lightning.data.transforms import MultiView, View, build_view
from ltcl_lightning.longtail import GROUP_NAMES, Grouping, class_groups


class IndexedDataset(Dataset):
    """Wraps a dataset of ``(image, label)`` (optionally a subset of it) into the batch contract.

    ``indices`` select items of ``base``; item ``i`` returns ``(i, views, label)`` where ``i`` is
    the position in this (sub)dataset and ``views`` the output of ``transform`` (a list).
    """

    def __init__(
        self,
        base: Dataset,
        targets: np.ndarray,
        transform: Callable,
        indices: np.ndarray | None = None,
    ):
        self.base = base
        self.indices = None if indices is None else np.asarray(indices, dtype=np.int64)
        all_targets = np.asarray(targets, dtype=np.int64)
        self.targets = all_targets if self.indices is None else all_targets[self.indices]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def load(self, i: int):
        j = i if self.indices is None else int(self.indices[i])
        return self.base[j][0]

    def __getitem__(self, i: int):
        img = self.load(i)
        views = self.transform(img)
        if not isinstance(views, list):
            views = [views]
        return i, views, int(self.targets[i])


class EvalViewDataset(Dataset):
    """The images of an :class:`IndexedDataset` (any subclass: e.g. BoostedCL's) under another
    transform, same order and labels: the training set seen as evaluation data."""

    def __init__(self, dataset: IndexedDataset, transform: Callable):
        self.dataset = dataset
        self.targets = dataset.targets
        self.transform = transform

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        views = self.transform(self.dataset.load(i))
        return i, views if isinstance(views, list) else [views], int(self.targets[i])


class LongTailDataModule(pl.LightningDataModule):
    """Shared plumbing: views, loaders, class counts and groups.

    Subclasses implement :meth:`train_targets` (labels of the training subset, cheap: no
    images decoded) and :meth:`build_datasets` (the ``IndexedDataset`` for each stage), and set
    ``num_classes``, ``image_size``, ``mean``/``std``.
    """

    num_classes: int
    image_size: int = 32

    def __init__(
        self,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 4,
        train_views: Sequence[View] = ("simclr", "simclr"),
        eval_view: View = "eval",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        drop_last: bool = False,
        persistent_workers: bool = False,
        pin_memory: bool = True,
        seed: int = 0,
        sampler: Literal["instance", "class_balanced", "sqrt"] = "instance",
    ):
        """``sampler``: how training images are drawn (``data/samplers.py``): ``instance`` each
        image once per epoch, ``class_balanced`` / ``sqrt`` class-aware; all seeded by ``seed``
        and the epoch, and sharded by rank so that Lightning does not wrap them under DDP."""
        super().__init__()
        # saved in checkpoints (datamodule_hyper_parameters): a probe re-uses the input normalisation
        self.save_hyperparameters()
        if sampler not in ("instance", "class_balanced", "sqrt"):
            raise ValueError(f"sampler must be 'instance', 'class_balanced' or 'sqrt', got {sampler!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.train_views = list(train_views)
        self.eval_view = eval_view
        if mean is not None:
            self.mean = tuple(mean)
        if std is not None:
            self.std = tuple(std)
        self.drop_last = drop_last
        self.persistent_workers = persistent_workers and num_workers > 0
        self.pin_memory = pin_memory
        self.seed = seed
        self.sampler = sampler
        self.datasets: dict[str, Dataset] = {}

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    # ----- what subclasses provide ------------------------------------------------------
    def train_targets(self) -> np.ndarray:
        raise NotImplementedError

    def build_datasets(self, stage: str) -> dict[str, Dataset]:
        """Return {'train': ..., 'val': ..., 'test': ...} (the keys this stage needs)."""
        raise NotImplementedError

    def class_names_list(self) -> list[str]:
        return [str(c) for c in range(self.num_classes)]

    # ----- class statistics ---------------------------------------------------------------
    @cached_property
    def class_counts(self) -> list[int]:
        """Training images per class (from the training subset's labels)."""
        targets = np.asarray(self.train_targets(), dtype=np.int64)
        if targets.size and (targets.min() < 0 or targets.max() >= self.num_classes):
            raise ValueError(
                f"training labels span [{targets.min()}, {targets.max()}] but num_classes is "
                f"{self.num_classes}: the data and the class count disagree."
            )
        counts = np.bincount(targets, minlength=self.num_classes)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            raise ValueError(
                f"{len(empty)} of {self.num_classes} classes have no training image "
                f"(first: {empty[:10].tolist()}); check the split file / imbalance settings."
            )
        return counts.tolist()

    @property
    def class_names(self) -> list[str]:
        return self.class_names_list()

    def group_sizes(self, grouping: Grouping = "threshold") -> dict[str, int]:
        """Number of classes in each of Many / Medium / Few under the named grouping."""
        g = class_groups(self.class_counts, grouping)
        return {name: int((g == i).sum()) for i, name in enumerate(GROUP_NAMES)}

    # ----- transforms and loaders ---------------------------------------------------------
    def train_transform(self) -> MultiView:
        return MultiView([build_view(v, self.image_size, self.mean, self.std) for v in self.train_views])

    def eval_transform(self) -> MultiView:
        return MultiView([build_view(self.eval_view, self.image_size, self.mean, self.std)])

    def setup(self, stage: str | None = None) -> None:
        for key, ds in self.build_datasets(stage or "fit").items():
            self.datasets.setdefault(key, ds)
        train = self.datasets.get("train")
        if train is not None and self.drop_last and len(train) < self.batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} is larger than the training set ({len(train)} images) "
                "with drop_last=True: every batch would be dropped. Lower batch_size or set drop_last=False."
            )

    def _loader(self, ds: Dataset, train: bool) -> DataLoader:
        return DataLoader(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=build_sampler(self.sampler, ds, seed=self.seed) if train else None,
            drop_last=self.drop_last if train else False,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
        )

    def train_eval_dataset(self) -> EvalViewDataset:
        """The training images with the evaluation view, in order (frozen-feature probes, kNN)."""
        train = self.datasets.get("train") or self.build_datasets("fit")["train"]
        return EvalViewDataset(train, self.eval_transform())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["train"], train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"], train=False)
