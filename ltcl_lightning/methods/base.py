"""``LongTailMethod``: the thin base every method file builds on.

It owns the shared plumbing: the backbone, the optimiser and per-step schedule, the online
linear probe (self-supervised methods), the long-tail evaluation (overall / Many / Medium / Few
/ spread / per-class, last and best epoch) and the checks that the model and the data agree.
A method implements :meth:`training_loss` (and, if supervised, :meth:`classify`) and declares
how many views it trains on (``num_views``; the base refuses any other number).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.optim import Optimizer

from ltcl_lightning.longtail import GROUP_NAMES, Grouping, class_groups
from ltcl_lightning.metrics import LongTailAccuracy
from ltcl_lightning.modules.backbones import build_backbone
from ltcl_lightning.modules.heads import OnlineLinearProbe
from ltcl_lightning.optim.schedules import LRSchedule, WarmupCosine

OptimizerCallable = Callable[[Iterable], Optimizer]

_BEST_KEYS = ("acc", "mean_class_acc", *GROUP_NAMES, "group_std")
_NO_BEST = {"epoch": -1, **{k: 0.0 for k in _BEST_KEYS}}


def _upgrade(module: LongTailMethod, state_dict: dict, prefix: str, *_) -> None:
    """``load_state_dict`` pre-hook: :meth:`LongTailMethod.upgrade_state` on every load path
    (Lightning's resume and ``load_from_checkpoint``, ``load_pretrained``, a plain call)."""
    module.upgrade_state(state_dict, prefix)


def _regroup(module: LongTailMethod, *_) -> None:
    """Recompute the class groups from the class counts (also a ``load_state_dict`` post-hook)."""
    module.class_group.copy_(class_groups(module.class_counts, module.grouping))


def default_sgd(params: Iterable) -> Optimizer:
    """SGD, lr 0.1, momentum 0.9, weight decay 5e-4 (override with ``optimizer=``)."""
    return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)


class LongTailMethod(pl.LightningModule):
    #: self-supervised methods evaluate through an online linear probe on detached features
    uses_online_probe: bool = True
    #: training views per image the method uses (``None``: it trains on the first view only)
    num_views: int | None = None
    class_counts: torch.Tensor  # buffers, registered in __init__
    class_group: torch.Tensor

    def __init__(
        self,
        num_classes: int,
        backbone: str | nn.Module = "resnet18_cifar",
        class_counts: list[int] | None = None,
        grouping: Grouping = "threshold",
        optimizer: OptimizerCallable = default_sgd,
        lr_schedule: LRSchedule | None = None,
        probe_lr: float = 0.1,
    ):
        """
        Args:
            num_classes: number of classes (linked from the datamodule by the CLI).
            backbone: backbone name (see ``modules.backbones.BACKBONES``) or a module with ``out_dim``.
            class_counts: training images per class; taken from the datamodule at ``setup`` when
                not given (the CLI links it). Needed for logit adjustment and the groups.
            grouping: ``threshold`` (Many > 100, Few < 20) or ``thirds`` (SDCLR/BCL on CIFAR).
            optimizer: a callable taking the parameter groups (``class_path: torch.optim.SGD``).
            lr_schedule: stepped every iteration; default ``WarmupCosine()`` (10-epoch warm-up,
                cosine to 1e-6, as every recipe).
            probe_lr: learning rate of the online linear probe (no weight decay).
        """
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        # a backbone module is saved with the weights, not as a hyper-parameter
        self.save_hyperparameters(ignore=["optimizer", "lr_schedule", *(["backbone"] if isinstance(backbone, nn.Module) else [])])
        self.num_classes = num_classes
        self.grouping = grouping
        self.optimizer_fn = optimizer
        self.lr_schedule = lr_schedule if lr_schedule is not None else WarmupCosine()
        self.backbone = self.build_backbone(backbone)
        self.feat_dim: int = self.backbone.out_dim  # type: ignore[assignment]  # an int: build_backbone checks it
        counts = self._check_counts(class_counts) if class_counts is not None else torch.zeros(num_classes, dtype=torch.long)
        self.register_buffer("class_counts", counts)
        # Many / Medium / Few id of every class, derived from class_counts whenever they change
        self.register_buffer("class_group", class_groups(counts, grouping), persistent=False)
        self.register_load_state_dict_post_hook(_regroup)
        self.register_load_state_dict_pre_hook(_upgrade)
        # the best validation epoch so far (published ProCo / BalancedCL numbers are best-epoch),
        # kept in checkpoints so that it survives a resume; epoch -1 = none yet
        self.best_val: dict[str, float] = dict(_NO_BEST)
        self.probe = OnlineLinearProbe(self.feat_dim, num_classes, lr=probe_lr) if self.uses_online_probe else None
        self.last_eval: dict[str, dict[str, Any]] = {}
        self._eval_finite: dict[str, torch.Tensor] = {}  # per stage: were all evaluation logits finite
        #: 0/1 per sample of the current training batch, 0 for the distributed sampler's padded
        #: repeats (they train: every rank needs a batch; per-class state that one process would
        #: not see leaves them out: ProCo's vMF counts, TSC's centroids); None: no padding
        self.padding_weight: torch.Tensor | None = None

    # ----- hooks for method files ----------------------------------------------------------
    def upgrade_state(self, state: dict[str, Any], prefix: str) -> None:
        """Rename, in place, the entries of a state dict written by an older version (keys start
        with ``prefix``) to this version's names; methods that moved state extend it."""

    def build_backbone(self, name: str | nn.Module) -> nn.Module:
        return build_backbone(name)

    def training_loss(self, index: torch.Tensor, views: list[torch.Tensor], target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return ``{'loss': ..., 'features': backbone features of views[0] (for the probe), ...}``.

        Other scalar entries are logged as ``train/<name>``; other tensors (per-sample values
        such as ``per_sample_loss``, shape (B,)) are detached and passed on in the step's
        outputs (``outputs[name]`` in ``Callback.on_train_batch_end``, next to ``index`` and
        ``target``)."""
        raise NotImplementedError

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Evaluation logits. Self-supervised methods: the online probe on backbone features."""
        if self.probe is None:
            raise NotImplementedError("supervised methods implement classify()")
        return self.probe(self.backbone(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    # ----- data agreement ----------------------------------------------------------------------
    def _check_counts(self, counts) -> torch.Tensor:
        counts = torch.as_tensor(list(counts), dtype=torch.long)
        if counts.numel() != self.num_classes:
            raise ValueError(
                f"class_counts has {counts.numel()} entries but num_classes is {self.num_classes}: "
                "the model and the data disagree on the number of classes."
            )
        return counts

    @property
    def class_prior(self) -> torch.Tensor:
        return self.class_counts.double() / self.class_counts.sum().clamp_min(1)

    def _check_views(self, n: int, where: str) -> None:
        if self.num_views is not None and n != self.num_views:
            raise ValueError(
                f"{type(self).__name__} trains on {self.num_views} views per image, but {where}; set the "
                f"datamodule's train_views to {self.num_views} entries (see the method's recipe in experiments/)."
            )

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        views = getattr(dm, "train_views", None)
        if stage == "fit" and views is not None:
            self._check_views(len(views), f"the datamodule has train_views={list(views)}")
        if dm is not None and hasattr(dm, "num_classes"):
            if dm.num_classes != self.num_classes:
                raise ValueError(
                    f"num_classes={self.num_classes} but the datamodule {type(dm).__name__} has "
                    f"{dm.num_classes} classes. Set model num_classes to {dm.num_classes} "
                    "(the CLI links it from the data)."
                )
            if hasattr(dm, "class_counts") and stage == "fit":
                data_counts = self._check_counts(dm.class_counts).to(self.class_counts.device)
                if int(self.class_counts.sum()) == 0:
                    self.class_counts.copy_(data_counts)
                    _regroup(self)
                elif not torch.equal(self.class_counts, data_counts):
                    raise ValueError(
                        "class_counts given to the model differ from the datamodule's training counts "
                        f"(model total {int(self.class_counts.sum())}, data total {int(data_counts.sum())}). "
                        "Leave class_counts unset to take them from the data."
                    )
        if int(self.class_counts.sum()) == 0 and stage != "fit":
            raise ValueError(
                "class_counts are unknown: pass class_counts= (or a datamodule) so that Many / Medium / Few groups can be formed."
            )
        self.build_metrics()

    def build_metrics(self) -> None:
        self.val_metric = LongTailAccuracy(self.num_classes, self.class_group).to(self.device)
        self.test_metric = LongTailAccuracy(self.num_classes, self.class_group).to(self.device)

    # ----- training ----------------------------------------------------------------------------
    def training_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        index, views, target = batch
        self._check_views(len(views), f"a training batch has {len(views)} views")
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        pad = getattr(dm, "train_padding_weight", None)
        self.padding_weight = pad(batch_idx, len(target), target.device) if pad is not None else None
        out = self.training_loss(index, views, target)
        loss = out["loss"]
        bs = target.shape[0]
        if self.probe is not None:
            probe_loss, probe_acc = self.probe.loss_and_accuracy(out["features"], target)
            loss = loss + probe_loss
            self.log("train/probe_loss", probe_loss, batch_size=bs)
            self.log("train/probe_acc", probe_acc, batch_size=bs)
        step_out: dict[str, torch.Tensor] = {"loss": loss, "index": index, "target": target}
        for k, v in out.items():
            if k == "features" or not torch.is_tensor(v):
                continue
            if v.ndim == 0:
                self.log(f"train/{k}", v.detach(), batch_size=bs)  # not on the progress bar: Lightning reads those with .item() every step
            else:  # per-sample values (e.g. BoostedCL's per_sample_loss) reach callbacks' outputs
                step_out[k] = v.detach()
        return step_out

    def configure_callbacks(self) -> list[pl.Callback]:
        """The run-safety callbacks (``callbacks/safety.py``: stop at the first non-finite loss,
        a resumable checkpoint on SIGTERM) unless the trainer lists one of the same type, so
        ``Trainer.fit`` from Python, ``ltcl`` and a notebook behave alike. A method adding the
        callbacks its state needs extends ``super().configure_callbacks()`` (each class once in
        the MRO: a method combining two, like BoostedSDCLR, gets every callback once)."""
        from ltcl_lightning.callbacks.safety import FiniteLossCheck, PreemptionCheckpoint

        return self.callbacks_unless_listed(FiniteLossCheck(), PreemptionCheckpoint())

    def callbacks_unless_listed(self, *callbacks: pl.Callback) -> list[pl.Callback]:
        """For ``configure_callbacks``: the given callbacks whose type the trainer does not list
        already (a method adds the callbacks its state needs; a user-listed one wins)."""
        listed = tuple(type(c) for c in (self._trainer.callbacks if self._trainer is not None else []))  # type: ignore[attr-defined]
        return [c for c in callbacks if not isinstance(c, listed)]

    def report_state(self) -> dict[str, Any]:
        """Method-specific state shown once per epoch by the report callback, as typed records
        (``callbacks.report``): ``{'mask_density': PerLayerState({layer: float, 'overall': float})}``
        (SDCLR), ``{'sample_weight': PerSampleState(weights (N,), labels (N,))}`` (BoostedCL),
        ``{'kappa': PerClassState((C,) tensor)}`` (ProCo), ``{'queue_filled': ScalarState(int)}``
        (PaCo). Default: nothing."""
        return {}

    # ----- evaluation ----------------------------------------------------------------------------
    def _eval_step(self, batch, metric: LongTailAccuracy, prefix: str) -> None:
        index, views, target = batch
        logits = self.classify(views[0])
        metric.update(index, logits, target)
        finite = torch.isfinite(logits).all()  # stays on the device: read once per epoch
        self._eval_finite[prefix] = finite & self._eval_finite[prefix] if prefix in self._eval_finite else finite
        self.log(f"{prefix}/loss", F.cross_entropy(logits.float(), target), batch_size=target.shape[0], sync_dist=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.val_metric, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._eval_step(batch, self.test_metric, "test")

    def _log_eval(self, metric: LongTailAccuracy, prefix: str) -> dict[str, Any]:
        res = metric.compute()
        metric.reset()
        scalars = {k: res[k] for k in ("acc", "mean_class_acc", *GROUP_NAMES, "group_std")}
        if self.num_classes > 10 and "top5" in res:  # top-5 of 10 classes or fewer says little
            scalars["top5"] = res["top5"]
        if self.probe is None:  # calibration of the supervised methods' own classifier
            scalars.update({k: v for k, v in res.items() if k.startswith("ece")})
        for k, v in scalars.items():
            self.log(f"{prefix}/{k}", float(v))
        res["epoch"] = self.current_epoch
        self.last_eval[prefix] = res
        return res

    def on_validation_epoch_end(self) -> None:
        res = self._log_eval(self.val_metric, "val")
        if self.trainer.sanity_checking:
            self._eval_finite.pop("val", None)
            return
        # a diverged model (inf / NaN logits, weights or batch-norm statistics) is never the best epoch
        finite = self._epoch_is_finite("val")
        if finite and (self.best_val["epoch"] < 0 or res["acc"] > self.best_val["acc"]):
            self.best_val = {"epoch": int(res["epoch"]), **{k: float(res[k]) for k in _BEST_KEYS}}
        if self.best_val["epoch"] >= 0:
            self.last_eval["val_best"] = dict(self.best_val)
        self.log("val/acc_best", self.best_val["acc"])

    def _epoch_is_finite(self, prefix: str) -> bool:
        """The epoch's evaluation logits, every parameter and every floating buffer (batch-norm
        statistics) finite, on every rank (one reduction)."""
        flags = [torch.isfinite(t).all() for t in (*self.parameters(), *self.buffers()) if t.is_floating_point()]
        if prefix in self._eval_finite:
            flags.append(self._eval_finite.pop(prefix))
        local = bool(torch.stack([f.to(self.device) for f in flags]).all()) if flags else True
        return bool(self.trainer.strategy.reduce_boolean_decision(local, all=True))

    def on_fit_start(self) -> None:
        if self.best_val["epoch"] >= 0:  # resumed: the best epoch so far is known without re-evaluating it
            self.last_eval["val_best"] = dict(self.best_val)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["best_val"] = dict(self.best_val)
        # the classes that wrote the checkpoint, also when trained from Python (the CLI records
        # them in the hyper-parameters): ltcl probe / export rebuild the method and its data
        checkpoint["method_class_path"] = f"{type(self).__module__}.{type(self).__qualname__}"
        dm = self._trainer.datamodule if self._trainer is not None else None  # type: ignore[attr-defined]
        if dm is not None:
            checkpoint["datamodule_class_path"] = f"{type(dm).__module__}.{type(dm).__qualname__}"

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("state_dict", {})
        self._check_checkpoint_counts(state.get("class_counts"))
        if "best_val" in state:  # ltcl_lightning 0.1.0 checkpoints: a positional float64 buffer
            old = state.pop("best_val")
            if old.numel() != 1 + len(_BEST_KEYS):
                raise ValueError(
                    f"the checkpoint's best_val buffer has {old.numel()} entries; the ltcl_lightning 0.1.0 layout "
                    f"has {1 + len(_BEST_KEYS)} (epoch, {', '.join(_BEST_KEYS)}): it was not written by this library"
                )
            checkpoint["best_val"] = {"epoch": int(old[0]), **{k: float(v) for k, v in zip(_BEST_KEYS, old[1:])}}
        self.best_val = {**_NO_BEST, **checkpoint.get("best_val", {})}

    def _check_checkpoint_counts(self, saved: torch.Tensor | None) -> None:
        # setup() has taken class_counts from the datamodule; the checkpoint's buffer would
        # replace them: a resume on other data must not keep the old counts silently
        if saved is None or self._trainer is None or int(self.class_counts.sum()) == 0:
            return
        if saved.shape != self.class_counts.shape or not torch.equal(saved.cpu(), self.class_counts.cpu()):
            dm = getattr(self.trainer, "datamodule", None)
            raise ValueError(
                f"the checkpoint was trained on data with {saved.numel()} classes and {int(saved.sum())} training images "
                f"(class_counts head {saved[:3].tolist()}, tail {saved[-3:].tolist()}), but "
                f"{type(dm).__name__ if dm is not None else 'the model'} now has {self.class_counts.numel()} classes and "
                f"{int(self.class_counts.sum())} images (head {self.class_counts[:3].tolist()}, tail "
                f"{self.class_counts[-3:].tolist()}). Resume / evaluate with the data settings of the run (imbalance_factor, "
                "split_file, ...), or start a new run without --ckpt_path."
            )

    def on_test_epoch_end(self) -> None:
        self._eval_finite.pop("test", None)
        self._log_eval(self.test_metric, "test")

    # ----- optimisation -------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """The method's parameters, then the online probe's own group (lr ``probe_lr``, no decay)."""
        params = [p for name, p in self.named_parameters() if p.requires_grad and not name.startswith("probe.")]
        return [{"params": params}, *([self.probe.param_group()] if self.probe is not None else [])]

    def configure_optimizers(self):
        optimizer = self.optimizer_fn(self.parameter_groups())
        trainer = self.trainer
        total = trainer.estimated_stepping_batches  # also sets up the training loader
        if total == float("inf"):
            raise ValueError("the schedule needs a finite run: set trainer.max_epochs or trainer.max_steps")
        if trainer.num_training_batches == float("inf"):
            # estimated_stepping_batches returns max_steps without building the loader when
            # max_epochs is unset; the epoch length is needed for schedules given in epochs
            trainer.fit_loop.setup_data()
        batches = trainer.num_training_batches
        steps_per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches)) if batches != float("inf") else int(total)
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            max_epochs = trainer.max_epochs
        else:  # max_steps only: the schedule (in epochs) spans the epochs those steps cover
            max_epochs = max(1, math.ceil(total / steps_per_epoch))
        scheduler = self.lr_schedule.build(optimizer, steps_per_epoch, max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
