"""Compute switches: each takes effect; every method's step under torch.compile equals eager.

Tolerance of the compiled step (backend ``aot_eager``: Dynamo's trace and AOT autograd, the
stages where a graph break or an in-place tensor saved for backward fails; no code generation,
which would take minutes per method on 2 CPU cores): loss and every gradient equal eager within
rtol 1e-5 / atol 1e-6 (the same float32 ops in the same order).
"""

from __future__ import annotations

import copy

import lightning.pytorch as pl
import pytest
import torch

from ltcl_lightning.callbacks.compute import ComputeSwitches
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

SMALL = dict(backbone="tiny", proj_hidden_dim=32, proj_dim=16)
THREE = ["crop_flip", "digits", "digits"]
METHODS = {
    "SimCLR": (SimCLR, SMALL, None),
    "SDCLR": (SDCLR, SMALL, None),
    "BCL-I": (BoostedCL, SMALL, None),
    "BCL-D": (BoostedSDCLR, SMALL, None),
    "SupCon": (SupCon, SMALL, None),
    "CE": (CrossEntropy, {"backbone": "tiny"}, ["crop_flip"]),
    "BalancedCL": (BalancedCL, SMALL, THREE),
    "ProCo": (ProCo, SMALL, THREE),
    "HCL": (HardNegativeSimCLR, SMALL, None),
    "PaCo": (PaCo, {"backbone": "tiny", "proj_dim": 16, "queue_size": 64}, None),
    "GPaCo": (GPaCo, {"backbone": "tiny", "proj_dim": 16, "queue_size": 64}, None),
    "KCL": (KCL, {"backbone": "tiny", "proj_dim": 16, "queue_size": 64}, None),
    "TSC": (TSC, {"backbone": "tiny", "proj_dim": 16, "queue_size": 64, "target_steps": 5}, None),
}


def _batch(views):
    kw = {"train_views": views} if views else {}
    dm = DigitsLTDataModule(batch_size=16, device_resident=True, **kw)
    dm.setup("fit")
    torch.manual_seed(0)
    return dm, dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)


@pytest.mark.slow  # ~10 s per method on 2 cores (Dynamo + AOT autograd tracing)
@pytest.mark.parametrize("name", list(METHODS))
def test_compiled_step_equals_eager(name):
    cls, kw, views = METHODS[name]
    dm, (index, views_t, target) = _batch(views)
    torch.manual_seed(0)
    eager = cls(10, class_counts=dm.class_counts, **kw)
    if isinstance(eager, TSC):  # its targets are made at first use: once, before the copy (the step is compared)
        _ = eager.assigner.targets
    compiled = copy.deepcopy(eager)
    ComputeSwitches(compile="step", compile_backend="aot_eager").apply(compiled)
    # the instance's training_loss is Dynamo's wrapper of its own method (before: `is not`, true of
    # any two bound methods, so a no-op apply passed)
    assert vars(compiled)["training_loss"]._torchdynamo_orig_callable.__func__ is type(eager).training_loss
    assert "training_loss" not in vars(eager)
    results = []
    for model in (eager, compiled):
        out = model.training_loss(index, views_t, target)
        out["loss"].backward()
        results.append((out["loss"].detach(), [p.grad for p in model.parameters()]))
    (l1, g1), (l2, g2) = results
    torch.testing.assert_close(l2, l1, rtol=1e-5, atol=1e-6)
    assert sum(g is not None for g in g1) > 0
    for a, b in zip(g1, g2):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_compiled_proco_trains_through_the_trainer(tmp_path):
    dm = DigitsLTDataModule(batch_size=16, device_resident=True, train_views=THREE)
    model = ProCo(10, **SMALL)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[ComputeSwitches(compile="step", compile_backend="aot_eager")],
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    assert trainer.global_step == 2 and torch.isfinite(trainer.callback_metrics["train/loss"])


def test_compile_modules_keeps_state_dict_keys():
    model = SimCLR(10, **SMALL)
    keys = list(model.state_dict())
    ComputeSwitches(compile="modules", compile_backend="aot_eager").apply(model)
    assert list(model.state_dict()) == keys
    assert model.backbone._compiled_call_impl is not None


def test_channels_last_parameters_and_inputs():
    model = SimCLR(10, **SMALL)
    ComputeSwitches(channels_last=True).apply(model)
    conv = next(m for m in model.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    model.backbone.register_forward_pre_hook(lambda m, a: seen.append(a[0].is_contiguous(memory_format=torch.channels_last)))
    model.backbone(torch.randn(2, 3, 8, 8))
    assert seen == [True]


def test_bf16_precision_benchmark_and_foreach_take_effect(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)  # restored after the test
    dm = DigitsLTDataModule(batch_size=32)
    model = SimCLR(10, optimizer=lambda p: torch.optim.SGD(p, lr=0.1, foreach=True), **SMALL)
    dtypes = []
    model.backbone.register_forward_hook(lambda m, a, out: dtypes.append(out.dtype))
    trainer = pl.Trainer(
        accelerator="cpu",
        precision="bf16-mixed",
        benchmark=True,
        max_steps=1,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    assert dtypes[0] == torch.bfloat16  # autocast ran the backbone in bfloat16
    assert torch.backends.cudnn.benchmark is True
    assert trainer.optimizers[0].defaults["foreach"] is True


def test_bad_compile_value():
    with pytest.raises(ValueError, match="compile must be"):
        ComputeSwitches(compile="yes")


def test_documented_command_line_parses_and_applies(tmp_path, monkeypatch):
    from pathlib import Path

    from ltcl_lightning.cli import cli_main

    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    cli = cli_main(
        [
            "fit",
            "--config",
            "experiments/quickstart.yaml",
            "--trainer.fast_dev_run=true",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.precision=bf16-mixed",
            "--trainer.benchmark=true",
            "--data.init_args.device_resident=true",
            "--model.init_args.optimizer.init_args.foreach=true",
            "--trainer.callbacks+=ltcl_lightning.callbacks.compute.ComputeSwitches",
            "--trainer.callbacks.channels_last=true",
            "--trainer.callbacks.compile=modules",
            "--trainer.callbacks.compile_backend=aot_eager",
        ]
    )
    switches = [c for c in cli.trainer.callbacks if isinstance(c, ComputeSwitches)]
    assert len(switches) == 1 and switches[0].channels_last and switches[0].compile == "modules"
    assert cli.datamodule.device_resident and cli.trainer.precision == "bf16-mixed"
    assert cli.model.backbone._compiled_call_impl is not None
    assert cli.trainer.optimizers[0].defaults["foreach"] is True
