"""Run metadata for every logger (W&B, TensorBoard, CSV): the full effective config, a run name,
group and tags, the best epoch's long-tail numbers in the summary, ``config.yaml`` in the run's
own folder.

:class:`RunConfig` replaces LightningCLI's ``SaveConfigCallback`` in ``ltcl``:

- ``config.yaml`` goes into the run's folder (TensorBoard/CSV: the ``version_N`` folder; W&B:
  ``<save_dir>/<project>/<run id>``, the folder that also holds the run's checkpoints), so that
  the next run never overwrites it (Lightning writes it to ``trainer.log_dir``, which for W&B is
  the shared ``save_dir``);
- every logger gets the whole effective config (``seed_everything``, ``trainer`` settings, the
  method's class and arguments with its optimiser and schedule, the data) as hyper-parameters,
  plus ``method`` and ``dataset`` keys;
- at the end of ``fit`` the best validation epoch's ``epoch``, ``acc``, ``many``, ``medium``,
  ``few``, ``group_std`` go into each logger as ``val_best/<key>`` (W&B: the run summary;
  TensorBoard: the HParams tab's metric columns, declared with the config at the start of ``fit``,
  so runs compare on them there; CSV: a metrics row), and with the
  last epoch's into ``summary.json`` in the run folder (``ltcl test`` adds ``test``), with
  ``selected_on``: ``validation`` (a held-out split) or ``test`` (the validation stage evaluates
  the test images: the paper-style "best on test", labelled so by ``ltcl report``).

:func:`wandb_run_defaults` fills a ``WandbLogger``'s ``name`` / ``group`` / ``tags`` that the
config leaves empty: name ``<Method>-<dataset>-seed<seed>``, group = the method, tags = the
dataset and its imbalance (``IF100``, or the split file's name).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import yaml
from jsonargparse import Namespace
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger

from ltcl_lightning.report import SUMMARY_FILE

BEST_KEYS = ("epoch", "acc", "many", "medium", "few", "group_std")
#: what differs between the runs of one experiment (seed, resumed checkpoint, output places, the
#: config files' own paths): left out of its identity (:func:`experiment_id`)
RUN_KEYS = ("seed_everything", "ckpt_path", "config", "method", "dataset")
RUN_TRAINER_KEYS = ("logger", "default_root_dir")


def experiment_id(cfg: dict[str, Any]) -> str:
    """8 hex digits of a hash of the effective config without :data:`RUN_KEYS`: runs of one
    experiment under different seeds share it, any other difference changes it."""
    rest = {k: v for k, v in cfg.items() if k not in RUN_KEYS}
    rest["trainer"] = {k: v for k, v in (cfg.get("trainer") or {}).items() if k not in RUN_TRAINER_KEYS}
    return hashlib.sha1(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _short(class_path: str | None) -> str:
    return (class_path or "none").rsplit(".", 1)[-1]


def dataset_name(data_class_path: str | None) -> str:
    """``ltcl_lightning.data.cifar.CIFAR100LTDataModule`` -> ``CIFAR100LT``."""
    return _short(data_class_path).removesuffix("DataModule")


def imbalance_tag(data_init: dict[str, Any]) -> str | None:
    """``IF100`` for an imbalance factor, the split file's name for a published subset."""
    for key in ("split_file", "train_list", "train_json"):
        if data_init.get(key):
            return os.path.splitext(os.path.basename(str(data_init[key])))[0]
    if data_init.get("imbalance_factor") is not None:
        return f"IF{float(data_init['imbalance_factor']):g}"
    return None


def wandb_run_defaults(config) -> None:
    """Fill an empty ``name`` / ``group`` / ``tags`` of a ``WandbLogger`` in a parsed LightningCLI
    config (a jsonargparse Namespace of one sub-command), before the logger is built."""
    loggers = config.trainer.logger
    loggers = loggers if isinstance(loggers, list) else [loggers]
    model = config.model.class_path if config.get("model") else None
    data = config.data.class_path if config.get("data") else None
    data_init = dict(vars(config.data.init_args)) if data and config.data.get("init_args") else {}
    for logger in loggers:
        if not hasattr(logger, "class_path") or _short(logger.class_path) != "WandbLogger":
            continue
        init = logger.init_args
        if init.get("group") is None:
            init.group = _short(model)
        if init.get("tags") is None:
            init.tags = [t for t in (dataset_name(data), imbalance_tag(data_init)) if t]
        if init.get("name") is None:
            init.name = f"{_short(model)}-{dataset_name(data)}-seed{config.get('seed_everything')}"


def _numbers(res: dict[str, Any]) -> dict[str, float]:
    return {k: (int(res[k]) if k == "epoch" else float(res[k])) for k in BEST_KEYS if k in res}


def selection(dm) -> str:
    """What the best epoch was selected on: ``validation`` (a held-out split), ``test`` (the
    validation stage evaluates the test images: the paper-style, optimistic "best on test"), or
    ``unknown`` (a datamodule that does not say: ``LongTailDataModule.validates_on_test``)."""
    on_test = getattr(dm, "validates_on_test", None)
    return "unknown" if on_test is None else "test" if on_test else "validation"


def label_best_checkpoints(trainer) -> None:
    """Name the best-by-``val/...`` checkpoint after what the validation stage evaluates, whatever
    the recipe's ``filename`` says: ``best_on_test-...`` when it is the test set (a recipe's
    ``best-{epoch}`` with ``--data.init_args.val_per_class=0``), ``best-...`` when it is a held-out
    split (a ``best_on_test-{epoch}`` recipe given a validation split)."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    on = selection(trainer.datamodule)
    for cb in trainer.callbacks:
        if not isinstance(cb, ModelCheckpoint) or not str(cb.monitor or "").startswith("val/") or not isinstance(cb.filename, str):
            continue
        if on == "test" and cb.filename.startswith("best") and not cb.filename.startswith("best_on_test"):
            cb.filename = "best_on_test" + cb.filename[len("best") :]
        elif on == "validation" and cb.filename.startswith("best_on_test"):
            cb.filename = "best" + cb.filename[len("best_on_test") :]


def log_test_into_training_run(config) -> None:
    """``ltcl test --ckpt_path <run>/checkpoints/x.ckpt`` with Lightning's default logger logs
    into that training run's folder (``lightning_logs/version_N``) instead of a new version, so
    that its ``summary.json`` holds the test numbers next to the validation ones."""
    ckpt = config.get("ckpt_path")
    if not ckpt or not os.path.isfile(str(ckpt)) or config.trainer.get("logger") not in (None, True):
        return
    folder = os.path.dirname(os.path.abspath(str(ckpt)))
    if os.path.basename(folder) != "checkpoints":
        return
    run = os.path.dirname(folder)
    from lightning.fabric.loggers.tensorboard import _TENSORBOARD_AVAILABLE, _TENSORBOARDX_AVAILABLE

    # Lightning's own default logger (its logger connector's condition)
    tb = _TENSORBOARD_AVAILABLE or _TENSORBOARDX_AVAILABLE
    logger_class = "lightning.pytorch.loggers.TensorBoardLogger" if tb else "lightning.pytorch.loggers.CSVLogger"
    config.trainer.logger = Namespace(
        class_path=logger_class,
        init_args=Namespace(
            save_dir=os.path.dirname(os.path.dirname(run)), name=os.path.basename(os.path.dirname(run)), version=os.path.basename(run)
        ),
    )


def checkpoint_label(ckpt_path: str | None) -> str:
    """``best`` / ``last`` / the file's stem: which checkpoint a test evaluated."""
    if not ckpt_path:
        return "current"
    stem = os.path.splitext(os.path.basename(str(ckpt_path)))[0]
    return "best" if stem.startswith(("best", "best_on_test")) else "last" if stem.startswith("last") else stem


def run_dir(trainer) -> str:
    """The run's own folder: the logger's version folder (W&B: ``<save_dir>/<project>/<id>``)."""
    logger = trainer.logger
    if isinstance(logger, WandbLogger):
        return os.path.join(logger.save_dir or trainer.default_root_dir, str(logger.name), str(logger.version))
    return trainer.log_dir or trainer.default_root_dir


class RunConfig(SaveConfigCallback):
    """LightningCLI's config callback, writing into the run's own folder and into every logger
    (see the module docstring)."""

    def __init__(
        self,
        parser,
        config,
        config_filename: str = "config.yaml",
        overwrite: bool = False,
        multifile: bool = False,
        save_to_log_dir: bool = True,
    ):
        # the standard save to trainer.log_dir is replaced by save_config (the run's own folder)
        super().__init__(parser, config, config_filename, overwrite, multifile, save_to_log_dir=False)
        self._params: dict[str, Any] = {}
        self._run_dir = ""  # the run folder, known at setup

    def setup(self, trainer, pl_module, stage: str) -> None:
        # on every rank: trainer.log_dir broadcasts, and save_config / the end hooks run on rank 0 only
        if not self._run_dir:
            self._run_dir = run_dir(trainer)
        if stage == "fit":
            label_best_checkpoints(trainer)
        super().setup(trainer, pl_module, stage)

    def effective_config(self) -> dict[str, Any]:
        cfg = yaml.safe_load(self.parser.dump(self.config, skip_none=False)) or {}
        cfg["method"] = _short((cfg.get("model") or {}).get("class_path"))
        cfg["dataset"] = dataset_name((cfg.get("data") or {}).get("class_path"))
        return cfg

    def save_config(self, trainer, pl_module, stage: str) -> None:  # rank zero only
        folder = self._run_dir
        os.makedirs(folder, exist_ok=True)
        # a test logged into the training run's folder keeps the training config.yaml
        stage = str(getattr(stage, "value", stage))  # Lightning passes its TrainerFn enum
        path = os.path.join(folder, self.config_filename if stage == "fit" else f"config_{stage}.yaml")
        if os.path.exists(path) and not self.overwrite:
            raise RuntimeError(f"{path} exists: a run folder holds one run's config (pass a new logger version)")
        self.parser.save(self.config, path, skip_none=False, overwrite=True, multifile=self.multifile)
        self._params = self.effective_config()
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and stage == "fit":
                # TensorBoard's HParams tab takes its metric columns from a run's first hparams
                # record: declare the best-epoch numbers now (NaN until on_fit_end logs them), and
                # keep Lightning's own later call (the model's hparams, no metrics) from writing a
                # second record whose only column is its placeholder hp_metric = -1
                logger.log_hyperparams(self._params, metrics={f"val_best/{k}": float("nan") for k in BEST_KEYS})
                logger._default_hp_metric = False
            else:
                logger.log_hyperparams(self._params)

    def write_summary(self, trainer, parts: dict[str, Any]) -> None:
        """Merge ``parts`` (``{"val": ...}``, ``{"test": ..., "test_at": ...}``) into the run
        folder's ``summary.json`` (read by ``ltcl report``)."""
        path = os.path.join(self._run_dir, SUMMARY_FILE)
        summary = json.loads(open(path).read()) if os.path.exists(path) else {}
        cfg = self._params or self.effective_config()
        summary.update(
            {
                "method": cfg.get("method"),
                "dataset": cfg.get("dataset"),
                "seed": cfg.get("seed_everything"),
                "selected_on": selection(trainer.datamodule),
            }
        )
        # the experiment is the training run's: a test logged into its folder keeps it
        summary.setdefault("setting", imbalance_tag(((cfg.get("data") or {}).get("init_args")) or {}))
        summary.setdefault("config", experiment_id(cfg))
        if "test_at" in parts:  # one entry per evaluated checkpoint
            parts = {**parts, "test_at": {**summary.get("test_at", {}), **parts["test_at"]}}
        summary.update(parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            json.dump(summary, f, indent=1)

    def on_test_end(self, trainer, pl_module) -> None:
        test = getattr(pl_module, "last_eval", {}).get("test")
        if trainer.is_global_zero and test:
            at = {checkpoint_label(trainer.ckpt_path): {**_numbers(test), "checkpoint": str(trainer.ckpt_path)}}
            self.write_summary(trainer, {"test_at": at, "test": _numbers(test)})

    def on_fit_end(self, trainer, pl_module) -> None:
        best = getattr(pl_module, "best_val", None)
        if not trainer.is_global_zero or not best or best.get("epoch", -1) < 0:
            return
        if selection(trainer.datamodule) == "test":
            print(
                "note: no held-out validation split: the best epoch was selected on the TEST set (the paper-style, "
                "optimistic 'best on test'); give the datamodule a validation split for an honest selection.",
                flush=True,
            )
        last = getattr(pl_module, "last_eval", {}).get("val")
        self.write_summary(trainer, {"val": {"last": _numbers(last) if last else None, "best": _numbers(best)}})
        metrics = {f"val_best/{k}": float(best[k]) for k in BEST_KEYS if k in best}
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                logger.experiment.summary.update(metrics)
            else:  # TensorBoard: the HParams tab shows these columns' last values (declared in save_config)
                logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
