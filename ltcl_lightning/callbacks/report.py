"""``LongTailReport``: per-class results and method state, sent to whichever loggers the Trainer has.

After every validation / test evaluation (never Lightning's sanity check) it reads what the
method's evaluation already computed, ``pl_module.last_eval[prefix]`` (per-class accuracy,
support, the group numbers, the epoch; the base logs the overall / Many / Medium / Few / spread
scalars itself, so they are not logged twice), and logs

* one per-class table (class index, class name, training count, group, accuracy, support),
* the per-class accuracy figure with classes sorted by training count,
* at the end of training and of each test, the most confused class pairs;

and once per training epoch the method's :meth:`~ltcl_lightning.methods.base.LongTailMethod.report_state`
(SDCLR's mask densities, BoostedCL's sample weights against class frequency, ProCo's kappa),
read in ``on_train_epoch_end`` before the callbacks a method adds itself (``configure_callbacks``
puts them after the Trainer's): the state the epoch trained with (this epoch's masks, the
weights computed at the end of the previous epoch), and ProCo's kappa as of the epoch's end.

Per logger: ``WandbLogger`` gets ``wandb.Table`` s, a bar chart and the figure as an image;
``TensorBoardLogger`` the figures as images, histograms and the confused pairs as text;
``CSVLogger`` CSV files next to its ``metrics.csv``. Whatever the loggers, ``per_class_<split>.csv``
is written to the run folder (the CSV logger's, else TensorBoard's, else the W&B run's files
folder, else ``trainer.log_dir``) so that ``ltcl report RUN_DIR`` can draw the figures later.

Cost: one table and one figure per evaluation (never one scalar per class), the confused pairs
from a sort of the (deduplicated) predictions, never a dense C x C matrix (8,142 classes would
be 0.5 GB).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger

from ltcl_lightning.longtail import GROUP_NAMES, group_means
from ltcl_lightning.utils import dist


def most_confused_pairs(preds: torch.Tensor, target: torch.Tensor, num_classes: int, k: int) -> list[tuple[int, int, int, float]]:
    """The ``k`` largest off-diagonal confusion counts as ``(true, predicted, count, rate)``,
    rate = count / number of evaluation images of the true class. Ordered by count, then rate,
    then (true, predicted). Sparse: O(N log N) for N predictions, no C x C matrix."""
    preds = preds.long().flatten().cpu()
    target = target.long().flatten().cpu()
    wrong = preds != target
    if k <= 0 or not wrong.any():
        return []
    keys = target[wrong] * num_classes + preds[wrong]
    uniq, counts = torch.unique(keys, return_counts=True)
    support = torch.bincount(target, minlength=num_classes)
    true, pred = uniq // num_classes, uniq % num_classes
    rate = counts.double() / support[true].double()
    order = sorted(range(len(uniq)), key=lambda i: (-int(counts[i]), -float(rate[i]), int(true[i]), int(pred[i])))[:k]
    return [(int(true[i]), int(pred[i]), int(counts[i]), float(rate[i])) for i in order]


def _per_class_from_state(values: torch.Tensor, target: torch.Tensor, num_classes: int) -> np.ndarray:
    """Mean of per-sample ``values`` within each class (NaN for a class with no sample)."""
    values = values.detach().double().flatten().cpu()
    target = target.detach().long().flatten().cpu()
    if values.shape != target.shape:
        raise ValueError(
            f"report_state(): 'sample_weight' has {values.numel()} entries but 'sample_target' has "
            f"{target.numel()}; they must describe the same training samples."
        )
    s = torch.bincount(target, weights=values, minlength=num_classes)
    n = torch.bincount(target, minlength=num_classes).double()
    return torch.where(n > 0, s / n.clamp_min(1), torch.full_like(s, float("nan"))).numpy()


def _corr_with_log_count(values: np.ndarray, counts: np.ndarray) -> float:
    """Pearson correlation of a per-class quantity with log training count (negative: the tail gets more)."""
    ok = np.isfinite(values) & (counts > 0)
    if ok.sum() < 2:
        return float("nan")
    x, y = np.log(counts[ok].astype(np.float64)), values[ok].astype(np.float64)
    if x.std() == 0 or y.std() == 0:
        return float("nan")
    return float(np.corrcoef(x, y)[0, 1])


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
        self.top_confused = top_confused
        self.per_class_csv = per_class_csv
        self.log_figures = log_figures
        self.log_state = log_state
        self._confused: dict[str, tuple[int, list]] = {}

    # ----- hooks -------------------------------------------------------------------------------
    # Callback ``on_*_epoch_end`` hooks run before the LightningModule's, which computes and resets
    # the metric: this is the one moment the deduplicated predictions are still there.
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._collect_confusion(pl_module, getattr(pl_module, "val_metric", None), "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._collect_confusion(pl_module, getattr(pl_module, "test_metric", None), "test")

    # ``on_*_end`` run after the module's epoch-end hook has filled ``last_eval``.
    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
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
        counts = pl_module.class_counts.long().cpu() if hasattr(pl_module, "class_counts") else torch.zeros(c, dtype=torch.long)
        if counts.numel() != c:
            raise ValueError(f"last_eval['{prefix}'] has {c} classes but the module's class_counts has {counts.numel()}")
        groups = pl_module.class_group.cpu()
        names = self._class_names(trainer, c)
        return [
            [i, names[i], int(counts[i]), GROUP_NAMES[int(groups[i])], float(acc[i]), int(support[i])]
            for i in range(c)
        ]

    def _report_eval(self, trainer, pl_module, prefix: str) -> None:
        ev = getattr(pl_module, "last_eval", {})
        if prefix not in ev or not trainer.is_global_zero:
            return
        rows = self.per_class_rows(trainer, pl_module, prefix)
        epoch, step = int(ev[prefix].get("epoch", trainer.current_epoch)), int(trainer.global_step)
        if self.per_class_csv:
            from ltcl_lightning.report import write_per_class_rows

            write_per_class_rows(self.run_dir(trainer) / f"per_class_{prefix}.csv", [[epoch, step, *r] for r in rows])
        fig = None
        if self.log_figures and any(isinstance(lg, (WandbLogger, TensorBoardLogger)) for lg in trainer.loggers):
            fig = self._figure(rows, epoch, f"{type(pl_module).__name__} {prefix}")
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                self._wandb_per_class(lg, rows, prefix, step, fig)
            elif isinstance(lg, TensorBoardLogger) and fig is not None:
                lg.experiment.add_figure(f"{prefix}/per_class_accuracy", fig, global_step=step, close=False)
            elif isinstance(lg, CSVLogger) and not self.per_class_csv:
                from ltcl_lightning.report import write_per_class_rows

                write_per_class_rows(Path(lg.log_dir) / f"per_class_{prefix}.csv", [[epoch, step, *r] for r in rows])

    @staticmethod
    def _figure(rows: list[list], epoch: int, name: str):
        from ltcl_lightning.report import PerClass, per_class_figure

        pc = PerClass(
            name=name, epoch=epoch, class_names=[r[1] for r in rows],
            train_count=np.array([r[2] for r in rows], dtype=np.int64),
            group=np.array([GROUP_NAMES.index(r[3]) for r in rows], dtype=np.int64),
            accuracy=np.array([r[4] for r in rows], dtype=np.float64),
            support=np.array([r[5] for r in rows], dtype=np.int64),
        )
        return per_class_figure(pc)

    @staticmethod
    def _wandb_per_class(lg: WandbLogger, rows: list[list], prefix: str, step: int, fig) -> None:
        import wandb

        # frequency rank, zero-padded into the bar label: W&B orders bars by label, so the chart
        # reads head -> tail like the papers' figures
        order = sorted(range(len(rows)), key=lambda i: (-rows[i][2], i))
        width = len(str(len(rows)))
        rank = {i: r for r, i in enumerate(order)}
        columns = ["class_index", "class_name", "train_count", "group", "accuracy", "support", "freq_rank", "label"]
        data = [[*r, rank[r[0]], f"{rank[r[0]]:0{width}d} {r[1]}"] for r in rows]
        table = wandb.Table(columns=columns, data=data)
        payload: dict[str, Any] = {
            f"{prefix}/per_class": table,
            f"{prefix}/per_class_bar": wandb.plot.bar(table, "label", "accuracy", title=f"{prefix} per-class accuracy (head → tail)"),
        }
        if fig is not None:
            payload[f"{prefix}/per_class_figure"] = wandb.Image(_fig_to_array(fig))
        lg.log_metrics(payload, step=step)

    # ----- confused pairs ------------------------------------------------------------------------
    def _collect_confusion(self, pl_module, metric, prefix: str) -> None:
        if self.top_confused == 0 or metric is None or not hasattr(metric, "predictions"):
            return
        # decide on the global count: a local early return before the collective below could
        # leave the other ranks waiting in it
        local = len(metric.index) if isinstance(getattr(metric, "index", None), list) else 1
        if int(dist.all_reduce_sum(torch.tensor([local], device=pl_module.device))) == 0:
            return
        # the metric's states are per-rank until synced; sync_context gathers them (on every rank,
        # a collective) and restores the local state afterwards for the module's own compute()
        with metric.sync_context():
            preds, target = metric.predictions()
        pairs = most_confused_pairs(preds, target, metric.num_classes, self.top_confused)
        self._confused[prefix] = (int(pl_module.current_epoch), pairs)

    def _report_confusion(self, trainer, pl_module, prefix: str) -> None:
        if prefix not in self._confused or not trainer.is_global_zero:
            return
        epoch, pairs = self._confused[prefix]
        c = int(pl_module.num_classes) if hasattr(pl_module, "num_classes") else 1 + max(max(p[0], p[1]) for p in pairs)
        names = self._class_names(trainer, c)
        columns = ["true_index", "true_name", "pred_index", "pred_name", "count", "rate"]
        data = [[t, names[t], p, names[p], n, r] for t, p, n, r in pairs]
        step = int(trainer.global_step)
        for lg in trainer.loggers:
            if isinstance(lg, WandbLogger):
                lg.log_table(f"{prefix}/confused_pairs", columns=columns, data=data, step=step)
            elif isinstance(lg, TensorBoardLogger):
                md = "| true | predicted | count | rate |\n|---|---|---|---|\n" + "\n".join(
                    f"| {d[1]} ({d[0]}) | {d[3]} ({d[2]}) | {d[4]} | {d[5]:.3f} |" for d in data)
                lg.experiment.add_text(f"{prefix}/confused_pairs", f"epoch {epoch}\n\n" + md, global_step=step)
            elif isinstance(lg, CSVLogger):
                path = Path(lg.log_dir) / f"confused_pairs_{prefix}.csv"
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "w", newline="") as f:
                    w = csv.writer(f)
                    w.writerow(["epoch", *columns])
                    w.writerows([[epoch, *d] for d in data])

    # ----- method state --------------------------------------------------------------------------
    def _report_state(self, trainer, pl_module, state: dict[str, Any]) -> None:
        step, epoch = int(trainer.global_step), int(trainer.current_epoch)
        counts = pl_module.class_counts.long().cpu().numpy() if hasattr(pl_module, "class_counts") else None
        num_classes = int(getattr(pl_module, "num_classes", 0))
        scalars: dict[str, float] = {}
        per_class: dict[str, np.ndarray] = {}
        histograms: dict[str, np.ndarray] = {}
        for key, value in state.items():
            if key == "sample_target":
                continue
            if key == "sample_weight":
                if "sample_target" not in state:
                    raise ValueError("report_state() returned 'sample_weight' without 'sample_target' (the label of each sample)")
                w = torch.as_tensor(value).detach().double().flatten().cpu()
                histograms["sample_weight"] = w.numpy()
                per_class["sample_weight_class_mean"] = _per_class_from_state(w, torch.as_tensor(state["sample_target"]), num_classes)
                scalars["state/sample_weight_mean"] = float(w.mean())
                scalars["state/sample_weight_std"] = float(w.std(unbiased=False))
                continue
            if isinstance(value, dict):
                for k, v in value.items():
                    scalars[f"state/{key}/{k}"] = _as_float(v, f"{key}.{k}")
                continue
            t = torch.as_tensor(value) if not torch.is_tensor(value) else value.detach()
            if t.ndim == 0:
                scalars[f"state/{key}"] = float(t)
            elif t.ndim == 1 and t.numel() == num_classes:
                per_class[key] = t.double().cpu().numpy()
                histograms[key] = per_class[key]
            else:
                raise ValueError(
                    f"report_state()['{key}'] has shape {tuple(t.shape)}; expected a scalar, a dict of scalars, a "
                    f"({num_classes},) per-class tensor, or 'sample_weight' + 'sample_target' (see LongTailMethod.report_state)."
                )
        if counts is not None and counts.sum() > 0:
            for key, vals in per_class.items():
                scalars[f"state/{key}_corr_log_count"] = _corr_with_log_count(vals, counts)
                for gname, mean in group_means(vals, pl_module.class_group, valid=np.isfinite(vals)).items():
                    scalars[f"state/{key}_{gname}"] = mean
        scalars = {k: v for k, v in scalars.items() if not math.isnan(v)}
        figs = {}
        if per_class and counts is not None and any(isinstance(lg, (WandbLogger, TensorBoardLogger)) for lg in trainer.loggers):
            figs = {k: _state_figure(v, counts, k, epoch) for k, v in per_class.items()}
        for lg in trainer.loggers:
            if scalars:
                lg.log_metrics(scalars, step=step)
            if isinstance(lg, WandbLogger):
                import wandb

                payload: dict[str, Any] = {}
                for key, vals in per_class.items():
                    table = wandb.Table(columns=["class_index", "train_count", key],
                                        data=[[i, int(counts[i]) if counts is not None else 0, float(vals[i])] for i in range(len(vals))])
                    payload[f"state/{key}"] = table
                    payload[f"state/{key}_vs_count"] = wandb.plot.scatter(table, "train_count", key, title=f"{key} against training count")
                for key, vals in histograms.items():
                    payload[f"state/{key}_hist"] = wandb.Histogram(vals[np.isfinite(vals)])
                if payload:
                    lg.log_metrics(payload, step=step)
            elif isinstance(lg, TensorBoardLogger):
                for key, vals in histograms.items():
                    lg.experiment.add_histogram(f"state/{key}", vals[np.isfinite(vals)], global_step=step)
                for key, fig in figs.items():
                    lg.experiment.add_figure(f"state/{key}_vs_count", fig, global_step=step, close=False)
            elif isinstance(lg, CSVLogger):
                for key, vals in per_class.items():
                    path = Path(lg.log_dir) / f"state_{key}.csv"
                    new = not path.exists()
                    path.parent.mkdir(parents=True, exist_ok=True)
                    with open(path, "a", newline="") as f:
                        w = csv.writer(f)
                        if new:
                            w.writerow(["epoch", "step", "class_index", "train_count", key])
                        w.writerows([[epoch, step, i, int(counts[i]) if counts is not None else 0, float(vals[i])] for i in range(len(vals))])

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
    ax.set_title(f"{key} against class frequency (epoch {epoch}); corr with log count "
                 f"{_corr_with_log_count(values, counts):+.2f}", fontsize=9)
    return fig
