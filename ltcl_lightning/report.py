"""Long-tail figures without W&B: ``ltcl report RUN_DIR [RUN_DIR2]`` (or ``python -m ltcl_lightning.report``).

Reads the per-class CSV that :class:`ltcl_lightning.callbacks.report.LongTailReport` writes
(``per_class_<split>.csv``, one row per class and evaluation) and writes PNG figures:

* ``per_class_<split>.png``: per-class accuracy (%) with classes sorted by training count (head
  to tail), coloured by Many / Medium / Few, a marker on every class at 0 %, the group
  boundaries and group means as lines, training count on a log axis, the legend outside the
  axes (not over the tail); above ``MAX_BARS`` classes (ImageNet-LT, iNaturalist) one bar per
  log-training-count bin;
* ``groups_<split>.png``: overall / Many / Medium / Few accuracy (one bar per run);
* ``compare_<split>.png`` (two runs): both runs' per-class accuracy side by side, sorted by the
  first run's training counts, and the per-class difference.

Figures are drawn with matplotlib's object-oriented API on an Agg canvas, never through
``pyplot``: the global backend of the caller (a notebook's inline backend, a GUI) stays as it is.
Group numbers are recomputed from the per-class rows with :func:`ltcl_lightning.metrics.summarize`,
the same function the evaluation uses, so the figures agree with the logged scalars.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ltcl_lightning.longtail import GROUP_NAMES
from ltcl_lightning.metrics import summarize

#: Columns of the per-class CSV (one row per class per evaluation).
PER_CLASS_COLUMNS = ("epoch", "step", "class_index", "class_name", "train_count", "group", "accuracy", "support")
GROUP_LABELS = {"many": "Many", "medium": "Medium", "few": "Few"}
GROUP_COLORS = {"many": "#1f77b4", "medium": "#ff7f0e", "few": "#d62728"}
#: Above this many classes per-class bars become points plus a moving average (8,142 bars are unreadable and slow).
MAX_BARS = 200


# ----- data ------------------------------------------------------------------------------------
@dataclass
class PerClass:
    """Per-class results of one evaluation (arrays indexed by class index)."""

    name: str
    epoch: int
    class_names: list[str]
    train_count: np.ndarray
    group: np.ndarray  # 0 many, 1 medium, 2 few
    accuracy: np.ndarray
    support: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.accuracy)

    def order(self) -> np.ndarray:
        """Class indices head to tail: training count descending, ties by class index."""
        return np.lexsort((np.arange(self.num_classes), -self.train_count))

    def summary(self) -> dict[str, float]:
        out = summarize(torch.from_numpy(self.accuracy), torch.from_numpy(self.support), torch.from_numpy(self.group))
        total = self.support.sum()
        out["acc"] = float((self.accuracy * self.support).sum() / total) if total > 0 else 0.0
        return out


def write_per_class_rows(path: Path, rows: list[list]) -> None:
    """Append rows (``PER_CLASS_COLUMNS`` order) to a per-class CSV, writing the header if new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(PER_CLASS_COLUMNS)
        w.writerows(rows)


_DAMAGED_FIX = (
    "The file is damaged (a run killed while writing it, or edited by hand): evaluate the checkpoint "
    "again to rewrite it (ltcl test / validate --ckpt_path ...), or leave this run out of the report"
)


def _row_problem(r: dict) -> str | None:
    """What is wrong with one per-class row (a truncated or garbled line), or None."""
    if None in r or any(r.get(k) is None for k in PER_CLASS_COLUMNS):
        return f"the row has {len([v for k, v in r.items() if k is not None and v is not None])} fields instead of {len(PER_CLASS_COLUMNS)}"
    for key, conv in (("epoch", int), ("step", int), ("class_index", int), ("train_count", int), ("accuracy", float), ("support", int)):
        try:
            conv(r[key])
        except ValueError:
            return f"{key} is {r[key]!r}, not a number"
    if r["group"] not in GROUP_NAMES:
        return f"group is {r['group']!r}, not one of {list(GROUP_NAMES)}"
    return None


def read_per_class(path: Path, epoch: int | None = None, name: str | None = None) -> PerClass:
    """The rows of one evaluation from a per-class CSV: the last one, or the one of ``epoch``."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = set(PER_CLASS_COLUMNS) - set(reader.fieldnames or [])
            if missing:
                raise ValueError(
                    f"{path} is not a per-class CSV written by LongTailReport: missing columns {sorted(missing)} "
                    f"(expected {list(PER_CLASS_COLUMNS)})."
                )
            rows = list(reader)
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path} is not a readable CSV ({e}). {_DAMAGED_FIX}") from None
    for line, r in enumerate(rows, start=2):
        problem = _row_problem(r)
        if problem:
            raise ValueError(f"{path}, line {line}: {problem}. {_DAMAGED_FIX}")
    if not rows:
        raise ValueError(f"{path} has a header but no rows: no evaluation finished in this run.")
    # a resumed or repeated evaluation appends; the last block of (epoch, step) is the latest one
    keys = [(int(r["epoch"]), int(r["step"])) for r in rows]
    if epoch is None:
        key = keys[-1]
    else:
        cand = [k for k in keys if k[0] == epoch]
        if not cand:
            raise ValueError(f"{path} has no evaluation at epoch {epoch}; epochs present: {sorted({k[0] for k in keys})}")
        key = cand[-1]
    # take the last contiguous block with that key (an epoch evaluated twice keeps the newest)
    end = max(i for i, k in enumerate(keys) if k == key) + 1
    start = end
    while start > 0 and keys[start - 1] == key:
        start -= 1
    block = rows[start:end]
    c = len(block)
    idx = np.array([int(r["class_index"]) for r in block])
    if sorted(idx.tolist()) != list(range(c)):
        raise ValueError(f"{path}: the evaluation at epoch {key[0]} does not list classes 0..{c - 1} exactly once")
    inv = np.argsort(idx)
    block = [block[i] for i in inv]
    group_ids = {g: i for i, g in enumerate(GROUP_NAMES)}
    return PerClass(
        name=name or path.parent.name,
        epoch=key[0],
        class_names=[r["class_name"] for r in block],
        train_count=np.array([int(r["train_count"]) for r in block], dtype=np.int64),
        group=np.array([group_ids[r["group"]] for r in block], dtype=np.int64),
        accuracy=np.array([float(r["accuracy"]) for r in block], dtype=np.float64),
        support=np.array([int(r["support"]) for r in block], dtype=np.int64),
    )


def find_per_class_csv(run_dir: Path, split: str = "auto") -> Path:
    """The per-class CSV of a run folder (searched recursively; the newest if several versions)."""
    run_dir = Path(run_dir)
    if run_dir.is_file():
        return run_dir
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder {run_dir} does not exist")
    splits = ["test", "val"] if split == "auto" else [split]
    for s in splits:
        found = sorted(run_dir.rglob(f"per_class_{s}.csv"), key=lambda p: p.stat().st_mtime)
        if found:
            if len(found) > 1:
                print(f"{run_dir}: {len(found)} per_class_{s}.csv files, using the newest: {found[-1]}", file=sys.stderr)
            return found[-1]
    raise FileNotFoundError(
        f"no per_class_{'/'.join(splits)}.csv under {run_dir}. Train with the LongTailReport callback "
        "(add `--config experiments/logger/tensorboard.yaml` or the wandb one) so that the run writes it."
    )


# ----- figures ----------------------------------------------------------------------------------
def _figure(width: float, height: float, ncols: int = 1, nrows: int = 1):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def log_count_bins(train_count: np.ndarray, n_bins: int = 20) -> np.ndarray:
    """Bin index of every class by log training count (equal-width bins in log10, head = bin 0)."""
    logc = np.log10(np.maximum(train_count, 1).astype(np.float64))
    lo, hi = logc.min(), logc.max()
    if hi - lo < 1e-12:
        return np.zeros(len(train_count), dtype=np.int64)
    edges = np.linspace(lo, hi, n_bins + 1)
    # bin 0 holds the most frequent classes (head left, as the per-class bars)
    return (n_bins - 1 - np.clip(np.digitize(logc, edges[1:-1]), 0, n_bins - 1)).astype(np.int64)


def _group_spans(grp: np.ndarray) -> list[tuple[int, int, int]]:
    """(group, start, end) of the contiguous runs of ``grp`` (classes in head-to-tail order)."""
    spans, start = [], 0
    for i in range(1, len(grp) + 1):
        if i == len(grp) or grp[i] != grp[start]:
            spans.append((int(grp[start]), start, i))
            start = i
    return spans


def _per_class_axes(
    ax, pc: PerClass, order: np.ndarray, offset: float = 0.0, width: float = 0.8, label_prefix: str = "", alpha: float = 1.0
):
    """Per-class accuracy in %, head to tail: bars coloured by group, a marker on every class at
    0 % (a bar of height 0 is invisible), group boundaries and each group's mean as a line."""
    x = np.arange(pc.num_classes)
    acc = 100 * pc.accuracy[order]
    grp = pc.group[order]
    for g, gname in enumerate(GROUP_NAMES):
        sel = grp == g
        if sel.any():
            ax.bar(
                x[sel] + offset,
                acc[sel],
                width=width,
                color=GROUP_COLORS[gname],
                alpha=alpha,
                label=f"{label_prefix}{GROUP_LABELS[gname]} ({int(sel.sum())})",
            )
    zero = acc == 0
    if zero.any():
        ax.plot(
            x[zero] + offset,
            np.zeros(int(zero.sum())),
            "v",
            ms=4,
            color="black",
            clip_on=False,
            label=f"{label_prefix}0 % ({int(zero.sum())} classes)",
        )
    _group_lines(ax, pc, grp, acc)


def _group_lines(ax, pc: PerClass, grp: np.ndarray, acc: np.ndarray, x: np.ndarray | None = None) -> None:
    x = np.arange(len(grp)) if x is None else x
    """Dotted group boundaries, and each group's mean (of its classes' accuracies) as a dashed line."""
    summary = pc.summary()
    labelled: set[int] = set()
    for k, (g, start, end) in enumerate(_group_spans(grp)):
        if k:
            ax.axvline(x[start] - 0.5, color="gray", lw=0.8, ls=":")
        gname = GROUP_NAMES[g]
        ax.hlines(
            100 * summary[gname],
            x[start] - 0.5,
            x[end - 1] + 0.5,
            color=GROUP_COLORS[gname],
            lw=2,
            ls="--",
            label=None if g in labelled else f"{GROUP_LABELS[gname]} mean {100 * summary[gname]:.1f} %",
        )
        labelled.add(g)


def per_class_figure(pc: PerClass, title: str | None = None):
    """Per-class accuracy (%), classes sorted by training count (head left, tail right); with
    more than ``MAX_BARS`` classes, one bar per log-training-count bin (mean accuracy of its
    classes). Group boundaries and group means as lines, the legend outside the axes."""
    order = pc.order()
    many = pc.num_classes > MAX_BARS
    fig, axes = _figure(min(16.0, 7.5 + 0.06 * min(pc.num_classes, MAX_BARS)), 4.5)
    ax = axes[0, 0]
    ax2 = ax.twinx()
    if many:
        bins = log_count_bins(pc.train_count)
        used = np.unique(bins)
        xs = np.arange(len(used))
        acc = np.array([100 * pc.accuracy[bins == b].mean() for b in used])
        cnt = np.array([np.median(pc.train_count[bins == b]) for b in used])
        grp = np.array([np.bincount(pc.group[bins == b], minlength=3).argmax() for b in used])
        for g, gname in enumerate(GROUP_NAMES):
            sel = grp == g
            if sel.any():
                ax.bar(xs[sel], acc[sel], width=0.8, color=GROUP_COLORS[gname], label=f"{GROUP_LABELS[gname]} bins")
        zero = acc == 0
        if zero.any():
            ax.plot(xs[zero], np.zeros(int(zero.sum())), "v", ms=4, color="black", clip_on=False, label="0 %")
        _group_lines(ax, pc, grp, acc, xs)
        sizes = [int((bins == b).sum()) for b in used]
        ax.set_xticks(xs, [f"{int(c)}\n({n})" for c, n in zip(cnt, sizes)], fontsize=7)
        ax.set_xlabel("training images per class, median of the bin (classes in the bin); log-count bins, head → tail")
        ax2.plot(xs, cnt, color="gray", lw=1.2, label="training count (median)")
        ax.set_xlim(-1, len(used))
    else:
        _per_class_axes(ax, pc, order)
        ax.set_xlim(-1, pc.num_classes)
        ax.set_xlabel("classes sorted by training count (head → tail)")
        if pc.num_classes <= 30:
            ax.set_xticks(np.arange(pc.num_classes), [pc.class_names[i] for i in order], rotation=90, fontsize=8)
        ax2.plot(np.arange(pc.num_classes), pc.train_count[order], color="gray", lw=1.2, label="training count")
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax2.set_yscale("log")
    ax2.set_ylabel("training images (log)")
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    # outside the axes: a legend inside would cover the tail classes
    ax.legend(h1 + h2, l1 + l2, loc="upper left", bbox_to_anchor=(1.1, 1.0), fontsize=8, borderaxespad=0)
    s = pc.summary()
    ax.set_title(
        title
        or (
            f"{pc.name} (epoch {pc.epoch}): overall {100 * s['acc']:.1f} %, Many {100 * s['many']:.1f}, "
            f"Medium {100 * s['medium']:.1f}, Few {100 * s['few']:.1f}"
        ),
        fontsize=10,
    )
    return fig


def groups_figure(runs: Sequence[PerClass]):
    """Overall / Many / Medium / Few accuracy, one bar per run in each group."""
    keys = ["acc", *GROUP_NAMES]
    labels = ["Overall", "Many", "Medium", "Few"]
    fig, axes = _figure(6.5, 4.0)
    ax = axes[0, 0]
    n = len(runs)
    width = 0.8 / n
    x = np.arange(len(keys))
    for i, pc in enumerate(runs):
        s = pc.summary()
        vals = [100 * s[k] for k in keys]
        bars = ax.bar(x + (i - (n - 1) / 2) * width, vals, width=width, label=f"{pc.name} (epoch {pc.epoch})")
        for b, v in zip(bars, vals):
            ax.annotate(f"{v:.1f}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, labels)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 105)
    ax.legend(fontsize=8)
    ax.set_title("Long-tail groups (group = mean of per-class accuracies)", fontsize=10)
    return fig


def compare_figure(a: PerClass, b: PerClass):
    """Two runs' per-class accuracy side by side (sorted by a's training counts) and b - a."""
    if a.num_classes != b.num_classes:
        raise ValueError(f"cannot compare runs with {a.num_classes} and {b.num_classes} classes")
    if not np.array_equal(a.train_count, b.train_count):
        print("warning: the two runs have different training counts; sorting by the first run's", file=sys.stderr)
    order = a.order()
    fig, axes = _figure(min(16.0, 7.0 + 0.08 * min(a.num_classes, MAX_BARS)), 7.0, nrows=2)
    ax, axd = axes[0, 0], axes[1, 0]
    x = np.arange(a.num_classes)
    if a.num_classes <= MAX_BARS:
        ax.bar(x - 0.2, 100 * a.accuracy[order], width=0.4, color="#1f77b4", label=a.name)
        ax.bar(x + 0.2, 100 * b.accuracy[order], width=0.4, color="#ff7f0e", label=b.name)
    else:
        k = max(5, a.num_classes // 50)
        for pc, col in ((a, "#1f77b4"), (b, "#ff7f0e")):
            acc = 100 * pc.accuracy[order]
            ax.plot(x, acc, ".", ms=1.5, color=col, alpha=0.3)
            smooth = np.convolve(acc, np.ones(k) / k, mode="valid")
            ax.plot(np.arange(len(smooth)) + (k - 1) / 2, smooth, "-", color=col, lw=1.5, label=f"{pc.name} (moving mean, {k})")
    ax.set_ylim(0, 105)
    ax.set_xlim(-1, a.num_classes)
    ax.set_ylabel("accuracy (%)")
    sa, sb = a.summary(), b.summary()
    ax.set_title(
        f"{a.name}: overall {100 * sa['acc']:.1f} / Few {100 * sa['few']:.1f}   vs   "
        f"{b.name}: overall {100 * sb['acc']:.1f} / Few {100 * sb['few']:.1f}",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # off the tail
    diff = 100 * (b.accuracy - a.accuracy)[order]
    axd.bar(x, diff, width=1.0 if a.num_classes > MAX_BARS else 0.8, color=np.where(diff >= 0, "#2ca02c", "#d62728"))
    axd.axhline(0, color="black", lw=0.8)
    axd.set_xlim(-1, a.num_classes)
    axd.set_ylabel(f"{b.name} − {a.name} (points)")
    axd.set_xlabel("classes sorted by training count (head → tail)")
    if a.num_classes <= 30:
        for axx in (ax, axd):
            axx.set_xticks(x, [a.class_names[i] for i in order], rotation=90, fontsize=8)
    return fig


def save_png(fig, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


# ----- tables over seeds -------------------------------------------------------------------------
#: the per-run numbers that LongTailMethod runs write (ltcl_lightning.callbacks.metadata.RunConfig)
SUMMARY_FILE = "summary.json"
TABLE_KEYS = ("acc", "many", "medium", "few")
TABLE_LABELS = ("Overall", "Many", "Medium", "Few")


def find_summaries(paths: Sequence[Path]) -> list[tuple[Path, dict]]:
    """Every run's ``summary.json`` under the given folders (or the files themselves), in order."""
    out = []
    for p in map(Path, paths):
        files = [p] if p.is_file() and p.name == SUMMARY_FILE else sorted(p.rglob(SUMMARY_FILE)) if p.is_dir() else []
        for f in files:
            try:
                out.append((f, json.loads(f.read_text())))
            except json.JSONDecodeError as err:
                raise ValueError(f"{f} is not valid JSON ({err}); it should be written by `ltcl fit`") from None
    return out


def _fold_tests(summaries: Sequence[tuple[Path, dict]]) -> list[dict]:
    """The training runs' summaries, each with the test numbers of summaries that hold only a
    test (``ltcl test`` with a logger of its own writes a new run folder) of one of its
    checkpoints (``<run>/checkpoints/x.ckpt``). A test-only summary whose training run is not
    among the folders given is left out, with a note."""
    runs = {f.parent.resolve(): dict(s) for f, s in summaries if s.get("val") is not None}
    for f, s in summaries:
        if s.get("val") is not None:
            continue
        tests = s.get("test_at") or {}
        owners = {Path(t["checkpoint"]).resolve().parent.parent for t in tests.values() if isinstance(t, dict) and t.get("checkpoint")}
        owner = runs.get(owners.pop()) if len(owners) == 1 else None
        if owner is None:
            print(f"note: {f} holds test numbers only, and its training run is not among the folders given: left out", file=sys.stderr)
            continue
        owner["test_at"] = {**(owner.get("test_at") or {}), **tests}
        owner["test"] = s.get("test", owner.get("test"))
    return list(runs.values())


def aggregate_runs(summaries: Sequence[tuple[Path, dict]]) -> list[dict]:
    """One row per experiment: (method, dataset, setting, config), the config being the hash of
    the run's configuration without its seed and output places (``RunConfig`` writes it), so that
    runs that differ in anything but the seed are never averaged together. Each row has n runs,
    the seeds, and mean / std (sample std, ddof 1; 0 for one run) of Overall / Many / Medium /
    Few at the last and the best validation epoch, and on the test set where every run has it."""
    groups: dict[tuple, list[dict]] = {}
    for s in _fold_tests(summaries):
        groups.setdefault((s.get("method"), s.get("dataset"), s.get("setting"), s.get("config")), []).append(s)
    shared = [key[:2] for key in groups]
    rows = []
    for (method, dataset, setting, config), runs in groups.items():
        if shared.count((method, dataset)) > 1:  # other experiments of the same method and data: say which
            dataset = f"{dataset} {setting or ''} [config {config}]".replace("  ", " ")
        row = {
            "method": method,
            "dataset": dataset,
            "n": len(runs),
            "seeds": [r.get("seed") for r in runs],
            "selected_on": sorted({str(r.get("selected_on", "unknown")) for r in runs}),
        }
        parts = {"last": [(r.get("val") or {}).get("last") for r in runs], "best": [(r.get("val") or {}).get("best") for r in runs]}
        labels = sorted({k for r in runs for k in (r.get("test_at") or {})})
        if labels:  # the test set at the validation-selected and at the last checkpoint
            parts.update({f"test@{k}": [(r.get("test_at") or {}).get(k) for r in runs] for k in labels})
        else:
            parts["test"] = [r.get("test") for r in runs]
        for part, values in parts.items():
            if any(v is None for v in values):
                continue
            for k in TABLE_KEYS:
                x = np.array([100 * float(v[k]) for v in values])  # type: ignore[index]  # None skipped above
                row[f"{part}/{k}"] = (float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0)
        rows.append(row)
    return rows


def _parts(rows: Sequence[dict]) -> list[tuple[str, str]]:
    selected = {on for r in rows for on in r["selected_on"]}
    if "test" in selected:
        best = "best epoch, selected on the TEST set"
    elif selected == {"validation"}:
        best = "best epoch (selected on validation)"
    else:  # summaries from datamodules that do not say (LongTailDataModule.validates_on_test)
        best = "best epoch (selected on a split not recorded)"
    out = [("last", "last epoch"), ("best", best), ("test", "test set")]
    tests = sorted({k.split("/")[0] for r in rows for k in r if k.startswith("test@")})
    out += [(t, f"test set at the {t.removeprefix('test@')} checkpoint") for t in tests]
    return [(p, label) for p, label in out if any(f"{p}/acc" in r for r in rows)]


def markdown_table(rows: Sequence[dict]) -> str:
    """Mean ± std over seeds (%), one row per method."""
    parts = _parts(rows)
    head = ["method", "dataset", "runs"] + [f"{p} {lab}" for p, _ in parts for lab in TABLE_LABELS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["method"]), str(r["dataset"]), str(r["n"])]
        for p, _ in parts:
            cells += [f"{r[f'{p}/{k}'][0]:.2f} ± {r[f'{p}/{k}'][1]:.2f}" if f"{p}/{k}" in r else "–" for k in TABLE_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "; ".join(f"{p}: {label}" for p, label in parts) + "; mean ± std over runs (sample std), %."]
    return "\n".join(lines)


def latex_table(rows: Sequence[dict]) -> str:
    parts = _parts(rows)
    cols = "l" + "c" * (1 + 4 * len(parts))
    lines = [
        f"\\begin{{tabular}}{{{cols}}}",
        "\\toprule",
        "& & " + " & ".join(f"\\multicolumn{{4}}{{c}}{{{label}}}" for _, label in parts) + " \\\\",
        "Method & Runs & " + " & ".join(lab for _ in parts for lab in TABLE_LABELS) + " \\\\",
        "\\midrule",
    ]
    for r in rows:
        cells = [str(r["method"]).replace("_", "\\_"), str(r["n"])]
        for p, _ in parts:
            cells += [f"${r[f'{p}/{k}'][0]:.2f} \\pm {r[f'{p}/{k}'][1]:.2f}$" if f"{p}/{k}" in r else "--" for k in TABLE_KEYS]
        lines.append(" & ".join(cells) + " \\\\")
    lines += ["\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines)


def write_report(
    run_dirs: Sequence[Path], out: Path | None = None, split: str = "auto", epoch: int | None = None, names: Sequence[str] | None = None
) -> list[Path]:
    """Write the figures for any number of runs (two: also compared side by side) and return their paths."""
    if not run_dirs:
        raise ValueError("give at least one run folder")
    if names is not None and len(names) != len(run_dirs):
        raise ValueError(f"--names needs one name per run ({len(run_dirs)}), got {len(names)}")
    runs = []
    for i, d in enumerate(run_dirs):
        path = find_per_class_csv(Path(d), split)
        label = names[i] if names else (Path(d).name or str(d))
        runs.append(read_per_class(path, epoch=epoch, name=label))
    split_name = find_per_class_csv(Path(run_dirs[0]), split).stem.removeprefix("per_class_")
    out = Path(out) if out is not None else (Path(run_dirs[0]) if Path(run_dirs[0]).is_dir() else Path(run_dirs[0]).parent) / "report"
    written = [save_png(per_class_figure(runs[0]), out / f"per_class_{split_name}.png")]
    for i, pc in enumerate(runs[1:], 2):
        written.append(save_png(per_class_figure(pc), out / f"per_class_{split_name}_{i}.png"))
    if len(runs) == 2:
        written.append(save_png(compare_figure(runs[0], runs[1]), out / f"compare_{split_name}.png"))
    written.append(save_png(groups_figure(runs), out / f"groups_{split_name}.png"))
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    p = argparse.ArgumentParser(
        prog="ltcl report",
        description="For any number of runs: the mean +- std table over seeds per method (Overall / Many / Medium / "
        "Few at the last and the best epoch, from each run's summary.json) as Markdown and LaTeX, and PNG figures "
        "of per-class accuracy (from the per_class_<split>.csv that the LongTailReport callback writes); with two "
        "runs also a side-by-side comparison.",
    )
    p.add_argument("runs", nargs="+", type=Path, help="run folder(s) (searched recursively) or per-class CSV file(s)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: RUN_DIR/report of the first run)")
    p.add_argument("--split", choices=["auto", "val", "test"], default="auto", help="auto: test if present, else val")
    p.add_argument("--epoch", type=int, default=None, help="evaluation epoch to plot (default: the last)")
    p.add_argument("--names", nargs="+", default=None, help="labels for the runs (default: folder names)")
    args = p.parse_args(argv)
    first = args.runs[0]
    out = args.out if args.out is not None else (first if first.is_dir() else first.parent) / "report"
    written: list[Path] = []
    summaries = find_summaries(args.runs)
    if summaries:
        rows = aggregate_runs(summaries)
        md, tex = markdown_table(rows), latex_table(rows)
        print(f"Mean ± std over runs (%), {len(summaries)} runs:\n{md}")
        out.mkdir(parents=True, exist_ok=True)
        for name, text in (("table.md", md), ("table.tex", tex)):
            (out / name).write_text(text + "\n")
            written.append(out / name)
    try:
        written += write_report(args.runs, out, args.split, args.epoch, args.names)
    except FileNotFoundError as err:
        if not summaries:
            raise
        print(f"no figures: {err}", file=sys.stderr)
    for w in written:
        print(w)
    return written


if __name__ == "__main__":
    main()
