"""Shared by the 2-process gloo tests in this folder (importable: pytest puts this folder on
sys.path when it collects the tests here)."""

import os
import socket
import sys

import torch.multiprocessing as mp


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
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
