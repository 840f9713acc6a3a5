"""Every config in experiments/ is parsed and run for one step on generated real-format data;
the quickstart runs to its table; W&B works offline through --trainer.logger."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ltcl_lightning.cli import cli_main

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "experiments").rglob("*.yaml") if p.parent.name != "logger")


@pytest.mark.parametrize("config", RECIPES, ids=[r.removeprefix("experiments/") for r in RECIPES])
def test_config_runs_one_step(config, run_recipe):
    cfg = yaml.safe_load((REPO / config).read_text())
    assert {"model", "data", "trainer"} <= set(cfg), "a config names model, data and trainer"
    cli = run_recipe(config)
    assert cli.trainer.state.finished
    assert cli.model.class_counts.sum() > 0


CIFAR_CONFIGS = [r for r in RECIPES if r.split("/")[1].startswith("cifar") and "boosted" not in r]


@pytest.mark.parametrize("config", CIFAR_CONFIGS, ids=[r.removeprefix("experiments/") for r in CIFAR_CONFIGS])
def test_cifar_config_runs_one_step_device_resident(config, run_recipe):
    """The batched on-device backend: images resident on the device, views built in
    on_after_batch_transfer, no loader workers."""
    cli = run_recipe(config, "--data.init_args.device_resident=true")
    assert cli.trainer.state.finished and cli.datamodule.device_resident
    assert cli.trainer.train_dataloader.num_workers == 0


def test_quickstart_prints_table(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)
    cli_main(
        [
            "fit",
            "--config",
            "experiments/quickstart.yaml",
            "--trainer.max_epochs=2",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    out = capsys.readouterr().out
    assert "overall" in out and "many" in out and "few" in out
    assert "val last (epoch 1)" in out


def test_print_config_is_effective_config(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", "experiments/cifar100_lt/simclr.yaml", "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    opt = printed["model"]["init_args"]["optimizer"]
    assert opt["class_path"] == "torch.optim.SGD" and opt["init_args"]["lr"] == 0.5
    assert printed["model"]["init_args"]["lr_schedule"]["init_args"]["min_lr"] == 1e-6


def test_wandb_offline_logger(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cli = cli_main(
        [
            "fit",
            "--config",
            "experiments/quickstart.yaml",
            "--trainer.max_epochs=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=lightning.pytorch.loggers.WandbLogger",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
            "--trainer.logger.init_args.project=ltcl-test",
        ]
    )
    run = cli.trainer.logger.experiment
    assert run.settings.mode == "offline"
    summary = dict(run.summary)
    for key in ("val/acc", "val/many", "val/medium", "val/few", "val/group_std", "train/loss"):
        assert key in summary, key
    assert 0.0 <= summary["val/acc"] <= 1.0
    assert summary["val/acc"] == pytest.approx(float(cli.trainer.callback_metrics["val/acc"]))
    import wandb

    wandb.finish()
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and any(runs[0].glob("run-*.wandb"))


@pytest.mark.parametrize("command", ["probe", "report"])
def test_extra_commands_dispatch(command, capsys):
    from ltcl_lightning.cli import main

    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    assert f"ltcl {command}" in capsys.readouterr().out
