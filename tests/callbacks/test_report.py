"""LongTailReport: per-class table / figure / confused pairs / method state, for CSV, TensorBoard
and offline W&B; values checked against an independent numpy evaluation of the trained model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from ltcl_lightning.callbacks.report import LongTailReport, PerClassState, PerLayerState, PerSampleState, ScalarState
from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.longtail import GROUP_NAMES, class_groups
from ltcl_lightning.methods.ce import CrossEntropy
from ltcl_lightning.metrics import LongTailAccuracy, most_confused_pairs

REPO = Path(__file__).resolve().parents[2]
C = 10


class StateCE(CrossEntropy):
    """A stub method whose report_state returns the records of SDCLR / BoostedCL / ProCo with
    known values, so the logged summaries can be checked by hand."""

    def report_state(self):
        dm = self.trainer.datamodule
        target = torch.as_tensor(dm.train_targets())
        # tail samples get larger weights: weight = 1 / count of the sample's class
        counts = self.class_counts.double()
        weight = 1.0 / counts[target]
        return {
            "mask_density": PerLayerState({"layer1": 0.5, "overall": 0.25}),
            "sample_weight": PerSampleState(weight, target),
            "kappa": PerClassState(torch.log(counts)),  # grows with frequency
            "queue_filled": ScalarState(torch.tensor(7)),
        }


def _fit(tmp_path: Path, loggers, epochs: int = 2, model_cls=CrossEntropy, **model_kw):
    pl.seed_everything(0)
    dm = DigitsLTDataModule(imbalance_factor=10, batch_size=64, test_per_class=10, train_views=("eval",))
    model = model_cls(C, backbone="tiny", grouping="thirds", **model_kw)
    cb = LongTailReport(top_confused=5)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        logger=loggers,
        callbacks=[cb],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=1,
        limit_train_batches=3,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    return trainer, model, dm


def _independent_eval(model, dm) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and labels of the final model on the validation set, without the metric."""
    model.eval()
    preds, targets = [], []
    with torch.no_grad():
        for _, views, target in dm.val_dataloader():
            preds.append(model.classify(views[0]).argmax(1).numpy())
            targets.append(target.numpy())
    return np.concatenate(preds), np.concatenate(targets)


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_most_confused_pairs_match_dense_confusion():
    rng = np.random.default_rng(0)
    c = 7
    target = torch.as_tensor(rng.integers(0, c, 400))
    preds = torch.where(torch.as_tensor(rng.random(400) < 0.6), target, torch.as_tensor(rng.integers(0, c, 400)))
    metric = LongTailAccuracy(c, torch.zeros(c, dtype=torch.long))
    metric.update(torch.arange(400), preds, target)
    dense = metric.confusion().numpy().astype(np.int64)
    ref = np.zeros((c, c), dtype=np.int64)
    np.add.at(ref, (target.numpy(), preds.numpy()), 1)
    assert np.array_equal(dense, ref)
    np.fill_diagonal(ref, 0)
    pairs = most_confused_pairs(preds, target, c, k=c * c)
    assert len(pairs) == int((ref > 0).sum())  # every off-diagonal non-zero cell, none else
    support = np.bincount(target.numpy(), minlength=c)
    for t, p, n, r in pairs:
        assert t != p and ref[t, p] == n and r == pytest.approx(n / support[t])
    counts = [n for _, _, n, _ in pairs]
    assert counts == sorted(counts, reverse=True)
    ordered = sorted(
        ((int(t), int(p), int(ref[t, p]), ref[t, p] / support[t]) for t, p in zip(*np.nonzero(ref))),
        key=lambda x: (-x[2], -x[3], x[0], x[1]),
    )  # count, then rate, then (true, predicted)
    assert [x[:3] for x in pairs] == [x[:3] for x in ordered]
    assert metric.compute()["confused_pairs"] == pairs  # the metric returns them all, most confused first
    top3 = most_confused_pairs(preds, target, c, k=3)
    assert [x[2] for x in top3] == sorted(ref.flatten(), reverse=True)[:3]
    assert most_confused_pairs(target, target, c, k=3) == []


def test_csv_per_class_matches_independent_eval_and_skips_sanity_check(tmp_path):
    logger = CSVLogger(tmp_path, name="csv")
    trainer, model, dm = _fit(tmp_path, [logger], epochs=2)
    log_dir = Path(logger.log_dir)
    rows = _read_csv(log_dir / "per_class_val.csv")
    # two real validations x 10 classes: the sanity check (num_sanity_val_steps=1) wrote nothing
    assert len(rows) == 2 * C
    assert [int(r["epoch"]) for r in rows] == [0] * C + [1] * C
    last = rows[C:]
    preds, targets = _independent_eval(model, dm)
    support = np.bincount(targets, minlength=C)
    acc = np.bincount(targets, weights=(preds == targets).astype(float), minlength=C) / support
    np.testing.assert_allclose([float(r["accuracy"]) for r in last], acc, atol=1e-6)
    assert [int(r["support"]) for r in last] == support.tolist()
    assert [int(r["train_count"]) for r in last] == list(dm.class_counts)
    groups = class_groups(dm.class_counts, "thirds")
    assert [r["group"] for r in last] == [GROUP_NAMES[int(g)] for g in groups]
    assert [r["class_name"] for r in last] == dm.class_names
    # the same numbers the base logged (one source of truth)
    np.testing.assert_allclose(acc, model.last_eval["val"]["per_class"].numpy(), atol=1e-6)

    pairs = _read_csv(log_dir / "confused_pairs_val.csv")
    ref = np.zeros((C, C), dtype=np.int64)
    np.add.at(ref, (targets, preds), 1)
    np.fill_diagonal(ref, 0)
    assert len(pairs) == min(5, int((ref > 0).sum()))
    for p in pairs:
        t, q = int(p["true_index"]), int(p["pred_index"])
        assert int(p["count"]) == ref[t, q] and float(p["rate"]) == pytest.approx(ref[t, q] / support[t])
    assert [int(p["count"]) for p in pairs] == sorted(ref.flatten(), reverse=True)[: len(pairs)]
    assert LongTailReport.run_dir(trainer) == log_dir


def test_report_state_summaries(tmp_path):
    logger = CSVLogger(tmp_path, name="state")
    trainer, model, dm = _fit(tmp_path, [logger], epochs=1, model_cls=StateCE)
    log_dir = Path(logger.log_dir)
    metrics = _read_csv(log_dir / "metrics.csv")
    logged = {k: float(v) for row in metrics for k, v in row.items() if k.startswith("state/") and v != ""}
    assert logged["state/mask_density/overall"] == pytest.approx(0.25)
    assert logged["state/mask_density/layer1"] == pytest.approx(0.5)
    assert logged["state/queue_filled"] == 7.0
    counts = np.asarray(dm.class_counts, dtype=np.float64)
    # per-class mean of weight = 1/count is 1/count; it falls with log count (tail weighted up)
    assert logged["state/sample_weight_class_mean_corr_log_count"] == pytest.approx(np.corrcoef(np.log(counts), 1 / counts)[0, 1], abs=1e-6)
    assert logged["state/sample_weight_class_mean_corr_log_count"] < -0.8
    assert logged["state/kappa_corr_log_count"] == pytest.approx(1.0, abs=1e-6)
    groups = class_groups(dm.class_counts, "thirds").numpy()
    assert logged["state/kappa_few"] == pytest.approx(np.log(counts[groups == 2]).mean())
    targets = np.asarray(dm.train_targets())
    w = 1 / counts[targets]
    assert logged["state/sample_weight_mean"] == pytest.approx(w.mean())
    kappa_rows = _read_csv(log_dir / "state_kappa.csv")
    assert len(kappa_rows) == C
    np.testing.assert_allclose([float(r["kappa"]) for r in kappa_rows], np.log(counts))


def test_report_state_rejects_unknown_shapes(tmp_path):
    class Bad(CrossEntropy):
        def report_state(self):
            return {"kappa": PerClassState(torch.zeros(3, 3))}

    with pytest.raises(ValueError, match=r"report_state\(\)\['kappa'\] has shape \(3, 3\)"):
        _fit(tmp_path, [CSVLogger(tmp_path)], epochs=1, model_cls=Bad)


def test_report_state_refuses_untyped_values(tmp_path):
    class Untyped(CrossEntropy):
        def report_state(self):
            return {"kappa": torch.zeros(C)}  # a bare tensor: per class? per sample? say it with a record

    with pytest.raises(TypeError, match=r"report_state\(\)\['kappa'\] is a Tensor; return a ScalarState, PerLayerState"):
        _fit(tmp_path, [CSVLogger(tmp_path)], epochs=1, model_cls=Untyped)


def test_tensorboard_figures_histograms_and_text(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer, model, dm = _fit(tmp_path, [logger], epochs=1, model_cls=StateCE)
    # per-class CSV next to the event files, for `ltcl report`
    assert len(_read_csv(Path(logger.log_dir) / "per_class_val.csv")) == C
    ea = EventAccumulator(logger.log_dir, size_guidance={"images": 0, "histograms": 0, "tensors": 0})
    ea.Reload()
    tags = ea.Tags()
    assert "val/per_class_accuracy" in tags["images"]
    assert "state/kappa_vs_count" in tags["images"]
    img = ea.Images("val/per_class_accuracy")[-1]
    assert img.width > 300 and img.height > 200 and img.encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
    assert "state/kappa" in tags["histograms"] and "state/sample_weight" in tags["histograms"]
    assert "val/confused_pairs/text_summary" in tags["tensors"]


def test_wandb_offline_table_rows(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    logger = WandbLogger(save_dir=str(tmp_path), project="ltcl-test")
    try:
        trainer, model, dm = _fit(tmp_path, [logger], epochs=1, model_cls=StateCE)
        run_dir = Path(logger.experiment.dir).parent
        expected = model.last_eval["val"]["per_class"].numpy()
    finally:
        import wandb

        wandb.finish()
    tables = sorted((run_dir / "files" / "media" / "table" / "val").glob("per_class_*.table.json"))
    assert len(tables) == 1, list((run_dir / "files").rglob("*.json"))
    tab = json.loads(tables[0].read_text())
    cols = tab["columns"]
    assert cols[:6] == ["class_index", "class_name", "train_count", "group", "accuracy", "support"]
    assert len(tab["data"]) == C
    by_class = {row[0]: dict(zip(cols, row)) for row in tab["data"]}
    np.testing.assert_allclose([by_class[i]["accuracy"] for i in range(C)], expected, atol=1e-6)
    assert [by_class[i]["train_count"] for i in range(C)] == list(dm.class_counts)
    # the bar labels sort head -> tail
    labels = sorted(r["label"] for r in by_class.values())
    assert [int(lbl.split()[1]) for lbl in labels] == [int(np.argsort(-np.asarray(dm.class_counts), kind="stable")[i]) for i in range(C)]
    assert (run_dir / "files" / "per_class_val.csv").exists()
    assert list((run_dir / "files" / "media" / "table" / "state").glob("kappa_*.table.json"))
    assert list((run_dir / "files" / "media" / "table" / "val").glob("confused_pairs_*.table.json"))


@pytest.mark.parametrize("fragment, logger_name", [("tensorboard", "TensorBoardLogger"), ("wandb", "WandbLogger")])
def test_logger_fragments_append_to_quickstart_callbacks(tmp_path, monkeypatch, fragment, logger_name):
    from ltcl_lightning.cli import cli_main

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    cli = cli_main(
        [
            "--config",
            str(REPO / "experiments/quickstart.yaml"),
            "--config",
            str(REPO / f"experiments/logger/{fragment}.yaml"),
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
        run=False,
    )
    names = [type(cb).__name__ for cb in cli.trainer.callbacks]
    assert "LongTailSummary" in names and "LongTailReport" in names  # appended, not replaced
    assert type(cli.trainer.logger).__name__ == logger_name


def test_logger_fragment_alone_on_a_config_without_callbacks(tmp_path):
    import yaml

    from ltcl_lightning.cli import cli_main

    base = yaml.safe_load((REPO / "experiments/quickstart.yaml").read_text())
    del base["trainer"]["callbacks"]
    cfg = tmp_path / "nocb.yaml"
    cfg.write_text(yaml.safe_dump(base))
    cli = cli_main(
        [
            "--config",
            str(cfg),
            "--config",
            str(REPO / "experiments/logger/tensorboard.yaml"),
            f"--trainer.logger.init_args.save_dir={tmp_path}",
        ],
        run=False,
    )
    assert [type(cb).__name__ for cb in cli.trainer.callbacks].count("LongTailReport") == 1
