"""Training samplers in one process: seeded per epoch, class frequencies n_c^q / sum n^q, shards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler

from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.data.samplers import ClassAwareSampler, InstanceSampler, build_sampler

COUNTS = np.array([900, 90, 10])
TARGETS = np.random.default_rng(0).permutation(np.repeat(np.arange(3), COUNTS))


class _Labelled:
    targets = TARGETS

    def __len__(self):
        return len(TARGETS)


@pytest.mark.parametrize("name", ["instance", "class_balanced", "sqrt"])
def test_deterministic_per_seed_and_epoch(name):
    a, b = build_sampler(name, _Labelled(), seed=3), build_sampler(name, _Labelled(), seed=3)
    assert isinstance(a, DistributedSampler)  # Lightning keeps it as it is under DDP
    first = list(a)
    assert first == list(b) and len(first) == len(TARGETS)
    a.set_epoch(1)
    assert list(a) != first
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(build_sampler(name, _Labelled(), seed=4)) != first


def test_instance_is_a_permutation():
    assert sorted(InstanceSampler(len(TARGETS), seed=1)) == list(range(len(TARGETS)))


@pytest.mark.parametrize("power,expected", [(0.0, [1 / 3] * 3), (0.5, np.sqrt(COUNTS) / np.sqrt(COUNTS).sum())])
def test_class_frequencies(power, expected):
    """Class-balanced: each class 1/3; square-root: sqrt(n_c) / sum sqrt(n_k) (0.703, 0.222, 0.074).
    Within a class every image is equally likely."""
    s = ClassAwareSampler(TARGETS, power, seed=0, num_samples=90_000)
    idx = np.asarray(list(s))
    freq = np.bincount(TARGETS[idx], minlength=3) / len(idx)
    # binomial std <= 0.0017 at 90,000 draws: 0.008 is about 5 sigma
    np.testing.assert_allclose(freq, expected, atol=0.008)
    tail = idx[TARGETS[idx] == 2]
    per_image = np.bincount(tail, minlength=len(TARGETS))[TARGETS == 2]
    assert per_image.min() > 0.7 * per_image.mean() and per_image.max() < 1.3 * per_image.mean()


@pytest.mark.parametrize("world", [2, 3])
def test_explicit_rank_shards_partition_one_draw(world):
    shards = [list(ClassAwareSampler(TARGETS, 0.0, num_replicas=world, rank=r, seed=5)) for r in range(world)]
    draw = ClassAwareSampler(TARGETS, 0.0, num_replicas=world, rank=0, seed=5).global_draw().tolist()
    assert len(draw) == world * len(shards[0]) and all(len(s) == len(shards[0]) for s in shards)
    interleaved = [shards[p % world][p // world] for p in range(len(draw))]
    assert interleaved == draw
    inst = [list(InstanceSampler(len(TARGETS), num_replicas=world, rank=r)) for r in range(world)]
    assert set().union(*map(set, inst)) == set(range(len(TARGETS)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="rank 2 is not in"):
        InstanceSampler(10, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="unknown sampler 'weighted'"):
        build_sampler("weighted", _Labelled())
    with pytest.raises(ValueError, match="no `targets` attribute"):
        build_sampler("sqrt", range(10))
    with pytest.raises(ValueError, match="sampler must be"):
        DigitsLTDataModule(sampler="balanced")


def test_datamodule_uses_the_named_sampler():
    dm = DigitsLTDataModule(sampler="sqrt", batch_size=64, seed=2)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, ClassAwareSampler) and loader.sampler.power == 0.5
    index, _, target = next(iter(loader))
    assert index.tolist() == list(ClassAwareSampler(dm.train_targets(), 0.5, seed=2))[:64]
    assert torch.equal(target, torch.as_tensor(dm.train_targets())[index])
