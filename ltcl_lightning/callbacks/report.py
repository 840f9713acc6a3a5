"""``LongTailReport``: per-class results and method state, sent to whichever loggers the Trainer has.

After every validation / test evaluation (never Lightning's sanity check) it reads what the
method's evaluation already computed, ``pl_module.last_eval[prefix]`` (per-class accuracy,
support, the group numbers, the confused class pairs, the epoch; the base logs the overall /
Many / Medium / Few / spread scalars itself, so they are not logged twice), and logs

* one per-class table (class index, class name, training count, group, accuracy, support),
* the per-class accuracy figure with classes sorted by training count,
* at the end of training and of each test, the most confused class pairs;

and once per training epoch the method's :meth:`~ltcl_lightning.methods.base.LongTailMethod.report_state`
(typed records: SDCLR's mask densities per layer, BoostedCL's sample weights against class
frequency, ProCo's kappa per class, PaCo's queue filling), read in ``on_train_epoch_end`` before the callbacks a method
adds itself (``configure_callbacks`` puts them after the Trainer's): the state the epoch trained
with (this epoch's masks, the weights computed at the end of the previous epoch), and ProCo's
kappa as of the epoch's end.

Per logger, one small adapter: ``WandbLogger`` gets ``wandb.Table`` s, a bar chart and the figure
as an image; ``TensorBoardLogger`` the figures as images, histograms and the confused pairs as
text; ``CSVLogger`` CSV files next to its ``metrics.csv``; any other logger the scalars. Whatever
the loggers, ``per_class_<split>.csv`` is written to the run folder (the CSV logger's, else
TensorBoard's, else the W&B run's files folder, else ``trainer.log_dir``) so that
``ltcl report RUN_DIR`` can draw the figures later.

Cost: one table and one figure per evaluation (never one scalar per class), the confused pairs
from a sort of the (deduplicated) predictions, never a dense C x C matrix (8,142 classes would
be 0.5 GB).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from ltcl_lightning.longtail import GROUP_NAMES, group_means


# ----- what report_state() returns -----------------------------------------------------------
@dataclass
class StateSummary:
    """A state record turned into what loggers take: scalars, per-class vectors, histograms."""

    scalars: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, np.ndarray] = field(default_factory=dict)
    histograms: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class ScalarState:
    """One number, e.g. PaCo's queue filling: ``state/<name>``."""

    value: Any

    def add_to(self, out: StateSummary, name: str, num_classes: int) -> None:
        out.scalars[f"state/{name}"] = _as_float(self.value, name)


@dataclass
class PerLayerState:
    """Named scalars, e.g. SDCLR's mask density per layer and ``overall``: ``state/<name>/<key>``."""

    values: Mapping[str, Any]

    def add_to(self, out: StateSummary, name: str, num_classes: int) -> None:
        out.scalars.update({f"state/{name}/{k}": _as_float(v, f"{name}.{k}") for k, v in self.values.items()})


@dataclass
class PerClassState:
    """One value per class, e.g. ProCo's kappa: per-class table, histogram, figure against the
    training count, ``state/<name>_<group>`` and ``state/<name>_corr_log_count``."""

    values: torch.Tensor

    def add_to(self, out: StateSummary, name: str, num_classes: int) -> None:
        t = torch.as_tensor(self.values).detach()
        if t.shape != (num_classes,):
            raise ValueError(f"report_state()['{name}'] has shape {tuple(t.shape)}; a PerClassState holds ({num_classes},) values")
        out.per_class[name] = out.histograms[name] = t.double().cpu().numpy()


@dataclass
class PerSampleState:
    """One value per training sample with the sample's label, e.g. BoostedCL's sample weights:
    histogram, mean / std, and the per-class mean as a :class:`PerClassState` (``<name>_class_mean``)."""

    values: torch.Tensor
    target: torch.Tensor

    def add_to(self, out: StateSummary, name: str, num_classes: int) -> None:
        w = torch.as_tensor(self.values).detach().double().flatten().cpu()
        target = torch.as_tensor(self.target).detach().long().flatten().cpu()
        if w.shape != target.shape:
            raise ValueError(
                f"report_state()['{name}'] has {w.numel()} values but {target.numel()} targets; they must "
                "describe the same training samples."
            )
        s = torch.bincount(target, weights=w, minlength=num_classes)
        n = torch.bincount(target, minlength=num_classes).double()
        out.per_class[f"{name}_class_mean"] = torch.where(n > 0, s / n.clamp_min(1), torch.full_like(s, float("nan"))).numpy()
        out.histograms[name] = w.numpy()
        out.scalars.update({f"state/{name}_mean": float(w.mean()), f"state/{name}_std": float(w.std(unbiased=False))})


StateRecord = ScalarState | PerLayerState | PerClassState | PerSampleState


def _corr_with_log_count(values: np.ndarray, counts: np.ndarray) -> float:
    """Pearson correlation of a per-class quantity with log training count (negative: the tail gets more)."""
    ok = np.isfinite(values) & (counts > 0)
    if ok.sum() < 2:
        return float("nan")
    x, y = np.log(counts[ok].astype(np.float64)), values[ok].astype(np.float64)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


# ----- one adapter per logger ------------------------------------------------------------------
class _Sink:
    """What a logger gets of the report; the base (any logger) takes the state's scalars only."""

    draws = False  # whether it shows figures

    def __init__(self, logger: Logger, per_class_csv: bool):
        self.logger, self.per_class_csv = logger, per_class_csv

    def per_class(self, prefix: str, rows: list[list], epoch: int, step: int, fig) -> None: ...

    def confused(self, prefix: str, epoch: int, columns: list[str], data: list[list], step: int) -> None: ...

    def state(self, summary: StateSummary, counts: np.ndarray, figs: dict, epoch: int, step: int) -> None:
        if summary.scalars:
            self.logger.log_metrics(summary.scalars, step=step)


class _WandbSink(_Sink):
    draws = True

    def per_class(self, prefix, rows, epoch, step, fig):
        import wandb

        # frequency rank, zero-padded into the bar label: W&B orders bars by label, so the chart
        # reads head -> tail like the papers' figures
        order = sorted(range(len(rows)), key=lambda i: (-rows[i][2], i))
        width = len(str(len(rows)))
        rank = {i: r for r, i in enumerate(order)}
        columns = ["class_index", "class_name", "train_count", "group", "accuracy", "support", "freq_rank", "label"]
        table = wandb.Table(columns=columns, data=[[*r, rank[r[0]], f"{rank[r[0]]:0{width}d} {r[1]}"] for r in rows])
        payload: dict[str, Any] = {
            f"{prefix}/per_class": table,
            f"{prefix}/per_class_bar": wandb.plot.bar(table, "label", "accuracy", title=f"{prefix} per-class accuracy (head → tail)"),
        }
        if fig is not None:
            payload[f"{prefix}/per_class_figure"] = wandb.Image(_fig_to_array(fig))
        self.logger.log_metrics(payload, step=step)

    def confused(self, prefix, epoch, columns, data, step):
        self.logger.log_table(f"{prefix}/confused_pairs", columns=columns, data=data, step=step)

    def state(self, summary, counts, figs, epoch, step):
        import wandb

        super().state(summary, counts, figs, epoch, step)
        payload: dict[str, Any] = {}
        for key, vals in summary.per_class.items():
            table = wandb.Table(columns=["class_index", "train_count", key], data=_state_rows(vals, counts))
            payload[f"state/{key}"] = table
            payload[f"state/{key}_vs_count"] = wandb.plot.scatter(table, "train_count", key, title=f"{key} against training count")
        for key, vals in summary.histograms.items():
            payload[f"state/{key}_hist"] = wandb.Histogram(vals[np.isfinite(vals)])
        if payload:
            self.logger.log_metrics(payload, step=step)


class _TensorBoardSink(_Sink):
    draws = True

    def per_class(self, prefix, rows, epoch, step, fig):
        if fig is not None:
            self.logger.experiment.add_figure(f"{prefix}/per_class_accuracy", fig, global_step=step, close=False)

    def confused(self, prefix, epoch, columns, data, step):
        md = "| true | predicted | count | rate |\n|---|---|---|---|\n" + "\n".join(
            f"| {d[1]} ({d[0]}) | {d[3]} ({d[2]}) | {d[4]} | {d[5]:.3f} |" for d in data
        )
        self.logger.experiment.add_text(f"{prefix}/confused_pairs", f"epoch {epoch}\n\n" + md, global_step=step)

    def state(self, summary, counts, figs, epoch, step):
        super().state(summary, counts, figs, epoch, step)
        for key, vals in summary.histograms.items():
            self.logger.experiment.add_histogram(f"state/{key}", vals[np.isfinite(vals)], global_step=step)
        for key, fig in figs.items():
            self.logger.experiment.add_figure(f"state/{key}_vs_count", fig, global_step=step, close=False)


class _CSVSink(_Sink):
    def per_class(self, prefix, rows, epoch, step, fig):
        if not self.per_class_csv:  # else the run folder (this logger's) has it already
            from ltcl_lightning.report import write_per_class_rows

            write_per_class_rows(Path(self.logger.log_dir) / f"per_class_{prefix}.csv", [[epoch, step, *r] for r in rows])

    def confused(self, prefix, epoch, columns, data, step):
        _write_csv(Path(self.logger.log_dir) / f"confused_pairs_{prefix}.csv", ["epoch", *columns], [[epoch, *d] for d in data], "w")

    def state(self, summary, counts, figs, epoch, step):
        super().state(summary, counts, figs, epoch, step)
        for key, vals in summary.per_class.items():
            _write_csv(
                Path(self.logger.log_dir) / f"state_{key}.csv",
                ["epoch", "step", "class_index", "train_count", key],
                [[epoch, step, *r] for r in _state_rows(vals, counts)],
                "a",
            )


_SINKS: tuple[tuple[type, type[_Sink]], ...] = ((WandbLogger, _WandbSink), (TensorBoardLogger, _TensorBoardSink), (CSVLogger, _CSVSink))


def _sink(logger: Logger, per_class_csv: bool) -> _Sink:
    return next((s for cls, s in _SINKS if isinstance(logger, cls)), _Sink)(logger, per_class_csv)


class LongTailReport(pl.Callback):
    """Per-class table, per-class figure, most confused pairs and method state for every logger.

    Args:
        top_confused: number of most confused (true, predicted) class pairs to report.
        per_class_csv: write ``per_class_<split>.csv`` to the run folder whatever the loggers
            (needed by ``ltcl report``).
        log_figures: draw the per-class figure at every evaluation (TensorBoard, W&B).
        log_state: log ``pl_module.report_state()`` once per training epoch.
    """

    def __init__(self, top_confused: int = 10, per_class_csv: bool = True, log_figures: bool = True, log_state: bool = True):
        super().__init__()
        if top_confused < 0:
            raise ValueError(f"top_confused must be >= 0, got {top_confused}")
        self.top_confused, self.per_class_csv, self.log_figures, self.log_state = top_confused, per_class_csv, log_figures, log_state
        self._confused: dict[str, tuple[int, list]] = {}

    # ----- hooks: ``on_*_end`` run after the module's epoch-end hook has filled ``last_eval`` -----
    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._report_eval(trainer, pl_module, "val")

    def on_test_end(self, trainer, pl_module) -> None:
        self._report_eval(trainer, pl_module, "test")
        self._report_confusion(trainer, pl_module, "test")

    def on_train_end(self, trainer, pl_module) -> None:
        # before the loggers' teardown: the last validation's confused pairs
        self._report_confusion(trainer, pl_module, "val")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if not self.log_state or not hasattr(pl_module, "report_state"):
            return
        state = pl_module.report_state()  # on every rank: a method may gather inside
        if state and trainer.is_global_zero:
            self._report_state(trainer, pl_module, state)

    # ----- per-class evaluation ----------------------------------------------------------------
    @staticmethod
    def _class_names(trainer, num_classes: int) -> list[str]:
        dm = getattr(trainer, "datamodule", None)
        names = getattr(dm, "class_names", None) if dm is not None else None
        if names is None or len(names) != num_classes:
            return [str(c) for c in range(num_classes)]
        return [str(n) for n in names]

    def per_class_rows(self, trainer, pl_module, prefix: str) -> list[list]:
        """Rows ``[class_index, class_name, train_count, group, accuracy, support]`` of the
        evaluation in ``pl_module.last_eval[prefix]``, in class-index order."""
        res = pl_module.last_eval[prefix]
        acc = torch.as_tensor(res["per_class"]).double().cpu()
        support = torch.as_tensor(res["support"]).long().cpu()
        c = acc.numel()
        counts = pl_module.class_counts.long().cpu()
        groups = pl_module.class_group.cpu()
        names = self._class_names(trainer, c)
        return [[i, names[i], int(counts[i]), GROUP_NAMES[int(groups[i])], float(acc[i]), int(support[i])] for i in range(c)]

    def _report_eval(self, trainer, pl_module, prefix: str) -> None:
        ev = getattr(pl_module, "last_eval", {})
        if prefix not in ev or not trainer.is_global_zero:
            return
        epoch, step = int(ev[prefix].get("epoch", trainer.current_epoch)), int(trainer.global_step)
        if "confused_pairs" in ev[prefix] and self.top_confused > 0:
            self._confused[prefix] = (epoch, ev[prefix]["confused_pairs"][: self.top_confused])
        rows = self.per_class_rows(trainer, pl_module, prefix)
        if self.per_class_csv:
            from ltcl_lightning.report import write_per_class_rows

            write_per_class_rows(self.run_dir(trainer) / f"per_class_{prefix}.csv", [[epoch, step, *r] for r in rows])
        sinks = [_sink(lg, self.per_class_csv) for lg in trainer.loggers]
        fig = None
        if self.log_figures and any(s.draws for s in sinks):
            fig = self._figure(rows, epoch, f"{type(pl_module).__name__} {prefix}")
        for sink in sinks:
            sink.per_class(prefix, rows, epoch, step, fig)

    @staticmethod
    def _figure(rows: list[list], epoch: int, name: str):
        from ltcl_lightning.report import PerClass, per_class_figure

        pc = PerClass(
            name=name,
            epoch=epoch,
            class_names=[r[1] for r in rows],
            train_count=np.array([r[2] for r in rows], dtype=np.int64),
            group=np.array([GROUP_NAMES.index(r[3]) for r in rows], dtype=np.int64),
            accuracy=np.array([r[4] for r in rows], dtype=np.float64),
            support=np.array([r[5] for r in rows], dtype=np.int64),
        )
        return per_class_figure(pc)

    # ----- confused pairs (computed by the metric) -------------------------------------------------
    def _report_confusion(self, trainer, pl_module, prefix: str) -> None:
        if prefix not in self._confused or not trainer.is_global_zero:
            return
        epoch, pairs = self._confused[prefix]
        names = self._class_names(trainer, int(pl_module.num_classes))
        columns = ["true_index", "true_name", "pred_index", "pred_name", "count", "rate"]
        data = [[t, names[t], p, names[p], n, r] for t, p, n, r in pairs]
        for lg in trainer.loggers:
            _sink(lg, self.per_class_csv).confused(prefix, epoch, columns, data, int(trainer.global_step))

    # ----- method state --------------------------------------------------------------------------
    def _report_state(self, trainer, pl_module, state: Mapping[str, StateRecord]) -> None:
        step, epoch = int(trainer.global_step), int(trainer.current_epoch)
        counts = pl_module.class_counts.long().cpu().numpy()
        num_classes = int(pl_module.num_classes)
        summary = StateSummary()
        for key, record in state.items():
            if not isinstance(record, StateRecord):
                raise TypeError(
                    f"report_state()['{key}'] is a {type(record).__name__}; return a ScalarState, PerLayerState, "
                    "PerClassState or PerSampleState record (ltcl_lightning.callbacks.report) for every entry."
                )
            record.add_to(summary, key, num_classes)
        if counts.sum() > 0:
            for key, vals in summary.per_class.items():
                summary.scalars[f"state/{key}_corr_log_count"] = _corr_with_log_count(vals, counts)
                for gname, mean in group_means(vals, pl_module.class_group, valid=np.isfinite(vals)).items():
                    summary.scalars[f"state/{key}_{gname}"] = mean
        summary.scalars = {k: v for k, v in summary.scalars.items() if not math.isnan(v)}
        sinks = [_sink(lg, self.per_class_csv) for lg in trainer.loggers]
        figs = {}
        if summary.per_class and any(s.draws for s in sinks):
            figs = {k: _state_figure(v, counts, k, epoch) for k, v in summary.per_class.items()}
        for sink in sinks:
            sink.state(summary, counts, figs, epoch, step)

    # ----- where files go ------------------------------------------------------------------------
    @staticmethod
    def run_dir(trainer) -> Path:
        """The folder for per-class files: the CSV logger's, else TensorBoard's, else the W&B run's
        files folder (uploaded with the run), else ``trainer.log_dir`` / ``default_root_dir``."""
        loggers: list[Logger] = list(trainer.loggers)
        for cls in (CSVLogger, TensorBoardLogger):
            for lg in loggers:
                if isinstance(lg, cls):
                    return Path(lg.log_dir)
        for lg in loggers:
            if isinstance(lg, WandbLogger):
                return Path(lg.experiment.dir)
        return Path(trainer.log_dir or trainer.default_root_dir)


def _as_float(v, name: str) -> float:
    t = torch.as_tensor(v.detach() if torch.is_tensor(v) else v)
    if t.numel() != 1:
        raise ValueError(f"report_state()['{name}'] must be a scalar, got shape {tuple(t.shape)}")
    return float(t)


def _state_rows(vals: np.ndarray, counts: np.ndarray) -> list[list]:
    return [[i, int(counts[i]), float(vals[i])] for i in range(len(vals))]


def _write_csv(path: Path, header: list[str], rows: list[list], mode: str) -> None:
    new = mode == "w" or not path.exists()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, mode, newline="") as f:
        w = csv.writer(f)
        if new:
            w.writerow(header)
        w.writerows(rows)


def _fig_to_array(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _state_figure(values: np.ndarray, counts: np.ndarray, key: str, epoch: int):
    """A per-class state value (kappa, mean sample weight) against training count (log x)."""
    from ltcl_lightning.report import _figure

    fig, axes = _figure(5.5, 4.0)
    ax = axes[0, 0]
    ok = np.isfinite(values) & (counts > 0)
    ax.scatter(counts[ok], values[ok], s=8, alpha=0.7)
    ax.set_xscale("log")
    ax.set_xlabel("training images of the class (log)")
    ax.set_ylabel(key)
    ax.set_title(
        f"{key} against class frequency (epoch {epoch}); corr with log count {_corr_with_log_count(values, counts):+.2f}", fontsize=9
    )
    return fig
