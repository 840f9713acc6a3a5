"""callbacks/safety.py through `ltcl`: a diverged run stops at the first non-finite loss (and a
non-finite epoch is never the best one); SIGTERM saves a resumable checkpoint and exits 143
(issue 11, cases 5 and 9)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from ltcl_lightning.callbacks.safety import SIGTERM_EXIT_CODE, FiniteLossCheck, NonFiniteLossError
from ltcl_lightning.cli import cli_main

REPO = Path(__file__).resolve().parents[2]
QUICK = str(REPO / "experiments" / "quickstart.yaml")


def _diverging(root, *extra) -> list[str]:
    """Cross-entropy on Digits-LT with lr 1e6: the loss reaches 1e16 at step 2 and NaN at step 5."""
    return [
        "fit",
        "--config",
        QUICK,
        "--trainer.max_epochs=3",
        "--trainer.limit_train_batches=3",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root}",
        "--trainer.callbacks=[]",
        "--model=ltcl_lightning.methods.ce.CrossEntropy",
        "--model.init_args.backbone=tiny",
        "--model.init_args.optimizer=torch.optim.SGD",
        "--model.init_args.optimizer.init_args.lr=1e6",
        *extra,
    ]


def test_diverged_run_stops_at_the_first_non_finite_loss(tmp_path):
    # before: the run finished with exit 0, NaN loss from step 5 on
    with pytest.raises(NonFiniteLossError, match=r"the training loss is (nan|inf) at epoch 1, batch 2:"):
        cli_main(_diverging(tmp_path))


def test_check_disabled_trains_on_but_never_picks_a_non_finite_epoch_as_best(tmp_path):
    # before: epoch 0 (NaN validation logits, acc 0.1) became the best epoch
    cli = cli_main(
        _diverging(
            tmp_path, "--trainer.callbacks+=ltcl_lightning.callbacks.safety.FiniteLossCheck", "--trainer.callbacks.init_args.enabled=false"
        )
    )
    assert cli.trainer.state.finished and cli.trainer.current_epoch == 3
    assert torch.isnan(cli.trainer.callback_metrics["train/loss"])
    assert cli.model.best_val["epoch"] == -1  # no epoch was finite
    assert "val_best" not in cli.model.last_eval


class _Strategy:
    @staticmethod
    def reduce_boolean_decision(decision, all=True):
        return decision


def test_sparse_checks_still_name_the_first_bad_step():
    cb = FiniteLossCheck(check_every_n_steps=4)
    trainer = SimpleNamespace(current_epoch=4, is_last_batch=False, strategy=_Strategy(), optimizers=[])
    losses = [1.0, 2.0, float("inf"), float("nan")]
    for step, value in enumerate(losses[:3]):
        cb.on_train_batch_end(trainer, None, {"loss": torch.tensor(value)}, None, step)  # no check yet
    with pytest.raises(NonFiniteLossError, match="the training loss is inf at epoch 4, batch 2"):
        cb.on_train_batch_end(trainer, None, {"loss": torch.tensor(losses[3])}, None, 3)


# ----- SIGTERM ---------------------------------------------------------------------------------------
_SLOW = """
import pathlib, time
import lightning.pytorch as pl

class SlowMarker(pl.Callback):
    '''Writes MARKER after the 3rd step, then takes 0.3 s per step so that the signal lands mid-run.'''
    def __init__(self, marker: str):
        self.marker = marker
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == 3:
            pathlib.Path(self.marker).write_text("ready")
        if trainer.global_step >= 3:
            time.sleep(0.3)
"""


def test_sigterm_saves_a_resumable_checkpoint_and_exits_143(tmp_path):
    # before: SIGTERM -> exit status 0, no checkpoint
    (tmp_path / "slow_marker.py").write_text(textwrap.dedent(_SLOW))
    marker = tmp_path / "ready"
    root = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    common = [
        "--config",
        QUICK,
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        "--trainer.enable_model_summary=false",
        "--trainer.limit_val_batches=1",
        f"--trainer.default_root_dir={root}",
        "--trainer.callbacks=[]",
        "--trainer.enable_checkpointing=false",
    ]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ltcl_lightning.cli",
            "fit",
            *common,
            "--trainer.max_epochs=50",
            "--trainer.callbacks+=slow_marker.SlowMarker",
            f"--trainer.callbacks.init_args.marker={marker}",
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.time() < deadline, "training did not reach step 3"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == SIGTERM_EXIT_CODE == 143, out[-3000:]
    saved = root / "hpc_ckpt_1.ckpt"
    assert saved.is_file(), out[-3000:]
    assert f"saved a resumable checkpoint to {saved}" in out
    ckpt = torch.load(saved, weights_only=True)
    step = ckpt["global_step"]
    assert step >= 3 and ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == step

    # the checkpoint resumes: the run continues from that step to the end of epoch 0 and beyond
    cli = cli_main(["fit", *common, "--trainer.max_epochs=2", f"--ckpt_path={saved}"])
    assert cli.trainer.state.finished
    assert cli.trainer.global_step == 2 * cli.trainer.num_training_batches


# ----- the same callbacks from Python (Trainer.fit without ltcl) ------------------------------------
def _python_diverging(root, callbacks=()):
    import lightning.pytorch as pl

    from ltcl_lightning.data.digits import DigitsLTDataModule
    from ltcl_lightning.methods.ce import CrossEntropy

    class Diverging(CrossEntropy):  # the loss is NaN from the third step on
        def training_loss(self, index, views, target):
            out = super().training_loss(index, views, target)
            return {**out, "loss": out["loss"] * (float("nan") if self.global_step >= 2 else 1.0)}

    torch.manual_seed(0)
    dm = DigitsLTDataModule(batch_size=64, train_views=["digits"])
    model = Diverging(10, backbone="tiny")
    trainer = pl.Trainer(
        max_epochs=3,
        limit_train_batches=3,
        limit_val_batches=0,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        callbacks=list(callbacks),
        num_sanity_val_steps=0,
    )
    return trainer, model, dm


def test_python_fit_stops_at_the_first_non_finite_loss_too(tmp_path):
    # before: Trainer.fit from Python had neither safety callback and finished with a NaN loss
    trainer, model, dm = _python_diverging(tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"the training loss is nan at epoch 0, batch 2:"):
        trainer.fit(model, datamodule=dm)


def test_python_listed_safety_callback_wins(tmp_path):
    trainer, model, dm = _python_diverging(tmp_path, [FiniteLossCheck(enabled=False)])
    trainer.fit(model, datamodule=dm)
    assert trainer.state.finished
    assert [type(c).__name__ for c in trainer.callbacks].count("FiniteLossCheck") == 1
    assert [type(c).__name__ for c in trainer.callbacks].count("PreemptionCheckpoint") == 1


def _method_classes():
    import inspect

    import ltcl_lightning.methods as M
    from ltcl_lightning.methods.base import LongTailMethod

    seen = {}
    for mod in __import__("pkgutil").iter_modules(M.__path__):
        m = __import__(f"ltcl_lightning.methods.{mod.name}", fromlist=["_"])
        for _, cls in inspect.getmembers(m, inspect.isclass):
            if issubclass(cls, LongTailMethod) and "configure_callbacks" in {k for c in cls.__mro__ for k in vars(c)}:
                seen[cls.__qualname__] = cls
    return sorted(seen.items())


@pytest.mark.parametrize("name, cls", _method_classes())
def test_every_method_adds_each_safety_callback_once(name, cls):
    from ltcl_lightning.callbacks.safety import PreemptionCheckpoint

    model = cls.__new__(cls)  # configure_callbacks reads only the trainer
    model._trainer = None
    types = [type(c) for c in cls.configure_callbacks(model)]
    assert len(types) == len(set(types)), types  # e.g. BoostedSDCLR = BoostedCL's + SDCLR's lists
    assert FiniteLossCheck in types and PreemptionCheckpoint in types
