"""Shared by the 2-process gloo tests in this folder (importable: pytest puts this folder on
sys.path when it collects the tests here)."""

import os
import socket
import sys

import lightning.pytorch as pl
import torch.multiprocessing as mp
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry
from lightning.pytorch.strategies.launchers.multiprocessing import _MultiProcessingLauncher


def free_port() -> int:
    """A free TCP port on the loopback interface for the gloo rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(worker, *args, nprocs: int = 2, start_method: str = "spawn") -> None:
    """``mp.start_processes(worker, args, nprocs)``, each process ending with ``os._exit(0)`` once
    ``worker`` has returned (its results written, its process group destroyed).

    About one run in a hundred on the loaded 2-core CI box, a process that had finished and
    destroyed its gloo group still died with SIGABRT ("terminate called without an active
    exception") while the interpreter finalised: gloo's C++ threads torn down during Python
    finalisation (pytorch/pytorch#190489, the reverted atexit fix #179291). Skipping finalisation
    after a successful worker removes that race from the tests; a worker that raises still fails
    the test with its traceback (``mp`` records it before the process exits).
    """
    mp.start_processes(_exit_after, args=(worker, args), nprocs=nprocs, join=True, start_method=start_method)


def _exit_after(rank: int, worker, args: tuple) -> None:
    worker(rank, *args)
    _exit()


def _exit() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class _ExitingLauncher(_MultiProcessingLauncher):
    """Lightning's ``ddp_spawn`` launcher whose processes end as :func:`spawn`'s do: with
    ``os._exit(0)`` once the run has returned and rank 0 has put its results on the queue (a
    synchronous pipe write, complete before the call returns)."""

    def _wrapping_function(self, *args, **kwargs) -> None:
        super()._wrapping_function(*args, **kwargs)
        _exit()


class ExitingDDPSpawn(DDPStrategy):
    """``strategy="ddp_spawn"`` (gloo on the CPU) with :class:`_ExitingLauncher`: the same
    launch, pickling and result hand-back, without the finalisation race :func:`spawn` removes."""

    def __init__(self, **kwargs) -> None:
        super().__init__(start_method="spawn", **kwargs)

    def _configure_launcher(self) -> None:
        self._launcher = _ExitingLauncher(self, start_method=self._start_method)


def register_exiting_spawn() -> None:
    """Make ``--trainer.strategy=ddp_spawn_exit`` name :class:`ExitingDDPSpawn` (for a CLI run)."""
    if "ddp_spawn_exit" not in StrategyRegistry:
        StrategyRegistry.register("ddp_spawn_exit", ExitingDDPSpawn, description="ddp_spawn ending with os._exit(0)")


def spawn_trainer(root, callbacks: list, **overrides) -> pl.Trainer:
    """A 2-process :class:`ExitingDDPSpawn` Trainer on the CPU for one short epoch (2 training
    batches), without logger, checkpoints, progress bar, summary or sanity check unless
    ``overrides`` say otherwise."""
    kwargs = dict(
        accelerator="cpu",
        devices=2,
        strategy=ExitingDDPSpawn(),
        max_epochs=1,
        limit_train_batches=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        default_root_dir=str(root),
    )
    return pl.Trainer(**{**kwargs, **overrides})
