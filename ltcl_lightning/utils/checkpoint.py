"""Checkpoints you can trust: loading with errors that name the file and the fix, a check that a
checkpoint belongs to the configured method and datamodule, and atomic saves.

* :func:`load_checkpoint` reads a ``.ckpt`` and turns what ``torch.load`` raises for a missing,
  empty, truncated or foreign file (``EOFError``, ``UnpicklingError``, ``KeyError: 101``,
  ``PytorchStreamReader failed ...``) into a :class:`CheckpointError` that names the file.
* :func:`check_checkpoint_classes` compares the ``_class_path`` that ``ltcl fit`` stores for the
  model and the datamodule with the configured classes. Lightning's CLI would otherwise replace
  the configured model class with the checkpoint's one (a ProCo recipe resumed from a SimCLR
  checkpoint trains SimCLR).
* :class:`AtomicCheckpointIO` writes a checkpoint to a temporary file in the target's own
  directory, fsyncs it and renames it over the target. Lightning's default writes to a temporary
  file in the system temp folder and moves it across file systems (a copy): a full disk then
  leaves a truncated file under the final name. Here a failed save leaves the previous
  checkpoint as it was and no partial file behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import zipfile
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem


class CheckpointError(ValueError):
    """A file that is not a usable checkpoint, or a checkpoint of another method / datamodule."""


def _is_local(path: str | os.PathLike) -> bool:
    protocol = get_filesystem(str(path)).protocol
    return "file" in (protocol if isinstance(protocol, (tuple, list)) else (protocol,))


def load_checkpoint(
    path: str | os.PathLike, map_location: Any = "cpu", weights_only: bool | None = None, lightning: bool = True
) -> dict[str, Any]:
    """The checkpoint dict at ``path``, or a :class:`CheckpointError` / ``FileNotFoundError``
    that says what the file is and how to get a good one. ``weights_only=None`` is torch's
    default (``True``): plain tensors and containers only. ``lightning=False`` accepts any
    object ``torch.save`` wrote (e.g. the weights ``ddp_spawn`` hands back), not only a
    Lightning checkpoint with a ``state_dict``."""
    path = str(path)
    if _is_local(path):
        if not os.path.exists(path):
            raise FileNotFoundError(
                f"checkpoint {path!r} does not exist: pass the .ckpt written by `ltcl fit` "
                "(e.g. <default_root_dir>/lightning_logs/version_N/checkpoints/last.ckpt)"
            )
        if os.path.isdir(path):
            raise CheckpointError(f"checkpoint {path!r} is a directory: pass the .ckpt file inside it")
        if os.path.getsize(path) == 0:
            raise CheckpointError(
                f"checkpoint {path!r} is empty (0 bytes): it was never written completely (a full disk or a "
                "killed job during the save). Resume from an earlier checkpoint, e.g. the previous epoch's."
            )
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=weights_only)
    except Exception as err:  # the unpickler fails on foreign bytes with anything (EOFError, KeyError, IndexError, ...)
        if "Weights only load failed" in str(err) and _is_local(path) and zipfile.is_zipfile(path):
            raise  # a whole checkpoint holding objects beyond plain tensors: torch's message says what to do
        raise CheckpointError(_unreadable(path, err)) from None
    if lightning and (not isinstance(ckpt, dict) or "state_dict" not in ckpt):
        what = f"a {type(ckpt).__name__}" + (f" with keys {sorted(map(str, ckpt))[:6]}" if isinstance(ckpt, dict) else "")
        raise CheckpointError(
            f"{path!r} is not a Lightning checkpoint: torch.load gives {what}, without 'state_dict'. "
            "Pass a .ckpt written by `ltcl fit` / Trainer.save_checkpoint."
        )
    return ckpt


def _unreadable(path: str, err: BaseException) -> str:
    local = _is_local(path) and os.path.isfile(path)
    size = f" ({os.path.getsize(path)} bytes)" if local else ""
    if local and not zipfile.is_zipfile(path):
        why = (
            "is not a checkpoint: torch.save writes a zip archive and this file is none (random bytes, a text "
            "file, or a copy cut short before its end)"
        )
    else:
        why = f"cannot be read by torch.load ({type(err).__name__}: {str(err)[:160]}): it is truncated or damaged"
    return (
        f"checkpoint {path!r}{size} {why}. Pass a .ckpt written by `ltcl fit`, or resume from another "
        "checkpoint, e.g. the previous epoch's."
    )


def _short(class_path: str) -> str:
    return class_path.rsplit(".", 1)[-1]


def check_checkpoint_classes(ckpt: dict[str, Any], path: str, model_class: str | None = None, data_class: str | None = None) -> None:
    """Refuse a checkpoint whose model (or datamodule) class differs from the configured one.

    ``model_class`` / ``data_class`` are full class paths (``ltcl_lightning.methods.proco.ProCo``);
    the checkpoint's come from the ``_class_path`` that the CLI stores in its hyper-parameters
    (checkpoints written from Python without the CLI carry none and are not checked here)."""
    for what, key, expected, section in (
        ("method", "hyper_parameters", model_class, "model"),
        ("datamodule", "datamodule_hyper_parameters", data_class, "data"),
    ):
        found = (ckpt.get(key) or {}).get("_class_path")
        if expected is None or found is None or found == expected:
            continue
        raise CheckpointError(
            f"checkpoint {path!r} was written by the {what} {_short(found)} ({found}), but the config's {section} is "
            f"{_short(expected)} ({expected}). Resuming or evaluating it as {_short(expected)} would silently run "
            f"{_short(found)} or load mismatched state. Use the config the checkpoint was trained with "
            f"(--{section}={found}), or start a new run without --ckpt_path."
        )


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose local saves are atomic: temporary file next to the target,
    ``fsync``, ``os.replace``, ``fsync`` of the directory. Remote (fsspec) paths use Lightning's
    own transaction. The CLI installs it on every trainer whose strategy has the default IO."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not _is_local(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            if isinstance(err, (OSError, RuntimeError)):  # a full disk reaches torch.save as either
                free = shutil.disk_usage(folder).free
                raise OSError(
                    getattr(err, "errno", None) or errno.EIO,
                    f"saving checkpoint {path!r} failed ({type(err).__name__}: {err}; {free / 2**20:.1f} MiB free in "
                    f"{folder}); nothing was written under that name (a previous checkpoint there is intact). Free disk "
                    "space or point --trainer.default_root_dir / ModelCheckpoint(dirpath=...) elsewhere",
                ) from err
            raise
        try:  # make the rename itself durable
            dir_fd = os.open(folder, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(dir_fd)
        except OSError:
            pass
        finally:
            os.close(dir_fd)

    def load_checkpoint(self, path, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        if not _is_local(path):
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        return load_checkpoint(path, map_location=map_location, weights_only=weights_only, lightning=False)
