"""Training samplers for long-tailed data that know their rank: instance, class-balanced, square-root.

Each is a :class:`torch.utils.data.DistributedSampler`. That matters under Lightning 2.x with
``use_distributed_sampler=True`` (the default): Lightning keeps a loader's sampler as it is
when it is already a ``DistributedSampler`` (``_requires_distributed_sampler``), and otherwise
wraps a custom sampler in ``DistributedSamplerWrapper``, which shards whatever list each rank's
own copy of the sampler yields. A sampler that draws from an unseeded or rank-dependent RNG then
gives shards of *different* draws (not a partition of one), and the epoch is not reproducible.
Here every rank draws the same epoch from ``seed + epoch`` and keeps positions
``rank, rank + world, ...``: shards are disjoint and together are exactly the single draw.

Rank and world size default to the running process group (via ``utils.dist``) and to 0 / 1
without one, so the same sampler works in a single process.

Class-aware sampling (Kang et al., "Decoupling Representation and Classifier for Long-Tailed
Recognition", ICLR 2020): class c is drawn with probability ``n_c^q / sum_k n_k^q`` (q = 1
instance-balanced, q = 1/2 square-root, q = 0 class-balanced), then one of its images uniformly.
Deviation from the official code: its class-balanced sampler cycles through shuffled per-class
lists; this one draws classes and images independently (with replacement), which has the same
expected class frequencies and needs no per-class Python state.

Resumable order: each sampler has ``state_dict(consumed)`` / ``load_state_dict(state)``. The
state is the epoch, how many of this rank's positions the training loop has consumed (the same on
every rank: ranks step in lockstep) and what fixes the order (seed, world size, dataset size).
Loading a mid-epoch state makes the next pass over that epoch skip the consumed prefix of the
rank's list, once, so a resumed run sees exactly the images the uninterrupted run would have seen
next (``base.ResumableDataLoader`` hands the state to Lightning's checkpoints). A state whose epoch
was finished starts the next epoch. A mid-epoch state of another seed, world size or dataset size
is refused (the remaining images would be another set).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from ltcl_lightning.utils import dist

SamplerName = Literal["instance", "class_balanced", "sqrt"]

#: exponent q of the class frequency n_c^q for each class-aware sampler
CLASS_POWER = {"class_balanced": 0.0, "sqrt": 0.5}


def _rank_and_world(num_replicas: int | None, rank: int | None) -> tuple[int, int]:
    world = dist.world_size() if num_replicas is None else int(num_replicas)
    r = dist.rank() if rank is None else int(rank)
    if world < 1 or not 0 <= r < world:
        raise ValueError(f"rank {r} is not in [0, {world}) (num_replicas={world})")
    return r, world


class _ResumableOrder:
    """The resumable part shared by the samplers (mixed into ``DistributedSampler`` subclasses)."""

    epoch: int
    seed: int
    num_replicas: int
    num_samples: int
    _skip: tuple[int, int] | None = None  # (epoch, positions of this rank to skip in it)

    def _epoch_indices(self) -> list[int]:
        return list(DistributedSampler.__iter__(self))  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        order = self._epoch_indices()
        if self._skip is not None and self._skip[0] == self.epoch:
            order = order[self._skip[1] :]
            self._skip = None
        return iter(order)

    def _fingerprint(self) -> dict:
        return {"seed": int(self.seed), "num_replicas": int(self.num_replicas), "size": len(self.dataset)}  # type: ignore[attr-defined]

    def state_dict(self, consumed: int = 0) -> dict:
        """The order state with ``consumed`` of this rank's positions of the current epoch done
        (``consumed >= num_samples``: the epoch is finished)."""
        return {"epoch": int(self.epoch), "consumed": int(consumed), **self._fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        epoch, consumed = int(state["epoch"]), int(state["consumed"])
        if consumed >= self.num_samples:  # a finished epoch: the next one starts whole
            self.epoch, self._skip = epoch + 1, None
            return
        here = self._fingerprint()
        saved = {k: state.get(k) for k in here}
        if saved != here:
            what = ", ".join(f"{k} {saved[k]} (now {here[k]})" for k in here if saved[k] != here[k])
            raise ValueError(
                f"this checkpoint was written in the middle of epoch {epoch} by a run with {what}: its data order "
                f"cannot be continued here (saved with {saved['num_replicas']} processes, seed {saved['seed']}, "
                f"{saved['size']} samples per epoch). Resume with the same data, seed and number of processes, "
                "or from a checkpoint written at the end of an epoch."
            )
        self.epoch, self._skip = epoch, (epoch, consumed)


class InstanceSampler(_ResumableOrder, DistributedSampler):
    """Every image once per epoch in a seeded random order (torch's ``DistributedSampler``:
    the shards are padded with the first indices of the permutation so ranks get equal length).
    """

    def __init__(self, num_samples: int, num_replicas: int | None = None, rank: int | None = None, seed: int = 0, shuffle: bool = True):
        if num_samples < 1:
            raise ValueError(f"cannot sample from an empty dataset (num_samples={num_samples})")
        r, world = _rank_and_world(num_replicas, rank)
        super().__init__(range(num_samples), num_replicas=world, rank=r, shuffle=shuffle, seed=seed)  # type: ignore[arg-type]

    def real_positions(self) -> int:
        """How many of this rank's positions are images, not padding: the global list is padded
        with its first entries to ``total_size`` and rank r takes positions r, r + W, ..., so a
        local position p is padding iff ``r + p * W >= N``."""
        return len(range(self.rank, len(self.dataset), self.num_replicas))  # type: ignore[arg-type]


class ClassAwareSampler(_ResumableOrder, DistributedSampler):
    """Draws ``len(targets)`` images per epoch (with replacement): a class with probability
    proportional to ``n_c ** power``, then an image of that class uniformly.

    ``power=0`` is class-balanced, ``power=0.5`` square-root sampling.
    """

    def __init__(
        self, targets, power: float, num_replicas: int | None = None, rank: int | None = None, seed: int = 0, num_samples: int | None = None
    ):
        targets = np.asarray(targets, dtype=np.int64)
        if targets.ndim != 1 or targets.size == 0:
            raise ValueError(f"targets must be a non-empty 1-D array of labels, got shape {targets.shape}")
        if targets.min() < 0:
            raise ValueError(f"targets must be non-negative class labels, got {int(targets.min())}")
        if not power >= 0:
            raise ValueError(f"power must be >= 0, got {power}")
        r, world = _rank_and_world(num_replicas, rank)
        total = len(targets) if num_samples is None else int(num_samples)
        super().__init__(range(total), num_replicas=world, rank=r, shuffle=True, seed=seed)  # type: ignore[arg-type]
        self.power = float(power)
        counts = np.bincount(targets)
        present = np.flatnonzero(counts)
        # images grouped by class, and where each class's run starts
        self._order = torch.from_numpy(np.argsort(targets, kind="stable"))
        self._offsets = torch.from_numpy(np.concatenate(([0], np.cumsum(counts)[:-1]))[present])
        self._counts = torch.from_numpy(counts[present])
        weights = counts[present].astype(np.float64) ** self.power
        self.class_probs = torch.from_numpy(weights / weights.sum())
        self.classes = torch.from_numpy(present)

    def global_draw(self) -> torch.Tensor:
        """This epoch's draw for all ranks together (``total_size`` indices)."""
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        k = torch.multinomial(self.class_probs, self.total_size, replacement=True, generator=g)
        u = torch.rand(self.total_size, generator=g, dtype=torch.float64)
        within = (u * self._counts[k]).long().clamp_max(self._counts[k] - 1)
        return self._order[self._offsets[k] + within]

    def real_positions(self) -> int:
        """Every position is a real draw (with replacement: repeats are part of the sampling)."""
        return self.num_samples

    def _epoch_indices(self) -> list[int]:
        return self.global_draw()[self.rank : self.total_size : self.num_replicas].tolist()


def build_sampler(
    name: SamplerName, dataset, seed: int = 0, num_replicas: int | None = None, rank: int | None = None
) -> DistributedSampler:
    """The training sampler called ``name`` for ``dataset`` (class-aware ones read its
    ``targets``: the labels of its items, as ``IndexedDataset`` holds them)."""
    if name == "instance":
        return InstanceSampler(len(dataset), num_replicas=num_replicas, rank=rank, seed=seed)
    if name in CLASS_POWER:
        targets = getattr(dataset, "targets", None)
        if targets is None:
            raise ValueError(
                f"sampler={name!r} needs the labels of the training set, but {type(dataset).__name__} "
                "has no `targets` attribute; wrap it in ltcl_lightning.data.base.IndexedDataset."
            )
        return ClassAwareSampler(targets, CLASS_POWER[name], num_replicas=num_replicas, rank=rank, seed=seed)
    raise ValueError(f"unknown sampler {name!r}: expected 'instance', 'class_balanced' or 'sqrt'")


def expected_class_frequencies(counts, name: SamplerName) -> np.ndarray:
    """Share of each class in a sampler's epoch (for tests and reports)."""
    counts = np.asarray(counts, dtype=np.float64)
    q = 1.0 if name == "instance" else CLASS_POWER[name]
    w = np.where(counts > 0, counts**q, 0.0)
    return w / w.sum()
