"""Per-epoch state is right after a resume from any checkpoint Lightning writes (issue 11 item 3).

For every stateful method (SDCLR masks, BoostedCL momentum losses and weights, ProCo's vMF
window, TSC's key queue, targets, centroids and assignment) an uninterrupted 2-epoch run records, at every step, the state the step trains with
(the module's state and, for BoostedCL, the weights the loader augments with). Runs resumed from
a mid-epoch checkpoint, from one written at the last batch of an epoch
(``ModelCheckpoint(every_n_train_steps)``) and from one written at the epoch end must train
every remaining step with the uninterrupted run's state (the data order resumes exactly and the
views are deterministic here, so a resumed run repeats the uninterrupted one).
"""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import SMALL_COUNTS
from lightning.pytorch.callbacks import ModelCheckpoint

from ltcl_lightning.data.boosted import BoostedCIFAR10LTDataModule
from ltcl_lightning.data.cifar import CIFAR10LTDataModule
from ltcl_lightning.methods.boosted_cl import BoostedCL
from ltcl_lightning.methods.kcl import TSC
from ltcl_lightning.methods.proco import ProCo
from ltcl_lightning.methods.sdclr import SDCLR

COUNTS = SMALL_COUNTS  # 40 training images, 3 steps of 16 / 16 / 8 (the conftest's small_split)
STEPS_PER_EPOCH, EPOCHS = 3, 2


class DeterministicViews:
    """Views without random numbers (the global RNG is not part of a checkpoint); the boosted
    views depend on the sample's weight, so stale weights change the training."""

    def __init__(self, num_views: int):
        self.num_views = num_views

    def __call__(self, img, w=None):
        x = torch.as_tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1) / 255
        views = [x, x.flip(-1), x.flip(-2)][: self.num_views]
        return views if w is None else [v * (1 + float(w)) for v in views]


def _setup(method: str, cifar10_dir, split):
    common = dict(num_classes=10, backbone="tiny", class_counts=COUNTS, proj_hidden_dim=16, proj_dim=8)
    data = dict(data_dir=str(cifar10_dir), split_file=split, batch_size=16, num_workers=0)
    if method == "sdclr":
        return SDCLR(**common), CIFAR10LTDataModule(**data, train_views=["simclr", "simclr"])
    if method == "boosted_cl":
        return BoostedCL(**common), BoostedCIFAR10LTDataModule(**data, rand_k=1)
    if method == "tsc":  # the key queue and the class targets / centroids / assignment
        tsc = TSC(10, backbone="tiny", class_counts=COUNTS, proj_dim=8, queue_size=24, target_steps=5)
        return tsc, CIFAR10LTDataModule(**data, train_views=["simclr", "simclr"])
    return ProCo(**common), CIFAR10LTDataModule(**data, train_views=["autoaugment_cutout", "simclr", "simclr"])


def _state_keys(method: str, key: str) -> bool:
    if method == "sdclr":
        return key.endswith("prune_mask")
    if method == "boosted_cl":
        return "momentum" in key or "sample_weight" in key
    if method == "tsc":
        return key.startswith(("assigner.", "queue.", "key_encoder."))
    return key.startswith("estimator.") and key != "estimator.seed"


class StateInUse(pl.Callback):
    """The state each step trains with, keyed by global step (read before the step runs)."""

    def __init__(self, method: str):
        self.method, self.states = method, {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        sd = pl_module.state_dict()
        state = {k: v.clone() for k, v in sd.items() if _state_keys(self.method, k)}
        train = trainer.datamodule.datasets["train"]
        if hasattr(train, "sample_weights"):
            state["published"] = train.sample_weights.clone()
        assert state, "no state recorded"
        self.states[trainer.global_step] = (trainer.current_epoch, state)


def _fit(method, cifar10_dir, split, root, callbacks, ckpt_path=None):
    pl.seed_everything(0)
    model, dm = _setup(method, cifar10_dir, split)
    dm.setup("fit")
    dm.datasets["train"].transform = DeterministicViews(3 if method == "proco" else 2)
    trainer = pl.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(root),
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
    )
    trainer.fit(model, dm, ckpt_path=ckpt_path)
    return trainer


def _assert_same(got, want, where):
    assert got[0] == want[0], f"{where}: epoch {got[0]} vs {want[0]}"
    assert got[1].keys() == want[1].keys(), where
    for k in want[1]:
        assert torch.equal(got[1][k], want[1][k]), f"{where}: {k} differs from the uninterrupted run"


@pytest.mark.parametrize("method", ["sdclr", "boosted_cl", "proco", "tsc"])
def test_state_after_resume_equals_uninterrupted_run(method, cifar10_dir, small_split, tmp_path):
    full = StateInUse(method)
    steps = ModelCheckpoint(dirpath=tmp_path / "st", every_n_train_steps=1, save_top_k=-1, filename="{step}")
    epochs = ModelCheckpoint(dirpath=tmp_path / "ep", every_n_epochs=1, save_top_k=-1, filename="{epoch}", save_on_train_epoch_end=True)
    _fit(method, cifar10_dir, small_split, tmp_path, [full, steps, epochs])
    assert sorted(full.states) == list(range(STEPS_PER_EPOCH * EPOCHS))
    positions = {
        "mid-epoch": tmp_path / "st" / "step=2.ckpt",  # one batch of epoch 0 left
        "last batch": tmp_path / "st" / f"step={STEPS_PER_EPOCH}.ckpt",  # before epoch 0's end hooks
        "epoch end": tmp_path / "ep" / "epoch=0.ckpt",
    }
    for name, path in positions.items():
        resumed = StateInUse(method)
        _fit(method, cifar10_dir, small_split, tmp_path / name.replace(" ", "_"), [resumed], ckpt_path=str(path))
        first = min(resumed.states)
        _assert_same(resumed.states[first], full.states[first], f"{name}, first step after resume ({first})")
        assert sorted(resumed.states) == list(range(first, STEPS_PER_EPOCH * EPOCHS)), name
        for step in resumed.states:
            _assert_same(resumed.states[step], full.states[step], f"{name}, step {step}")
