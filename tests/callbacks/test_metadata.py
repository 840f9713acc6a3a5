"""Run metadata: a W&B offline run's config holds the method, optimiser, schedule, trainer settings
and seed, with name / group / tags and the best epoch in the summary; config.yaml lands in each
run's own folder (not overwritten by the next run); CSV runs get the config as hparams."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ltcl_lightning.cli import cli_main

REPO = Path(__file__).resolve().parents[2]
QUICK = [
    "--config",
    str(REPO / "experiments/quickstart.yaml"),
    "--trainer.max_epochs=2",
    "--trainer.limit_train_batches=1",
    "--trainer.enable_progress_bar=false",
]


def test_wandb_offline_run_has_the_effective_config(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    cli = cli_main(
        [
            "fit",
            *QUICK,
            "--config",
            str(REPO / "experiments/logger/wandb.yaml"),
            f"--trainer.default_root_dir={tmp_path}",
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ]
    )
    logger = cli.trainer.logger
    run = logger.experiment
    config = dict(run.config)
    assert config["method"] == "SimCLR" and config["dataset"] == "DigitsLT" and config["seed_everything"] == 0
    model = config["model"]
    assert model["class_path"] == "ltcl_lightning.methods.simclr.SimCLR"
    assert model["init_args"]["optimizer"]["class_path"] == "torch.optim.SGD"
    assert model["init_args"]["optimizer"]["init_args"]["lr"] == 0.3
    assert model["init_args"]["lr_schedule"]["class_path"].endswith("WarmupCosine")
    assert config["trainer"]["max_epochs"] == 2
    assert (run.name, run.group, list(run.tags)) == ("SimCLR-DigitsLT-seed0", "SimCLR", ["DigitsLT", "IF10"])
    summary = dict(run.summary)
    best = cli.model.best_val
    assert summary["val_best/epoch"] == best["epoch"] and summary["val_best/few"] == pytest.approx(best["few"])
    assert any(k.startswith("lr-") for k in summary), "LearningRateMonitor logs the learning-rate curve"
    saved = yaml.safe_load((tmp_path / "ltcl_lightning" / run.id / "config.yaml").read_text())
    assert saved["model"]["class_path"] == model["class_path"]
    import wandb

    wandb.finish()


def test_config_yaml_per_run_folder_and_csv_hparams(tmp_path):
    args = [
        "fit",
        *QUICK,
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
    ]
    first = cli_main([*args, "--seed_everything=1"])
    second = cli_main([*args, "--seed_everything=2"])
    dirs = [Path(c.trainer.logger.log_dir) for c in (first, second)]
    assert dirs[0] != dirs[1]
    seeds = [yaml.safe_load((d / "config.yaml").read_text())["seed_everything"] for d in dirs]
    assert seeds == [1, 2]  # the second run did not overwrite the first's config
    hparams = yaml.safe_load((dirs[1] / "hparams.yaml").read_text())
    assert hparams["model"]["class_path"].endswith("SimCLR") and hparams["trainer"]["max_epochs"] == 2
    metrics = (dirs[1] / "metrics.csv").read_text().splitlines()
    assert "val_best/many" in metrics[0]


def test_selection_names_what_the_best_epoch_was_chosen_on():
    from ltcl_lightning.callbacks.metadata import selection
    from ltcl_lightning.data.cifar import CIFAR100LTDataModule
    from ltcl_lightning.data.digits import DigitsLTDataModule
    from ltcl_lightning.data.inaturalist import INaturalist2018DataModule

    assert selection(CIFAR100LTDataModule(split_file="cifar100/split1_D_i")) == "test"
    assert selection(CIFAR100LTDataModule(split_file="cifar100/split1_D_i", val_split_file="cifar100/valIdxList")) == "validation"
    assert selection(DigitsLTDataModule()) == "test"
    # the iNat recipes validate and test on the same list: that is selection on the test set
    inat = INaturalist2018DataModule(
        data_dir="x", train_list="t.txt", val_list="inaturalist18/iNaturalist18_val", test_list="inaturalist18/iNaturalist18_val"
    )
    assert selection(inat) == "test"
    # before: with no test_list (the test stage then evaluates the validation list) this said
    # "validation", and the recipe's best_on_test checkpoint was renamed best
    val_only = INaturalist2018DataModule(data_dir="x", train_list="t.txt", val_list="inaturalist18/iNaturalist18_val")
    assert selection(val_only) == "test"
    distinct = INaturalist2018DataModule(data_dir="x", train_list="t.txt", val_list="v.txt", test_list="inaturalist18/iNaturalist18_val")
    assert selection(distinct) == "validation"
    assert selection(None) == "unknown" and selection(object()) == "unknown"  # a datamodule that does not say


def test_ltcl_test_logs_best_and_last_into_the_training_run(tmp_path, capsys):
    import json

    from ltcl_lightning.commands import main as ltcl

    extra = tmp_path / "ckpt.yaml"
    extra.write_text(
        "trainer:\n  callbacks+:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        "      init_args: {save_last: true, monitor: val/acc, mode: max, save_top_k: 1, filename: 'best-{epoch}'}\n"
    )
    held_out = "--data.init_args.val_per_class=5"  # selected on a hold-out: the checkpoint is best-..., not best_on_test-...
    fit = cli_main(["fit", *QUICK, "--config", str(extra), held_out, f"--trainer.default_root_dir={tmp_path}"])
    run = Path(fit.trainer.log_dir)
    fit_config = (run / "config.yaml").read_text()
    best = next((run / "checkpoints").glob("best-*.ckpt"))
    for ckpt in (best, run / "checkpoints" / "last.ckpt"):
        cli_main(
            [
                "test",
                "--config",
                str(REPO / "experiments/quickstart.yaml"),
                f"--ckpt_path={ckpt}",
                held_out,
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )
    assert sorted(p.name for p in run.parent.iterdir()) == [run.name]  # no new version folder
    assert (run / "config.yaml").read_text() == fit_config and (run / "config_test.yaml").is_file()
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["test_at"]) == {"best", "last"} and summary["val"]["best"]["epoch"] >= 0
    capsys.readouterr()
    ltcl(["report", str(run), "--out", str(tmp_path / "rep")])
    out = capsys.readouterr().out
    assert "test@best Overall" in out and "test@last Overall" in out
    assert f"{100 * summary['test_at']['best']['acc']:.2f} ± 0.00" in out


def test_tensorboard_hparams_tab_compares_runs_on_the_best_epoch_numbers(tmp_path):
    """One HParams record per run, with the full config as hyper-parameters and the best epoch's
    long-tail numbers as its metric columns (before: a second record from Lightning whose only
    column was hp_metric = -1, and the val_best numbers were not columns of the first)."""
    import json

    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing import event_file_loader
    from tensorboard.plugins.hparams import plugin_data_pb2

    cli_main(
        ["fit", *QUICK, f"--trainer.default_root_dir={tmp_path}", "--trainer.logger=lightning.pytorch.loggers.TensorBoardLogger"]
        + [f"--trainer.logger.init_args.save_dir={tmp_path}"]
    )
    run = next(tmp_path.rglob("events.out.tfevents.*")).parent
    experiments, sessions, best_acc = [], [], []
    for path in run.glob("events.out.tfevents.*"):
        for event in event_file_loader.EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.tag == "_hparams_/experiment":
                    experiments.append(plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content).experiment)
                elif value.tag == "_hparams_/session_start_info":
                    sessions.append(plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content).session_start_info)
                elif value.tag == "val_best/acc":
                    best_acc.append(value.tensor.float_val[0] if value.tensor.float_val else value.simple_value)
    assert len(experiments) == 1 and len(sessions) == 1
    columns = [m.name.tag for m in experiments[0].metric_infos]
    assert columns == [f"val_best/{k}" for k in ("epoch", "acc", "many", "medium", "few", "group_std")]
    assert sessions[0].hparams["model/class_path"].string_value.endswith("SimCLR")
    summary = json.loads((run / "summary.json").read_text())
    assert best_acc[-1] == pytest.approx(summary["val"]["best"]["acc"], abs=1e-6)  # the column's last value
