"""`ltcl` with --ckpt_path and with linked arguments: every mismatch between the config, the data
and the checkpoint is refused with both names, never run silently (issue 11, cases 1, 2, 11 and
the "unclear" list)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ltcl_lightning.cli import cli_main

REPO = Path(__file__).resolve().parents[1]
QUICK = str(REPO / "experiments" / "quickstart.yaml")


def _base(root, *extra) -> list[str]:
    return [
        "--config",
        QUICK,
        "--trainer.max_epochs=1",
        "--trainer.limit_train_batches=2",
        "--trainer.limit_val_batches=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.logger=false",
        "--trainer.callbacks=[]",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={root}",
        *extra,
    ]


@pytest.fixture(scope="module")
def simclr_ckpt(tmp_path_factory) -> Path:
    """A SimCLR checkpoint on Digits-LT (imbalance 10) written by `ltcl fit` (2 steps)."""
    root = tmp_path_factory.mktemp("simclr")
    cli = cli_main(["fit", *_base(root)])
    path = root / "simclr.ckpt"
    cli.trainer.save_checkpoint(path)
    return path


def _with_class_paths(src: Path, dst: Path, model: str | None = None, data: str | None = None) -> Path:
    ckpt = torch.load(src, weights_only=True)
    if model:
        ckpt["hyper_parameters"]["_class_path"] = model
    if data:
        ckpt["datamodule_hyper_parameters"]["_class_path"] = data
    torch.save(ckpt, dst)
    return dst


# ----- case 1: a checkpoint of another method / datamodule ------------------------------------------
@pytest.mark.parametrize("command", ["fit", "test"])
def test_checkpoint_of_another_method_is_refused(command, simclr_ckpt, tmp_path):
    # before: LightningCLI swapped ProCo for the checkpoint's SimCLR and trained SimCLR, exit 0
    args = _base(
        tmp_path,
        "--model=ltcl_lightning.methods.proco.ProCo",
        "--model.init_args.backbone=tiny",
        "--trainer.max_epochs=2",
        f"--ckpt_path={simclr_ckpt}",
    )
    with pytest.raises(ValueError, match=r"SimCLR \(ltcl_lightning.methods.simclr.SimCLR\).*ProCo \(ltcl_lightning.methods.proco.ProCo\)"):
        cli_main([command, *args])


def test_boosted_sdclr_checkpoint_is_refused_for_sdclr(simclr_ckpt, tmp_path):
    ckpt = _with_class_paths(simclr_ckpt, tmp_path / "bcl_d.ckpt", model="ltcl_lightning.methods.boosted_cl.BoostedSDCLR")
    args = _base(tmp_path, "--model=ltcl_lightning.methods.sdclr.SDCLR", "--model.init_args.backbone=tiny", f"--ckpt_path={ckpt}")
    with pytest.raises(ValueError, match=r"BoostedSDCLR .*but the config's model is SDCLR"):
        cli_main(["test", *args])


def test_checkpoint_of_another_datamodule_is_refused(simclr_ckpt, tmp_path):
    ckpt = _with_class_paths(simclr_ckpt, tmp_path / "cifar.ckpt", data="ltcl_lightning.data.cifar.CIFAR10LTDataModule")
    with pytest.raises(ValueError, match=r"datamodule CIFAR10LTDataModule .*data is DigitsLTDataModule"):
        cli_main(["fit", *_base(tmp_path, "--trainer.max_epochs=2", f"--ckpt_path={ckpt}")])


def test_same_method_resumes(simclr_ckpt, tmp_path):
    cli = cli_main(["fit", *_base(tmp_path, "--trainer.max_epochs=2", f"--ckpt_path={simclr_ckpt}")])
    assert type(cli.model).__name__ == "SimCLR"
    assert cli.trainer.global_step == 4  # 2 restored + 2 new


# ----- case 2: resuming on other data ------------------------------------------------------------------
@pytest.mark.parametrize("command", ["fit", "test"])
def test_resume_with_other_data_is_refused(command, simclr_ckpt, tmp_path):
    # before: fit kept the checkpoint's class_counts buffer (imbalance 10) while the data had imbalance 5
    args = _base(tmp_path, "--data.init_args.imbalance_factor=5", "--trainer.max_epochs=2", f"--ckpt_path={simclr_ckpt}")
    with pytest.raises(ValueError, match=r"checkpoint was trained on data with 10 classes and 585 training images"):
        cli_main([command, *args])


# ----- case 11: explicit linked arguments that disagree with the data --------------------------------
def test_explicit_num_classes_that_disagrees_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"num_classes=7 was given, but DigitsLTDataModule has 10 classes"):
        cli_main(["fit", *_base(tmp_path, "--model.init_args.num_classes=7")])


def test_explicit_class_counts_that_disagree_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"class_counts were given \(10 classes, 100 images\)"):
        cli_main(["fit", *_base(tmp_path, "--model.init_args.class_counts=[10,10,10,10,10,10,10,10,10,10]")])


def test_explicit_values_that_agree_are_accepted(tmp_path):
    cli = cli_main(_base(tmp_path, "--model.init_args.num_classes=10"), run=False)
    assert cli.model.num_classes == 10


# ----- unclear today: bad --ckpt_path files, wrapped datamodule errors --------------------------------
@pytest.mark.parametrize("content,match", [(b"", "is empty \\(0 bytes\\)"), (b"hello\n", "is not a checkpoint")])
def test_bad_ckpt_path_names_the_file(content, match, tmp_path):
    # before: EOFError (empty) / KeyError: 101 (text)
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(content)
    with pytest.raises(ValueError, match=f"{bad}.*{match}"):
        cli_main(["fit", *_base(tmp_path, f"--ckpt_path={bad}")])


def test_datamodule_error_is_not_wrapped_in_the_link_text(tmp_path):
    # before: ValueError("Call to compute_fn of link '<lambda>' ... failed: CIFAR-10 not found ...")
    args = [
        "fit",
        "--config",
        str(REPO / "experiments/cifar10_lt/sdclr.yaml"),
        f"--data.init_args.data_dir={tmp_path}/none",
        "--trainer.fast_dev_run=true",
    ]
    with pytest.raises(FileNotFoundError, match=r"^CIFAR-10 not found"):
        cli_main(args)


# ----- distributed: ddp_spawn through ltcl itself --------------------------------------------------
@pytest.mark.ddp
def test_ddp_spawn_through_ltcl(tmp_path):
    # before: the CLI's link lambdas could not be pickled and ddp_spawn failed at launch
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # a fresh rendezvous port: an earlier in-process DDP test leaves MASTER_PORT in os.environ,
    # and reusing that port failed with EADDRINUSE in CI
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(s.getsockname()[1]))
    args = _base(
        tmp_path,
        "--trainer.strategy=ddp_spawn_exit",
        "--trainer.devices=2",
        "--trainer.accelerator=cpu",
        "--trainer.enable_checkpointing=true",
        "--data.init_args.batch_size=32",
    )
    # `ltcl_lightning.cli`'s main with ddp_spawn's launch, whose processes end with os._exit(0)
    # (tests/ddp/ddp_helpers.py: gloo's finalisation race, pytorch/pytorch#190489)
    env["PYTHONPATH"] = str(REPO / "tests" / "ddp") + os.pathsep + env["PYTHONPATH"]
    main = "import ddp_helpers; ddp_helpers.register_exiting_spawn(); from ltcl_lightning.cli import main; main()"
    proc = subprocess.run([sys.executable, "-c", main, "fit", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpts = list(tmp_path.rglob("*.ckpt"))
    assert len(ckpts) == 1
    ckpt = torch.load(ckpts[0], weights_only=True)
    assert ckpt["global_step"] == 2 and ckpt["hyper_parameters"]["_class_path"].endswith("SimCLR")
