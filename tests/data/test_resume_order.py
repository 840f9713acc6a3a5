"""Resumable training data order (issue 11 item 4): a run resumed from a mid-epoch checkpoint
sees exactly the images the uninterrupted run sees after that step (same indices, same order),
so ProCo's vMF window and BoostedCL's per-sample memory end identical; the sampler state
itself (what is checkpointed, what is refused)."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import SMALL_COUNTS
from lightning.pytorch.callbacks import ModelCheckpoint

from ltcl_lightning.data.samplers import ClassAwareSampler, InstanceSampler, build_sampler


class IndexLog(pl.Callback):
    """(global step, sample indices) of every training batch."""

    def __init__(self):
        self.steps: list[tuple[int, list[int]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps.append((trainer.global_step, batch[0].tolist()))


def _trainer(root, callbacks, **kw) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(root),
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        callbacks=list(callbacks),
        num_sanity_val_steps=0,
        **kw,
    )


def _digits(sampler: str, num_workers: int, device_resident: bool):
    from ltcl_lightning.data.digits import DigitsLTDataModule

    # deterministic views: the runs can then be compared bit for bit (the loader order is the point)
    return DigitsLTDataModule(
        test_per_class=120,
        batch_size=32,
        num_workers=num_workers,
        train_views=["eval"] * 3,
        sampler=sampler,
        device_resident=device_resident,
        pin_memory=False,
        persistent_workers=num_workers > 0,
    )


def _proco():
    from ltcl_lightning.methods.proco import ProCo

    return ProCo(10, backbone="tiny", proj_dim=8, proj_hidden_dim=16)


@pytest.mark.parametrize(
    "sampler, num_workers, device_resident, stop",
    [
        ("instance", 0, False, 10),  # 217 images, 7 steps per epoch: stop in epoch 1
        ("class_balanced", 1, False, 3),  # a worker process, stop in epoch 0
        ("sqrt", 0, True, 5),  # device-resident loader
    ],
)
def test_mid_epoch_resume_sees_exactly_the_remaining_images(tmp_path, sampler, num_workers, device_resident, stop):
    torch.manual_seed(0)
    full_log = IndexLog()
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=stop, save_top_k=-1, filename="{step}", save_on_train_epoch_end=False)
    full = _proco()
    _trainer(tmp_path / "full", [full_log, ck]).fit(full, datamodule=_digits(sampler, num_workers, device_resident))
    assert len(full_log.steps) == 14

    resumed_log = IndexLog()
    resumed = _proco()
    _trainer(tmp_path / "resumed", [resumed_log]).fit(
        resumed, datamodule=_digits(sampler, num_workers, device_resident), ckpt_path=str(tmp_path / "ck" / f"step={stop}.ckpt")
    )
    assert resumed_log.steps == full_log.steps[stop:]
    for k, v in full.estimator.state_dict().items():
        assert torch.equal(resumed.estimator.state_dict()[k], v), k
    for k, v in full.state_dict().items():
        assert torch.equal(resumed.state_dict()[k], v), k
    if sampler == "instance":  # epoch 1 across the resume: every image exactly once
        epoch1 = [i for _, idx in full_log.steps[7:stop] + resumed_log.steps[: 14 - stop] for i in idx]
        assert sorted(epoch1) == list(range(217))


# ----- BoostedCL: the per-sample memory sees each image once per epoch across the resume --------
COUNTS = SMALL_COUNTS  # 40 training images, 3 steps of 16 / 16 / 8 (the conftest's small_split)


def test_boosted_cl_mid_epoch_resume_updates_each_sample_once(cifar10_dir, small_split, tmp_path):
    from ltcl_lightning.data.boosted import BoostedCIFAR10LTDataModule
    from ltcl_lightning.methods.boosted_cl import BoostedCL

    def dm():
        return BoostedCIFAR10LTDataModule(data_dir=str(cifar10_dir), split_file=small_split, batch_size=16, num_workers=0, rand_k=1)

    def model():
        return BoostedCL(num_classes=10, backbone="tiny", class_counts=COUNTS, proj_hidden_dim=32, proj_dim=16)

    full_log = IndexLog()
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=4, save_top_k=-1, filename="{step}", save_on_train_epoch_end=False)
    full = model()
    _trainer(tmp_path / "full", [full_log, ck]).fit(full, dm())
    log = IndexLog()
    resumed = model()
    _trainer(tmp_path / "resumed", [log]).fit(resumed, dm(), ckpt_path=str(tmp_path / "ck" / "step=4.ckpt"))
    assert log.steps == full_log.steps[4:]
    # which samples the momentum memory updated in which epoch depends only on the order
    assert torch.equal(resumed.momentum.last_epoch, full.momentum.last_epoch)
    assert (resumed.momentum.last_epoch == 1).all()


# ----- the sampler state ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda world, rank: InstanceSampler(23, num_replicas=world, rank=rank, seed=3),
        lambda world, rank: ClassAwareSampler([0] * 15 + [1] * 6 + [2] * 2, 0.0, num_replicas=world, rank=rank, seed=3),
    ],
)
def test_sampler_skips_the_consumed_prefix_once(make):
    for rank in range(2):
        s = make(2, rank)
        s.set_epoch(4)
        order = list(s)
        state = s.state_dict(consumed=5)
        assert state["epoch"] == 4 and state["consumed"] == 5
        t = make(2, rank)
        t.load_state_dict(state)
        t.set_epoch(4)
        assert list(t) == order[5:]  # the remaining positions of this rank
        assert len(t) == len(order)  # the epoch length Lightning counts batches against
        assert list(t) == order  # only once: the next pass of the same epoch is whole


def test_sampler_state_of_a_finished_epoch_starts_the_next():
    s = InstanceSampler(23, seed=3)
    s.set_epoch(2)
    t = InstanceSampler(23, seed=3)
    t.load_state_dict(s.state_dict(consumed=len(s)))
    assert t.epoch == 3
    t.set_epoch(3)
    s.set_epoch(3)
    assert list(t) == list(s)


@pytest.mark.parametrize(
    "change, match", [(dict(num_replicas=1, rank=0), "2 processes"), (dict(seed=4), "seed"), (dict(num_samples=24), "24")]
)
def test_mid_epoch_state_of_another_setup_is_refused(change, match):
    s = InstanceSampler(23, num_replicas=2, rank=0, seed=3)
    state = s.state_dict(consumed=4)
    args = {**dict(num_samples=23, num_replicas=2, rank=0, seed=3), **change}
    with pytest.raises(ValueError, match=match):
        InstanceSampler(**args).load_state_dict(state)


def test_build_sampler_kinds_all_resume():
    ds = type("D", (), {"targets": np.array([0] * 5 + [1] * 3), "__len__": lambda self: 8})()
    for name in ("instance", "class_balanced", "sqrt"):
        s = build_sampler(name, ds, seed=1)
        s.set_epoch(2)
        order = list(s)
        t = build_sampler(name, ds, seed=1)
        t.load_state_dict(s.state_dict(consumed=3))  # a round trip, not only the methods' presence
        t.set_epoch(2)
        assert list(t) == order[3:], name
