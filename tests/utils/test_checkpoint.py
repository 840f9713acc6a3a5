"""utils/checkpoint.py: bad checkpoint files give errors that name the file; saves are atomic
(a failed save never leaves a partial file under the checkpoint's name) — issue 11, case 12."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import torch

from ltcl_lightning.utils import checkpoint as ckpt_mod
from ltcl_lightning.utils.checkpoint import AtomicCheckpointIO, CheckpointError, check_checkpoint_classes, load_checkpoint

REPO = Path(__file__).resolve().parents[2]


def _ckpt(n: int = 10) -> dict:
    return {
        "state_dict": {"w": torch.arange(n, dtype=torch.float32)},
        "global_step": n,
        "hyper_parameters": {"_class_path": "ltcl_lightning.methods.simclr.SimCLR"},
        "datamodule_hyper_parameters": {"_class_path": "ltcl_lightning.data.digits.DigitsLTDataModule"},
    }


@pytest.fixture
def good(tmp_path):
    path = tmp_path / "good.ckpt"
    torch.save(_ckpt(), path)
    return path


@pytest.mark.parametrize(
    "kind,match",
    [
        ("empty", r"is empty \(0 bytes\)"),
        ("random", r"\(4096 bytes\) is not a checkpoint"),
        ("text", r"is not a checkpoint"),
        ("truncated", r"is not a checkpoint"),
        ("no_state_dict", r"is not a Lightning checkpoint: torch.load gives a dict with keys \['a'\]"),
        ("directory", r"is a directory"),
    ],
)
def test_bad_files_name_the_file(kind, match, tmp_path, good):
    path = tmp_path / f"{kind}.ckpt"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "random":
        path.write_bytes(os.urandom(4096))
    elif kind == "text":
        path.write_text("epoch,acc\n0,0.5\n")
    elif kind == "truncated":
        data = good.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind == "no_state_dict":
        torch.save({"a": 1}, path)
    else:
        path.mkdir()
    with pytest.raises(CheckpointError, match=match) as err:
        load_checkpoint(path)
    assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.ckpt")


def test_good_file_loads(good):
    assert load_checkpoint(good)["global_step"] == 10


def test_class_check_names_both_classes(good):
    ckpt = load_checkpoint(good)
    check_checkpoint_classes(ckpt, str(good), "ltcl_lightning.methods.simclr.SimCLR", "ltcl_lightning.data.digits.DigitsLTDataModule")
    with pytest.raises(CheckpointError, match=r"method SimCLR .* model is ProCo"):
        check_checkpoint_classes(ckpt, str(good), model_class="ltcl_lightning.methods.proco.ProCo")
    with pytest.raises(CheckpointError, match=r"datamodule DigitsLTDataModule .* data is CIFAR10LTDataModule"):
        check_checkpoint_classes(ckpt, str(good), data_class="ltcl_lightning.data.cifar.CIFAR10LTDataModule")


# ----- atomic saves -------------------------------------------------------------------------------
def test_atomic_save_roundtrip(tmp_path):
    io = AtomicCheckpointIO()
    path = tmp_path / "sub" / "a.ckpt"
    io.save_checkpoint(_ckpt(), path)
    assert torch.equal(io.load_checkpoint(path)["state_dict"]["w"], torch.arange(10.0))
    assert os.listdir(path.parent) == ["a.ckpt"]


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    """ENOSPC in the middle of the write (simulated): the old file is intact, no partial file."""
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint(_ckpt(10), path)

    def full_disk(obj, f):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left on device.*nothing was written under that name") as err:
        io.save_checkpoint(_ckpt(20), path)
    assert err.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert load_checkpoint(path)["global_step"] == 10
    assert os.listdir(tmp_path) == ["last.ckpt"]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (needs root); skipped where it cannot be mounted."""
    mnt = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {res.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_full_tmpfs_never_leaves_a_truncated_checkpoint(small_tmpfs):
    # before (Lightning's TorchCheckpointIO): the save raised, but a truncated 'last.ckpt' was left
    # under the final name (temp file in /tmp, then copied across file systems)
    io = AtomicCheckpointIO()
    path = small_tmpfs / "last.ckpt"
    io.save_checkpoint(_ckpt(1000), path)  # 4 kB: fits
    with pytest.raises(OSError, match="nothing was written under that name"):
        io.save_checkpoint(_ckpt(400_000), path)  # 1.6 MB: does not fit
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.arange(1000.0))
    assert os.listdir(small_tmpfs) == ["last.ckpt"]
    with pytest.raises(OSError):
        io.save_checkpoint(_ckpt(400_000), small_tmpfs / "new.ckpt")
    assert os.listdir(small_tmpfs) == ["last.ckpt"]  # no partial new.ckpt either


def test_cli_trainer_uses_atomic_io(tmp_path):
    from ltcl_lightning.cli import cli_main

    cli = cli_main(["--config", str(REPO / "experiments/quickstart.yaml"), f"--trainer.default_root_dir={tmp_path}"], run=False)
    assert type(cli.trainer.strategy.checkpoint_io) is AtomicCheckpointIO


@pytest.mark.parametrize("content,match", [(b"", r"is empty"), (b"\x80\x03not a pickle" * 10, r"is not a checkpoint")])
def test_probe_on_a_non_checkpoint_names_the_file(content, match, tmp_path):
    # before: EOFError / UnpicklingError from torch.load inside `ltcl probe`
    from ltcl_lightning.methods.linear_probe import load_pretrained

    bad = tmp_path / "notes.ckpt"
    bad.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"notes.ckpt.*{match}"):
        load_pretrained(str(bad))
