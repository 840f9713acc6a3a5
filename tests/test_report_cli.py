"""``ltcl report`` (ltcl_lightning.report.main): PNG figures from per-class CSVs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ltcl_lightning.data.longtail import class_counts_from_profile
from ltcl_lightning.longtail import GROUP_NAMES, class_groups
from ltcl_lightning.metrics import summarize
from ltcl_lightning.report import main, read_per_class, write_per_class_rows

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _write_run(folder: Path, num_classes: int, seed: int, epochs: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """A run folder as LongTailReport leaves it: lightning_logs/version_0/per_class_val.csv."""
    rng = np.random.default_rng(seed)
    counts = np.asarray(class_counts_from_profile(num_classes, 500, 100))
    groups = class_groups(counts.tolist(), "threshold").numpy()
    support = np.full(num_classes, 10)
    path = folder / "lightning_logs" / "version_0" / "per_class_val.csv"
    for epoch in range(epochs):
        acc = np.clip(np.linspace(0.9, 0.1, num_classes) + rng.normal(0, 0.05, num_classes), 0, 1).round(1)
        rows = [
            [epoch, 10 * (epoch + 1), i, f"class {i}", int(counts[i]), GROUP_NAMES[groups[i]], float(acc[i]), int(support[i])]
            for i in range(num_classes)
        ]
        rng.shuffle(rows)  # class order in the file must not matter
        write_per_class_rows(path, rows)
    return acc, groups


def _assert_png(path: Path, min_size=(300, 200)):
    import matplotlib.image as mpimg

    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, path
    assert len(data) > 5000, (path, len(data))
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert w >= min_size[0] and h >= min_size[1]
    assert float(img[..., :3].std()) > 0.05  # not a blank canvas


def test_read_per_class_takes_last_evaluation_and_matches_summarize(tmp_path):
    acc, groups = _write_run(tmp_path / "a", 100, seed=0)
    pc = read_per_class(tmp_path / "a" / "lightning_logs" / "version_0" / "per_class_val.csv")
    assert pc.epoch == 1
    np.testing.assert_allclose(pc.accuracy, acc)
    s = pc.summary()
    ref = summarize(torch.from_numpy(acc), torch.full((100,), 10), torch.from_numpy(groups))
    for k in ("many", "medium", "few", "group_std"):
        assert s[k] == pytest.approx(ref[k])
    assert s["few"] == pytest.approx(acc[groups == 2].mean())
    assert s["acc"] == pytest.approx(acc.mean())  # equal support
    assert read_per_class(tmp_path / "a" / "lightning_logs" / "version_0" / "per_class_val.csv", epoch=0).epoch == 0
    with pytest.raises(ValueError, match="no evaluation at epoch 7"):
        read_per_class(tmp_path / "a" / "lightning_logs" / "version_0" / "per_class_val.csv", epoch=7)


def test_single_run_writes_valid_pngs(tmp_path):
    _write_run(tmp_path / "run", 100, seed=0)
    written = main([str(tmp_path / "run")])
    names = sorted(p.name for p in written)
    assert names == ["groups_val.png", "per_class_val.png"]
    for p in written:
        assert p.parent == tmp_path / "run" / "report"
        _assert_png(p)


def test_two_runs_comparison_and_many_classes(tmp_path):
    # 1,000 classes: the per-class figure switches to points + moving mean
    _write_run(tmp_path / "simclr", 1000, seed=0, epochs=1)
    _write_run(tmp_path / "supcon", 1000, seed=1, epochs=1)
    out = tmp_path / "figs"
    written = main([str(tmp_path / "simclr"), str(tmp_path / "supcon"), "--out", str(out), "--names", "SimCLR", "SupCon"])
    assert sorted(p.name for p in written) == ["compare_val.png", "groups_val.png", "per_class_val.png", "per_class_val_2.png"]
    for p in written:
        _assert_png(p)


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no per_class_test/val.csv"):
        main([str(tmp_path)])
    bad = tmp_path / "per_class_val.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        main([str(bad)])
    _write_run(tmp_path / "x", 10, seed=0, epochs=1)
    _write_run(tmp_path / "y", 12, seed=0, epochs=1)
    with pytest.raises(ValueError, match="10 and 12 classes"):
        main([str(tmp_path / "x"), str(tmp_path / "y"), "--out", str(tmp_path / "o")])


def test_python_dash_m(tmp_path):
    _write_run(tmp_path / "run", 10, seed=0, epochs=1)
    r = subprocess.run(
        [sys.executable, "-m", "ltcl_lightning.report", str(tmp_path / "run"), "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "per_class_val.png").read_bytes()[:8] == PNG_SIGNATURE


def test_report_over_three_seeded_quickstart_runs_prints_mean_std(tmp_path, capsys):
    """Done-when of issue 12: `ltcl report` over three seeded quickstart runs prints the table."""
    import json

    from ltcl_lightning.cli import cli_main
    from ltcl_lightning.commands import main as ltcl

    repo = Path(__file__).resolve().parents[1]
    runs = []
    for seed in (0, 1, 2):
        cli_main(
            [
                "fit",
                "--config",
                str(repo / "experiments/quickstart.yaml"),
                f"--seed_everything={seed}",
                "--trainer.max_epochs=2",
                "--trainer.limit_train_batches=2",
                "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={tmp_path / f'seed{seed}'}",
            ]
        )
        runs.append(tmp_path / f"seed{seed}")
    capsys.readouterr()
    written = ltcl(["report", *map(str, runs), "--out", str(tmp_path / "rep")])
    out = capsys.readouterr().out
    summaries = [json.loads(next(r.rglob("summary.json")).read_text()) for r in runs]
    assert [s["seed"] for s in summaries] == [0, 1, 2] and {s["selected_on"] for s in summaries} == {"test"}
    for part in ("last", "best"):
        for key in ("acc", "many", "medium", "few"):
            x = np.array([100 * s["val"][part][key] for s in summaries])
            assert f"{x.mean():.2f} ± {x.std(ddof=1):.2f}" in out, (part, key)
    assert "| SimCLR | DigitsLT | 3 |" in out and "selected on the TEST set" in out
    tex = (tmp_path / "rep" / "table.tex").read_text()
    assert "\\pm" in tex and "SimCLR & 3 &" in tex
    assert tmp_path / "rep" / "table.md" in written


def _pc(acc, counts, groups):
    from ltcl_lightning.report import PerClass

    n = len(acc)
    return PerClass(
        "run", 3, [f"c{i}" for i in range(n)], np.asarray(counts), np.asarray(groups), np.asarray(acc, dtype=np.float64), np.full(n, 10)
    )


def test_per_class_figure_shows_zero_classes_groups_and_percent():
    from ltcl_lightning.report import per_class_figure

    counts = [500, 300, 100, 50, 20, 5]
    acc = [0.9, 0.8, 0.5, 0.4, 0.0, 0.1]  # the class at 0 % must stay visible
    groups = [0, 0, 1, 1, 2, 2]
    ax = per_class_figure(_pc(acc, counts, groups)).axes[0]
    assert ax.get_ylim() == (0, 105) and "%" in ax.get_ylabel()
    zero_marks = [ln for ln in ax.get_lines() if ln.get_marker() == "v"]
    assert len(zero_marks) == 1 and list(zero_marks[0].get_xdata()) == [4]
    means = {c.get_label(): c.get_segments()[0][0][1] for c in ax.collections if "mean" in str(c.get_label())}
    assert means == {
        "Many mean 85.0 %": pytest.approx(85.0),
        "Medium mean 45.0 %": pytest.approx(45.0),
        "Few mean 5.0 %": pytest.approx(5.0),
    }
    boundaries = [ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_linestyle() == ":"]
    assert boundaries == [1.5, 3.5]
    legend = ax.get_legend()
    legend.figure.canvas.draw()
    assert legend.get_window_extent().x0 > ax.get_window_extent().x1  # off the axes, not over the tail


def test_many_classes_are_binned_by_log_count():
    from ltcl_lightning.report import log_count_bins, per_class_figure

    counts = np.maximum(2, (1000 * 0.002 ** (np.arange(1000) / 999)).astype(int))  # 1000 -> 2, iNat-like
    bins = log_count_bins(counts, 20)
    assert bins.min() == 0 and bins.max() == 19 and bins[0] == 0 and bins[-1] == 19
    assert (np.diff(bins) >= 0).all()  # monotone: head in bin 0
    edges = np.linspace(np.log10(2), np.log10(1000), 21)
    assert ((np.log10(counts) >= edges[19 - bins] - 1e-9) & (np.log10(counts) <= edges[20 - bins] + 1e-9)).all()
    groups = np.where(counts > 100, 0, np.where(counts < 20, 2, 1))
    ax = per_class_figure(_pc(np.linspace(1, 0, 1000), counts, groups)).axes[0]
    assert len(ax.patches) == len(np.unique(bins)) <= 20


@pytest.mark.parametrize(
    "damage, match",
    [
        (lambda text: text[: len(text) // 2 + 7], r"line \d+: (the row has \d+ fields instead of 8|\w+ is '.*', not a number)"),
        (lambda text: text.replace(",many,", ",mny,", 1), r"line \d+: group is 'mny'"),
        (lambda text: text.replace("\n", "\n\x00\xff,", 3), r"(line \d+|not a readable CSV)"),
    ],
)
def test_corrupt_csv_names_the_file_and_the_fix(tmp_path, damage, match):
    # before: ValueError "invalid literal for int() with base 10: ''" / TypeError / KeyError 'mny', no file named
    _write_run(tmp_path / "run", 10, seed=0, epochs=1)
    (csv_path,) = (tmp_path / "run").rglob("per_class_*.csv")
    csv_path.write_text(damage(csv_path.read_text()))
    with pytest.raises(ValueError, match=match) as err:
        main([str(tmp_path / "run"), "--out", str(tmp_path / "o")])
    assert str(csv_path) in str(err.value) and "evaluate the checkpoint again" in str(err.value)


def _summary(folder: Path, **fields) -> tuple[Path, dict]:
    nums = {"acc": 0.5, "many": 0.7, "medium": 0.5, "few": 0.3}
    s = {"method": "SimCLR", "dataset": "CIFAR100LT", "setting": "IF100", "config": "aaaa0000", "selected_on": "validation"}
    s.update({"val": {"last": nums, "best": nums}}, **fields)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").write_text(json.dumps(s))
    return folder / "summary.json", s


def test_runs_of_other_experiments_are_never_averaged_together(tmp_path, capsys):
    from ltcl_lightning.report import aggregate_runs, markdown_table

    low, high = {"acc": 0.2, "many": 0.2, "medium": 0.2, "few": 0.2}, {"acc": 0.6, "many": 0.6, "medium": 0.6, "few": 0.6}
    summaries = [
        _summary(tmp_path / "a0", seed=0),
        _summary(tmp_path / "a1", seed=1),
        # before: same method and dataset class, so averaged into the row above (IF 10 with IF 100)
        _summary(tmp_path / "b0", seed=0, setting="IF10", config="bbbb1111", val={"last": high, "best": high}),
        # a test of a0's checkpoint logged into a folder of its own: a0's test column, not a 4th run
        _summary(tmp_path / "t", val=None, test=low, test_at={"best": {**low, "checkpoint": str(tmp_path / "a0/checkpoints/best.ckpt")}}),
        _summary(tmp_path / "orphan", val=None, test=low, test_at={"best": {**low, "checkpoint": "/elsewhere/checkpoints/x.ckpt"}}),
    ]
    rows = {r["dataset"]: r for r in aggregate_runs(summaries)}
    assert set(rows) == {"CIFAR100LT IF100 [config aaaa0000]", "CIFAR100LT IF10 [config bbbb1111]"}
    a, b = rows["CIFAR100LT IF100 [config aaaa0000]"], rows["CIFAR100LT IF10 [config bbbb1111]"]
    assert a["n"] == 2 and a["seeds"] == [0, 1] and a["best/acc"] == (50.0, 0.0)
    assert b["n"] == 1 and b["best/acc"] == (60.0, 0.0)
    assert "test@best/acc" not in a  # only one of its two runs was tested: no mean over a subset
    assert "left out" in capsys.readouterr().err  # the orphan test, said so
    one = aggregate_runs(summaries[:1] + summaries[3:4])
    assert one[0]["n"] == 1 and one[0]["test@best/acc"] == (20.0, 0.0) and one[0]["dataset"] == "CIFAR100LT"
    assert "| SimCLR | CIFAR100LT IF10 [config bbbb1111] | 1 |" in markdown_table(list(rows.values()))


def test_experiment_id_ignores_only_the_seed_and_output_places():
    from ltcl_lightning.callbacks.metadata import experiment_id

    cfg = {"seed_everything": 0, "model": {"init_args": {"lr": 0.1}}, "trainer": {"max_epochs": 5, "default_root_dir": "a", "logger": None}}
    same = {**cfg, "seed_everything": 3, "ckpt_path": "x.ckpt", "trainer": {**cfg["trainer"], "default_root_dir": "b", "logger": True}}
    assert experiment_id(cfg) == experiment_id(same)
    assert experiment_id(cfg) != experiment_id({**cfg, "model": {"init_args": {"lr": 0.2}}})
    assert experiment_id(cfg) != experiment_id({**cfg, "trainer": {**cfg["trainer"], "max_epochs": 6}})
