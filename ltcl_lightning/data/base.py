"""``LongTailDataModule``: the base every benchmark datamodule plugs into.

Batch contract (every method relies on it): each training and evaluation batch is
``(index, views, target)``: ``index`` a LongTensor of positions in the stage's dataset (the
training subset for training: BoostedCL keys its per-sample state on it; the evaluation set for
evaluation: the metrics use it to count every image exactly once under DDP), ``views`` a list
of image tensors (one per view; evaluation has one view), ``target`` a LongTensor of labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property
from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ltcl_lightning.data import batched as B
from ltcl_lightning.data.augment import Augmentation
from ltcl_lightning.data.samplers import build_sampler
from ltcl_lightning.data.transforms import MultiView, View, build_view, resolve_view
from ltcl_lightning.longtail import GROUP_NAMES, Grouping, class_groups
from ltcl_lightning.utils import dist


class IndexedDataset(Dataset):
    """Wraps a dataset of ``(image, label)`` (optionally a subset of it) into the batch contract.

    ``indices`` select items of ``base``; item ``i`` returns ``(i, views, label)`` where ``i`` is
    the position in this (sub)dataset and ``views`` the output of ``transform`` (a list).
    """

    def __init__(self, base: Dataset, targets: np.ndarray, transform: Callable, indices: np.ndarray | None = None):
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

    def uint8_images(self) -> torch.Tensor:
        """All items' images as one (N, C, H, W) uint8 tensor (in-memory datasets only: a
        torchvision CIFAR dataset's ``data`` (N, H, W, C) array or an ``images`` (N, C, H, W)
        tensor), for ``device_resident`` loading."""
        data = getattr(self.base, "data", None)
        if isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 4:
            imgs = torch.from_numpy(data).permute(0, 3, 1, 2)
        elif torch.is_tensor(images := getattr(self.base, "images", None)) and images.dtype == torch.uint8:
            imgs = images
        else:
            raise TypeError(
                f"device_resident=True needs the images in memory as uint8 arrays; {type(self.base).__name__} "
                "has neither a (N, H, W, C) uint8 `data` array nor a (N, C, H, W) uint8 `images` tensor. "
                "Use device_resident=False (loader workers) for this dataset."
            )
        if self.indices is not None:
            imgs = imgs[torch.from_numpy(self.indices)]
        return imgs.contiguous()


class _Positions(Dataset):
    """Item i is i: the device-resident loaders fetch only sample indices."""

    def __init__(self, ds: IndexedDataset):
        self.targets = ds.targets  # class-aware samplers read them
        self.n = len(ds)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class ResidentBatch:
    """A batch of sample indices into a device-resident split; the datamodule's
    ``on_after_batch_transfer`` turns it into ``(index, views, target)`` on the device."""

    def __init__(self, index: torch.Tensor, split: str):
        self.index = index
        self.split = split

    def to(self, device, non_blocking: bool = False) -> ResidentBatch:  # Lightning's batch transfer
        return ResidentBatch(self.index.to(device, non_blocking=non_blocking), self.split)

    def pin_memory(self) -> ResidentBatch:
        return ResidentBatch(self.index.pin_memory(), self.split)

    def __len__(self) -> int:
        return len(self.index)


class ResumableDataLoader(DataLoader):
    """The training loader. Its position in the epoch is resumable, but the state lives in the
    datamodule (:meth:`LongTailDataModule.state_dict`), not here: Lightning restores a loader's
    own ``state_dict`` only in ``fit_loop.setup_data``, which has already run (and built the
    iterator) when ``configure_optimizers`` reads ``trainer.estimated_stepping_batches``, as every
    per-step schedule does; the datamodule's state is restored before that. The two empty methods
    make the loader ``_Stateful`` for Lightning, which otherwise warns on a mid-epoch resume that
    the loader is not resumable."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


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
        device_resident: bool = False,
    ):
        """``sampler``: how training images are drawn (``data/samplers.py``): ``instance`` each
        image once per epoch, ``class_balanced`` / ``sqrt`` class-aware; all seeded by ``seed``
        and the epoch, and sharded by rank so that Lightning does not wrap them under DDP.

        ``device_resident``: keep every split's uint8 images on the training device (CIFAR-LT,
        Digits-LT: tens of MB) and augment batches there (the ``batched`` backend of the
        views, ``data/augment.py``): the loaders yield only sample indices (no worker
        processes, no pixels copied per step) and :meth:`on_after_batch_transfer` builds
        ``(index, views, target)``. Same samplers, DDP sharding and index contract; the views
        have the same distribution as on the worker path, from the device's random stream
        (seeded by ``seed``, the rank and the epoch)."""
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
        self.device_resident = device_resident
        self.datasets: dict[str, Any] = {}  # IndexedDataset (or a subclass's own) per split
        self._train_sampler: Any = None  # the training loader's sampler (its order state is checkpointed)
        self._order_state: dict | None = None  # a restored order state for the next training sampler
        # device-resident state: split -> (uint8 images, targets) per device, generators, norm
        self._resident: dict[tuple[str, str], tuple[torch.Tensor, torch.Tensor]] = {}
        self._generators: dict[str, tuple[int, torch.Generator]] = {}
        self._norm: dict[str, tuple[torch.Tensor, torch.Tensor] | None] = {}

    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    # ----- what subclasses provide ------------------------------------------------------
    def train_targets(self) -> np.ndarray:
        raise NotImplementedError

    def build_datasets(self, stage: str) -> dict[str, Any]:
        """Return {'train': ..., 'val': ..., 'test': ...} (the keys this stage needs)."""
        raise NotImplementedError

    @property
    def validates_on_test(self) -> bool | None:
        """Whether the validation stage evaluates the test images, so that a best epoch is
        selected on the test set (the paper-style, optimistic "best on test"); None: unknown."""
        return None

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

    @cached_property
    def train_augmentations(self) -> list[Augmentation]:
        """The training views as :class:`Augmentation` objects (the batched backend needs them;
        resolved once, so that their per-device tables are built once)."""
        return [_as_augmentation(v, "train_views") for v in self.train_views]

    @cached_property
    def eval_augmentation(self) -> Augmentation:
        return _as_augmentation(self.eval_view, "eval_view")

    def setup(self, stage: str | None = None) -> None:
        for key, ds in self.build_datasets(stage or "fit").items():
            self.datasets.setdefault(key, ds)
        train = self.datasets.get("train")
        if train is not None and self.drop_last and len(train) < self.batch_size:
            raise ValueError(
                f"batch_size={self.batch_size} is larger than the training set ({len(train)} images) "
                "with drop_last=True: every batch would be dropped. Lower batch_size or set drop_last=False."
            )

    def _train_order(self, ds: Dataset):
        """The training sampler, with a restored order state applied (a mid-epoch resume then
        skips the positions the checkpointed run had consumed)."""
        sampler: Any = build_sampler(self.sampler, ds, seed=self.seed)  # resumable: has load_state_dict
        if self._order_state is not None:
            sampler.load_state_dict(self._order_state)
            self._order_state = None
        self._train_sampler = sampler
        return sampler

    def state_dict(self) -> dict:
        """The training data order (Lightning saves it in every checkpoint and restores it
        before the training loader is built): the sampler's epoch and the positions of this
        rank the loop has consumed, as Lightning resumes them (a checkpoint written in
        ``on_train_batch_end`` counts that batch as done). Without it a mid-epoch resume
        re-draws the epoch's first batches."""
        trainer, sampler = self.trainer, self._train_sampler
        if sampler is None or trainer is None:
            return {}
        p = trainer.fit_loop.epoch_loop.batch_progress.current
        done = p.processed if p.ready == p.started == p.processed else p.completed  # type: ignore[attr-defined]  # a _ProcessedTracker
        total = trainer.num_training_batches
        consumed = sampler.num_samples if done >= total else min(done * self.batch_size, sampler.num_samples)
        return {"train_order": sampler.state_dict(consumed=consumed)}

    def load_state_dict(self, state_dict: dict) -> None:
        order = state_dict.get("train_order")
        if order is None:
            return
        if self._train_sampler is not None:  # the loader exists already
            self._train_sampler.load_state_dict(order)
        else:
            self._order_state = order

    def train_padding_weight(self, batch_idx: int, n: int, device) -> torch.Tensor | None:
        """0/1 weights of the ``n`` items of training batch ``batch_idx`` on this rank: 0 for the
        distributed sampler's padding (the repeats that make the ranks' shards equally long), 1
        for images; None when the epoch has no padding (one process, N divisible by the world
        size, or a class-aware sampler). Built on ``device`` from host integers: no sync."""
        sampler = self._train_sampler
        if sampler is None or sampler.real_positions() >= sampler.num_samples:
            return None
        start = batch_idx * self.batch_size
        return (torch.arange(start, start + n, device=device) < sampler.real_positions()).to(torch.float32)

    def _loader(self, ds: Dataset, train: bool, split: str = "train", collate_fn: Callable | None = None) -> DataLoader:
        if self.device_resident:
            return self._resident_loader(ds, train, split)
        return (ResumableDataLoader if train else DataLoader)(
            ds,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=self._train_order(ds) if train else None,
            drop_last=self.drop_last if train else False,
            num_workers=self.num_workers,
            persistent_workers=self.persistent_workers,
            pin_memory=self.pin_memory and torch.cuda.is_available(),
            collate_fn=collate_fn,
        )

    def train_eval_dataset(self) -> EvalViewDataset:
        """The training images with the evaluation view, in order (frozen-feature probes, kNN)."""
        train = self.datasets.get("train") or self.build_datasets("fit")["train"]
        return EvalViewDataset(train, self.eval_transform())

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["train"], train=True, split="train")

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["val"], train=False, split="val")

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.datasets["test"], train=False, split="test")

    # ----- device-resident path ----------------------------------------------------------------
    def _resident_loader(self, ds: Dataset, train: bool, split: str) -> DataLoader:
        if not isinstance(ds, IndexedDataset):
            raise TypeError(f"device_resident=True needs IndexedDataset splits, got {type(ds).__name__} for {split!r}")
        positions = _Positions(ds)
        return (ResumableDataLoader if train else DataLoader)(
            positions,
            batch_size=self.batch_size if train else self.eval_batch_size,
            sampler=self._train_order(positions) if train else None,
            drop_last=self.drop_last if train else False,
            num_workers=0,
            collate_fn=lambda items, split=split: ResidentBatch(torch.tensor(items, dtype=torch.long), split),  # type: ignore[misc]
            # pinned, so that the index copy is asynchronous (a copy from pageable memory makes
            # the host wait until the device reaches it, i.e. until the previous step is done)
            pin_memory=self.pin_memory and torch.cuda.is_available(),
        )

    def resident_split(self, split: str, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images (N, C, H, W), targets (N,)) of ``split`` on ``device``, copied there once."""
        key = (split, str(device))
        if key not in self._resident:
            ds = self.datasets[split]
            assert isinstance(ds, IndexedDataset)
            self._resident[key] = (ds.uint8_images().to(device), torch.as_tensor(ds.targets, dtype=torch.long).to(device))
        return self._resident[key]

    def _generator(self, device: torch.device, stream: Literal["views", "boxes"] = "views") -> torch.Generator:
        """The generator of the training views on ``device`` (``stream='views'``) or of the crop
        boxes of variable-size images (``'boxes'``, on the host), re-seeded from (seed, rank,
        epoch) at each epoch (host-side state: no synchronisation); the two streams differ."""
        epoch = self.trainer.current_epoch if self.trainer is not None else 0
        key = f"{stream}:{device}"
        held = self._generators.get(key)
        if held is None or held[0] != epoch:
            g = torch.Generator(device=device)
            g.manual_seed(augmentation_seed(self.seed, dist.rank(), epoch) + (stream == "boxes"))
            held = (epoch, g)
            self._generators[key] = held
        return held[1]

    def _normalisation(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor] | None:
        key = str(device)
        if key not in self._norm:
            self._norm[key] = (
                None
                if self.mean is None or self.std is None
                else (torch.tensor(self.mean, dtype=torch.float32).to(device), torch.tensor(self.std, dtype=torch.float32).to(device))
            )
        return self._norm[key]

    def resident_views(self, x: torch.Tensor, index: torch.Tensor, train: bool, generator: torch.Generator) -> list[torch.Tensor]:
        """Views of the uint8-valued float batch ``x`` (hook for datamodules whose views need
        more than the images, e.g. BoostedCL's per-sample weights)."""
        augs = self.train_augmentations if train else [self.eval_augmentation]
        return [aug.batched(x, generator, self.image_size) for aug in augs]

    def materialize(self, batch: ResidentBatch) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """``(index, views, target)`` of a device-resident batch, on the index's device."""
        index = batch.index
        images, targets = self.resident_split(batch.split, index.device)
        x = images[index].float()
        train = batch.split == "train"
        gen = self._generator(index.device)  # evaluation views draw nothing from it
        norm = self._normalisation(index.device)
        views = [B.normalize(v, *(norm or (None, None))) for v in self.resident_views(x, index, train, gen)]
        return index, views, targets[index]

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if isinstance(batch, ResidentBatch):
            return self.materialize(batch)
        return batch


def augmentation_seed(seed: int, rank: int, epoch: int) -> int:
    """Seed of the device-side augmentation stream of ``rank`` in ``epoch`` (distinct per rank)."""
    return (int(seed) * 1_000_003 + int(rank) * 7_919 + int(epoch) * 104_729) % (2**63 - 1)


def _as_augmentation(view, what: str) -> Augmentation:
    aug = resolve_view(view)
    if not isinstance(aug, Augmentation):
        raise TypeError(
            f"{what} entry {view!r} is a plain callable: the device-resident (batched) backend needs a preset "
            "name or an ltcl_lightning.data.augment.Augmentation object"
        )
    return aug
