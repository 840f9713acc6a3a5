"""Run safety: stop at the first non-finite loss, save a resumable checkpoint on SIGTERM.

Every method adds both (``LongTailMethod.configure_callbacks``: ``ltcl`` and ``Trainer.fit``
from Python alike) unless the trainer lists one of the same type: a listed ``FiniteLossCheck``
with ``enabled: false`` switches the check off, a listed ``PreemptionCheckpoint`` with
``dirpath`` moves the file.
"""

from __future__ import annotations

import math
import os
import signal

import lightning.pytorch as pl
import torch
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException

#: exit status of a process stopped by SIGTERM (128 + signal number), as shells report it
SIGTERM_EXIT_CODE = 128 + int(signal.SIGTERM)


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class FiniteLossCheck(pl.Callback):
    """Raise :class:`NonFiniteLossError` naming the first training step whose loss is NaN / inf
    (lr too high, fp16 overflow, bad inputs), instead of training on: a diverged run otherwise
    exits 0 with a "predict class 0 everywhere" model.

    Every step only records on the device (no host sync: the zero-syncs-per-step guarantee holds
    with this callback on). The record is read every ``check_every_n_steps`` steps (50 by
    default), at the end of every training epoch, before every
    validation run and before every checkpoint is written, so a diverged model is never
    validated, selected as best or saved; the error names the exact first bad step whenever it
    is read. Under DDP the ranks agree through one reduction per check.

    Args:
        enabled: ``False`` switches the check off (list the callback with it).
        check_every_n_steps: steps between two reads of the device record.
    """

    def __init__(self, enabled: bool = True, check_every_n_steps: int = 50):
        if check_every_n_steps < 1:
            raise ValueError(f"check_every_n_steps must be >= 1, got {check_every_n_steps}")
        self.enabled = enabled
        self.check_every_n_steps = check_every_n_steps
        self._where: list[tuple[int, int]] = []  # (epoch, batch) of each step since the last read
        self._first_slot: torch.Tensor | None = None  # device: position in _where of the first bad step, -1 = none
        self._first_value: torch.Tensor | None = None  # device: that step's loss

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not self.enabled:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if not torch.is_tensor(loss):
            return
        value = loss.detach().reshape(-1)[0].double()
        if self._first_slot is None or self._first_slot.device != value.device:
            self._first_slot = torch.full((), -1, dtype=torch.long, device=value.device)
            self._first_value = torch.zeros((), dtype=torch.float64, device=value.device)
        assert self._first_value is not None
        new_bad = (~torch.isfinite(value)) & (self._first_slot < 0)
        self._first_slot = torch.where(new_bad, len(self._where), self._first_slot)
        self._first_value = torch.where(new_bad, value, self._first_value)
        self._where.append((int(trainer.current_epoch), int(batch_idx)))
        if len(self._where) % self.check_every_n_steps == 0:
            self._check(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._check(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        if trainer.state.fn == TrainerFn.FITTING:
            self._check(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self._check(trainer)  # raising here writes nothing (the checkpoint IO never starts)

    def _check(self, trainer) -> None:
        if not self.enabled or self._first_slot is None:
            return
        slot = int(self._first_slot)
        if not trainer.strategy.reduce_boolean_decision(slot >= 0, all=False):
            self._where.clear()
            return
        if slot >= 0:
            epoch, batch = self._where[slot]
            value, where = float(self._first_value), f"at epoch {epoch}, batch {batch}"  # type: ignore[arg-type]
        else:
            value, where = math.nan, f"on another rank by epoch {trainer.current_epoch}"
        lrs = [g["lr"] for opt in trainer.optimizers for g in opt.param_groups]
        raise NonFiniteLossError(
            f"the training loss is {value} {where}: the run diverged. Lower the learning rate (now "
            f"{lrs[:3]}), add gradient clipping (--trainer.gradient_clip_val=1.0), use a wider precision "
            "(bf16 / 32-true instead of 16-mixed), or check the inputs. To train on regardless, list "
            "ltcl_lightning.callbacks.safety.FiniteLossCheck with init_args {enabled: false}."
        )


class PreemptionCheckpoint(pl.Callback):
    """On SIGTERM (SLURM time limit / preemption, cloud spot reclaim, ``kill``) save a resumable
    checkpoint and make the process exit with status 143 (128 + SIGTERM) instead of 0.

    Lightning turns SIGTERM into ``SIGTERMException`` (a ``SystemExit`` with code 0) at the next
    batch boundary on every rank; this callback then writes ``hpc_ckpt_<n>.ckpt`` in ``dirpath``
    (default: the trainer's ``default_root_dir``), the name Lightning resumes from by itself
    when a SLURM job is requeued; elsewhere resume with ``--ckpt_path <that file>``. The
    checkpoint is taken after the step's optimiser and schedule updates, so a resume continues
    with the next batch.
    """

    def __init__(self, dirpath: str | None = None):
        self.dirpath = dirpath
        self.saved_path: str | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        from lightning.pytorch.trainer.connectors.checkpoint_connector import _CheckpointConnector

        folder = self.dirpath or str(trainer.default_root_dir)
        os.makedirs(folder, exist_ok=True)
        path = _CheckpointConnector.hpc_save_path(folder) if trainer.is_global_zero else None
        path = trainer.strategy.broadcast(path)
        trainer.save_checkpoint(path)
        self.saved_path = path
        rank_zero_warn(
            f"SIGTERM received at epoch {trainer.current_epoch}, global step {trainer.global_step}: saved a resumable "
            f"checkpoint to {path}. Resume with --ckpt_path {path} (a requeued SLURM job resumes from it by itself). "
            f"Exiting with status {SIGTERM_EXIT_CODE}."
        )
        exception.code = SIGTERM_EXIT_CODE  # SystemExit's status: the job did not finish
