"""Zero host-device synchronisations per training step, for every method.

A few training steps of each method on device-resident Digits-LT, with the callbacks the method
adds itself, the default logger and the progress bar; every sync point (``tests/sync_counter.py``)
between the end of the first step and the end of the epoch fails the test, whether the library
calls it or Lightning does on the library's behalf (e.g. reading metrics logged with
``prog_bar=True``). Per-epoch work (re-pruning, publishing BoostedCL's weights) is outside the window.
"""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from sync_counter import SyncCounter

from ltcl_lightning.callbacks.safety import FiniteLossCheck
from ltcl_lightning.data.boosted import BoostedDataModuleMixin
from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.methods import (
    KCL,
    SDCLR,
    TSC,
    BalancedCL,
    BoostedCL,
    BoostedSDCLR,
    CrossEntropy,
    GPaCo,
    HardNegativeSimCLR,
    PaCo,
    ProCo,
    SimCLR,
    SupCon,
)


class BoostedDigitsLTDataModule(BoostedDataModuleMixin, DigitsLTDataModule):
    """Digits-LT with BoostedCL's weight-driven views."""


class _Window(pl.Callback):
    """Counts from the end of the first training step to the end of the epoch."""

    def __init__(self, counter: SyncCounter):
        self.counter = counter

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.counter.__enter__()

    def on_train_epoch_end(self, trainer, pl_module):
        self.counter.__exit__()


THREE = ["crop_flip", "digits", "digits"]
SMALL = dict(backbone="tiny", proj_hidden_dim=32, proj_dim=16)
METHODS = {
    "SimCLR": (lambda dm: SimCLR(10, **SMALL), {}),
    "SDCLR": (lambda dm: SDCLR(10, **SMALL), {}),
    "BCL-I": (lambda dm: BoostedCL(10, class_counts=dm.class_counts, **SMALL), {"boosted": 1}),
    "BCL-D": (lambda dm: BoostedSDCLR(10, class_counts=dm.class_counts, **SMALL), {"boosted": 2}),
    "SupCon": (lambda dm: SupCon(10, **SMALL), {}),
    "CE": (lambda dm: CrossEntropy(10, backbone="tiny"), {"train_views": ["crop_flip"]}),
    "BalancedCL": (lambda dm: BalancedCL(10, **SMALL), {"train_views": THREE}),
    "ProCo": (lambda dm: ProCo(10, **SMALL), {"train_views": THREE}),
    "HCL": (lambda dm: HardNegativeSimCLR(10, **SMALL), {}),
    "PaCo": (lambda dm: PaCo(10, backbone="tiny", proj_dim=16, queue_size=64), {}),
    "GPaCo": (lambda dm: GPaCo(10, backbone="tiny", proj_dim=16, queue_size=64), {}),
    "KCL": (lambda dm: KCL(10, backbone="tiny", proj_dim=16, queue_size=64), {}),
}


def _count_syncs(make_model, data: dict, tmp_path):
    data = dict(data)
    rand_k = data.pop("boosted", None)
    kw = dict(batch_size=32, device_resident=True, **data)
    dm = BoostedDigitsLTDataModule(rand_k=rand_k, crop_scale=(0.5, 1.0), **kw) if rand_k else DigitsLTDataModule(**kw)
    counter = SyncCounter()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        # with the method's default callbacks, the divergence check included (it records on the device
        # every step and reads the record only every check_every_n_steps steps and at the epoch end)
        callbacks=[_Window(counter)],
    )
    trainer.fit(make_model(dm), dm)
    assert any(isinstance(c, FiniteLossCheck) and c.enabled for c in trainer.callbacks)  # measured with it on
    return counter


@pytest.mark.parametrize("name", list(METHODS))
def test_no_host_sync_per_training_step(name, tmp_path):
    counter = _count_syncs(*METHODS[name], tmp_path)
    assert counter.calls == [], f"{name}: host syncs per training step: {counter.summary()}"


def test_tsc_syncs_only_for_its_host_matching(tmp_path):
    """TSC is the one method that syncs per step, by design: the official class-to-target
    matching (scipy's linear_sum_assignment) runs on the host every step (docs/compute.md)."""
    counter = _count_syncs(lambda dm: TSC(10, backbone="tiny", proj_dim=16, queue_size=64, target_steps=5), {}, tmp_path)
    assert counter.calls, "the matching reads the centroids on the host"
    assert all(where is not None and where.startswith("ltcl_lightning/modules/tsc_targets.py") for _, where, _ in counter.calls), (
        counter.summary()
    )


def test_counter_sees_the_sync_points():
    with SyncCounter() as c:
        x = torch.arange(6.0)
        _ = x.sum().item(), x[x > 2], torch.nonzero(x), bool(x[0]), torch.bincount(x.long())
        _ = torch.tensor([1.0], device="cpu"), torch.where(x > 1)
    kinds = [k for k, _, _ in c.calls]
    for k in (
        "Tensor.item",
        "boolean index",
        "torch.nonzero",
        "Tensor.__bool__",
        "torch.bincount",
        "torch.tensor(host data, device=)",
        "torch.where(cond)",
    ):
        assert k in kinds, k
    assert c.library == []  # called from a test frame, not from the library


class _CudaSyncWindow(pl.Callback):
    """torch.cuda's own detector: any synchronising CUDA call in the window raises."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            torch.cuda.set_sync_debug_mode("error")

    def on_train_epoch_end(self, trainer, pl_module):
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(METHODS))
def test_no_cuda_sync_per_training_step(name, tmp_path):
    """On a GPU, with bf16 and device-resident data: torch.cuda.set_sync_debug_mode('error')."""
    make_model, data = METHODS[name]
    data = dict(data)
    rand_k = data.pop("boosted", None)
    kw = dict(batch_size=32, device_resident=True, **data)
    dm = BoostedDigitsLTDataModule(rand_k=rand_k, crop_scale=(0.5, 1.0), **kw) if rand_k else DigitsLTDataModule(**kw)
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_epochs=1,
        limit_train_batches=4,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        callbacks=[_CudaSyncWindow()],
    )
    try:
        trainer.fit(make_model(dm), dm)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer.global_step == 4
