"""Long-tail data: imbalance profiles, seeded subset selection, published index files (the
Many / Medium / Few vocabulary is in :mod:`ltcl_lightning.longtail`).

Pure numpy: no model, loss or Lightning import (see STYLE.md).
Specification: ``data_and_eval.md`` section 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from ltcl_lightning import splits

Profile = Literal["exp", "step"]


def class_counts_from_profile(
    num_classes: int, n_max: int, imbalance_factor: float, profile: Profile = "exp", step_fraction: float = 0.5
) -> list[int]:
    """Per-class image counts, head (class 0) to tail.

    exp:  ``n_i = floor(n_max * (1/IF) ** (i / (C - 1)))``
    step: the first ``round(C * mu)`` classes keep ``n_max``, the rest get ``floor(n_max / IF)``.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if n_max < 1:
        raise ValueError(f"n_max must be >= 1, got {n_max}")
    if not imbalance_factor >= 1:
        raise ValueError(
            f"imbalance_factor must be >= 1 (n_max / n_min; 1 = balanced), got {imbalance_factor}. "
            "An imbalance ratio such as 0.01 is written as imbalance_factor=100."
        )
    if profile == "exp":
        if num_classes == 1:
            return [n_max]
        return [int(math.floor(n_max * (1.0 / imbalance_factor) ** (i / (num_classes - 1)))) for i in range(num_classes)]
    if profile == "step":
        n_head = int(round(num_classes * step_fraction))
        return [n_max] * n_head + [int(math.floor(n_max / imbalance_factor))] * (num_classes - n_head)
    raise ValueError(f"unknown profile {profile!r}: expected 'exp' or 'step'")


def select_longtail_indices(labels: Sequence[int] | np.ndarray, counts: Sequence[int], seed: int = 0) -> np.ndarray:
    """The LDAM-DRW CIFAR-LT construction, index for index.

    Equivalent to ``np.random.seed(seed)``, then for each class c in increasing order
    ``idx = np.where(labels == c)[0]; np.random.shuffle(idx); keep idx[:n_c]``, but with a local
    ``RandomState`` so the global numpy RNG is left alone.
    """
    labels = np.asarray(labels)
    rng = np.random.RandomState(seed)
    selected = []
    for c, n_c in enumerate(counts):
        idx = np.where(labels == c)[0]
        if len(idx) < n_c:
            raise ValueError(f"class {c} has {len(idx)} images, the profile asks for {n_c}")
        rng.shuffle(idx)
        selected.append(idx[:n_c])
    return np.concatenate(selected).astype(np.int64)


def check_val_per_class(val_per_class: int, hint: str = "", **alternatives) -> int:
    """``val_per_class`` as given; refused when negative, or together with another source of
    validation images (``alternatives``: argument name -> value, ``None`` when not given)."""
    if val_per_class < 0:
        raise ValueError(f"val_per_class must be >= 0 (0: no hold-out), got {val_per_class}")
    given = [(name, value) for name, value in alternatives.items() if value is not None]
    if val_per_class and given:
        name, value = given[0]
        raise ValueError(f"pass {name} ({value!r}) or val_per_class ({val_per_class}), not both: each defines the validation set.{hint}")
    return val_per_class


def _first_per_class(idx: np.ndarray, labels: np.ndarray, quota: np.ndarray, rng: np.random.RandomState) -> np.ndarray:
    """A seeded random choice of ``quota[c]`` entries of ``idx`` of each class ``c`` (fewer if it
    has fewer): one shuffle and one stable sort by class, not a pass over ``idx`` per class."""
    idx = idx[rng.permutation(len(idx))]
    idx = idx[np.argsort(labels[idx], kind="stable")]
    lab = labels[idx]
    rank = np.arange(len(idx)) - np.searchsorted(lab, lab, side="left")  # position within its class
    return idx[rank < quota[lab]]


def hold_out_per_class(
    labels: np.ndarray, train_idx: np.ndarray, per_class: int, seed: int = 0, pool: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
    """A seeded, balanced validation hold-out of ``per_class`` images of every class.

    Drawn first from the images of ``pool`` (indices into ``labels``; default: all of them) that
    the training subset ``train_idx`` does not use, so the training set stays as published; a class
    with fewer spare images (the head class of a CIFAR-LT profile uses every image it has) gives up
    the missing ones from its training images. Returns ``(train_idx without those, in their
    order; the held-out indices, sorted; {class: training images it gave up}``). Refuses a
    hold-out that would leave a class without training images.
    """
    labels = np.asarray(labels)
    train_idx = np.asarray(train_idx, dtype=np.int64)
    if per_class < 1:
        raise ValueError(f"val_per_class must be >= 1 for a hold-out, got {per_class}")
    num_classes = int(labels.max()) + 1
    pool = np.arange(len(labels)) if pool is None else np.asarray(pool, dtype=np.int64)
    spare = np.setdiff1d(pool, train_idx)
    rng = np.random.RandomState(seed)
    from_spare = _first_per_class(spare, labels, np.full(num_classes, per_class), rng)
    missing = per_class - np.bincount(labels[from_spare], minlength=num_classes)
    own = np.bincount(labels[train_idx], minlength=num_classes)
    short = np.flatnonzero((missing > 0) & (own <= missing))
    if len(short):
        c = int(short[0])
        raise ValueError(
            f"val_per_class={per_class} cannot be held out for class {c}: it has {per_class - missing[c]} images "
            f"outside the training subset and {own[c]} in it, and would keep no training image ({len(short)} classes "
            "are that short). Lower val_per_class."
        )
    from_train = _first_per_class(train_idx, labels, missing, rng)
    val = np.sort(np.concatenate([from_spare, from_train])).astype(np.int64)
    taken = {int(c): int(missing[c]) for c in np.flatnonzero(missing > 0)}
    return train_idx[~np.isin(train_idx, val)], val, taken


def load_index_file(path: str, dataset_size: int) -> np.ndarray:
    """Load and validate a subset file: a shipped split by name (``cifar100/split1_D_i``, see
    :mod:`ltcl_lightning.splits`) or the path to a ``.npy`` index file."""
    source = splits.resolve(path)  # raises FileNotFoundError naming the shipped splits
    try:
        arr = np.load(source, allow_pickle=False)
    except Exception as err:  # corrupt file, pickle, wrong format
        raise ValueError(
            f"split file {path!r} could not be read as a numpy .npy array ({err}). "
            "Expected a 1-D int64 array of indices into the training set."
        ) from None
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"split file {path!r} holds an array of shape {arr.shape} and dtype {arr.dtype}; "
            "expected a 1-D integer array of indices into the training set."
        )
    if arr.size == 0:
        raise ValueError(f"split file {path!r} is empty")
    bad = (arr < 0) | (arr >= dataset_size)
    if bad.any():
        raise ValueError(
            f"split file {path!r} has {int(bad.sum())} indices outside [0, {dataset_size}) "
            f"(first: {arr[bad][:5].tolist()}); is it a split for another dataset?"
        )
    uniq, counts = np.unique(arr, return_counts=True)
    if len(uniq) != len(arr):
        dup = uniq[counts > 1]
        raise ValueError(
            f"split file {path!r} repeats {len(dup)} indices (first: {dup[:5].tolist()}); a subset must list every image at most once."
        )
    return arr.astype(np.int64)


def check_subset_labels(indices: np.ndarray, labels: np.ndarray, path: str, dataset: str, hint: str = "") -> None:
    """Refuse a subset file whose class histogram under ``labels`` looks label-blind.

    A subset made for these labels is either balanced exactly (the published ``*_D_b``,
    ``*_S_b``, ``trainIdxList``, ``valIdxList``, few-shot files: chi-square 0) or long-tailed
    (``*_D_i``: chi-square per degree of freedom > 100). A subset made for another labelling
    of the same images (a CIFAR-100 split read as CIFAR-10, or the reverse) draws every class in
    proportion to its share, as a random sample would: chi-square per degree of freedom near 1
    (0.1 .. 1.5 on every published CIFAR file read with the other dataset's labels).
    Files that leave a class empty are left to the datamodule's class-count check; below 50
    expected images per class the test has no power and is skipped.
    """
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = int(labels.max()) + 1
    if len(indices) >= len(labels) or num_classes < 2:
        return
    counts = np.bincount(labels[indices], minlength=num_classes).astype(np.float64)
    if (counts == 0).any():
        return  # classes without images: the datamodule's class-count check names them
    expected = len(indices) * np.bincount(labels, minlength=num_classes) / len(labels)
    if expected.min() < 50:
        return  # too few images per class to tell a small long-tailed subset from a random one
    present = expected > 0
    chi2 = float(((counts[present] - expected[present]) ** 2 / expected[present]).sum()) / max(1, int(present.sum()) - 1)
    if 0.02 < chi2 < 5.0:
        raise ValueError(
            f"split file {path!r} does not look like a {dataset} subset: under {dataset}'s labels its {len(indices)} "
            f"images fall into the classes as a label-blind random sample would (per class {int(counts.min())} .. "
            f"{int(counts.max())}, chi-square per degree of freedom {chi2:.2f}; a subset made for these labels is "
            f"balanced exactly or long-tailed, far from 1). It is most likely a split file of another dataset that "
            f"indexes the same images{hint}. Pass the {dataset} file (e.g. splits/<dataset>/split1_D_i.npy); if a "
            "random subset is really meant, set check_split_labels=false."
        )
