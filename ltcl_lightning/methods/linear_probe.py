"""Linear probe on a frozen pre-trained backbone: the evaluation of self-supervised (SimCLR,
SDCLR, BoostedCL) and two-stage (SupCon) pre-training. Spec: ``data_and_eval.md`` section 3,
``boosted_cl.md`` section e.

``LinearProbe`` loads the backbone of any method checkpoint, freezes it (no gradient, batch
norm in eval mode throughout, so not even running statistics move) and trains
``Linear(feat_dim, C)`` on the datamodule's training set (e.g. CIFAR with
``split_file=trainIdxList.npy`` / ``split{k}_test_100shot.npy`` / ``split{k}_test_50shot.npy``
and ``train_views: [eval]`` for the frozen-feature protocol). Many / Medium / Few come from the
**pre-training** class counts (the checkpoint's ``class_counts`` buffer), thirds by default:
the probe's own training set is balanced and would put every class in one group.

Features are the backbone's pooled output (no projector); SDCLR's backbone forward is its dense
branch with the dense batch norm. The default recipe is BCL's probe (Adam lr 1e-2, weight
decay 5e-6, exponential decay to 1e-6 over the run, batch 1000), but here the features are
recomputed every step; ``python -m ltcl_lightning.probe`` runs the whole published protocol on
pre-computed features in one command.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ltcl_lightning.longtail import Grouping
from ltcl_lightning.methods.base import LongTailMethod, OptimizerCallable
from ltcl_lightning.modules.backbones import build_backbone
from ltcl_lightning.optim.schedules import ExponentialDecay, LRSchedule
from ltcl_lightning.utils.checkpoint import load_checkpoint

_CKPT_ONLY_KEYS = ("_class_path", "_instantiator")


def probe_adam(params) -> torch.optim.Optimizer:
    """BCL's probe optimiser: Adam, lr 1e-2, weight decay 5e-6."""
    return torch.optim.Adam(params, lr=1e-2, weight_decay=5e-6)


def _import(path: str):
    module, _, name = path.rpartition(".")
    if not module:
        raise ValueError(f"method must be a full class path such as ltcl_lightning.methods.sdclr.SDCLR, got {path!r}")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"cannot import the method class {path!r}: {err}") from None


def load_pretrained(checkpoint: str, method: str | None = None) -> tuple[nn.Module, torch.Tensor, int, dict]:
    """Backbone, pre-training class counts, number of classes and hyper-parameters of a checkpoint.

    The method class comes from ``method`` (a class path) or from the ``_class_path`` that
    ``ltcl fit`` stores in the checkpoint; without either, the checkpoint's ``backbone.*``
    weights must load strictly into ``build_backbone(hparams['backbone'])`` (SimCLR, SupCon,
    BoostedCL; SDCLR needs its class). The backbone is returned frozen and in eval mode.
    """
    # empty / truncated / foreign files: an error naming the file (utils.checkpoint)
    ckpt = load_checkpoint(checkpoint, map_location="cpu", weights_only=False)
    hparams = dict(ckpt.get("hyper_parameters", {}))
    state = ckpt["state_dict"]
    class_path = method or hparams.get("_class_path") or ckpt.get("method_class_path")
    if class_path is not None:
        cls = _import(class_path)
        kwargs = {k: v for k, v in hparams.items() if k not in _CKPT_ONLY_KEYS}
        model = cls(**kwargs)
        missing, unexpected = model.load_state_dict(state, strict=False)
        bad = [k for k in missing + unexpected if k.startswith("backbone.") or k == "class_counts"]
        if bad:
            raise ValueError(f"the checkpoint's backbone does not fit {class_path} (first mismatched keys: {bad[:5]})")
        backbone, counts = model.backbone, model.class_counts
    else:
        if "backbone" not in hparams:
            raise ValueError(f"{checkpoint!r} has no 'backbone' hyper-parameter; pass method=<class path of the pre-training method>")
        backbone = build_backbone(hparams["backbone"])
        sub = {k[len("backbone.") :]: v for k, v in state.items() if k.startswith("backbone.")}
        try:
            backbone.load_state_dict(sub, strict=True)
        except RuntimeError as err:
            raise ValueError(
                f"the backbone weights of {checkpoint!r} do not load into build_backbone({hparams['backbone']!r}) "
                f"({str(err).splitlines()[0]}); pass method=<class path>, e.g. ltcl_lightning.methods.sdclr.SDCLR"
            ) from None
        counts = state.get("class_counts")
    if counts is None or int(torch.as_tensor(counts).sum()) == 0:
        raise ValueError(f"{checkpoint!r} holds no pre-training class_counts; the Many/Medium/Few groups cannot be formed")
    num_classes = int(hparams.get("num_classes", len(counts)))
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    # the pre-training datamodule's arguments (input normalisation), saved by LongTailDataModule,
    # and its class (recorded by the CLI, or by LongTailMethod.on_save_checkpoint)
    hparams["_datamodule"] = dict(ckpt.get("datamodule_hyper_parameters") or {})
    hparams["_datamodule_class"] = hparams["_datamodule"].get("_class_path") or ckpt.get("datamodule_class_path")
    hparams["_method_class"] = class_path
    return backbone, torch.as_tensor(counts, dtype=torch.long).clone(), num_classes, hparams


def checkpoint_datamodule(hparams: dict, checkpoint: str = "the checkpoint", **overrides):
    """The pre-training datamodule rebuilt from a checkpoint's saved arguments (``hparams`` from
    :func:`load_pretrained`; ``overrides`` replace saved arguments, e.g. ``data_dir``). Nothing is
    read from disk until it is set up."""
    class_path = hparams.get("_datamodule_class")
    if not class_path:
        raise ValueError(
            f"{checkpoint} does not record its datamodule (written before datamodules were recorded, or "
            "trained without one): name the probe data explicitly, e.g. --data ltcl_lightning.data.cifar."
            "CIFAR100LTDataModule --data.init_args.data_dir=data (or --data data.yaml)"
        )
    cls = _import(class_path)
    kwargs = {k: v for k, v in hparams.get("_datamodule", {}).items() if k not in _CKPT_ONLY_KEYS}
    return cls(**{**kwargs, **overrides})


def data_signature(dm) -> dict[str, Any]:
    """What a frozen backbone's features depend on in the data: the label set's size, the image
    size and the input normalisation (and, for messages, the datamodule's class)."""

    def rounded(v):
        return None if v is None else tuple(round(float(x), 6) for x in v)

    return {
        "datamodule": type(dm).__name__,
        "num_classes": int(dm.num_classes),
        "image_size": int(dm.image_size),
        "mean": rounded(dm.mean),
        "std": rounded(dm.std),
    }


def check_same_inputs(pretrain: dict[str, Any], probe: dict[str, Any], checkpoint: str, ignore: tuple[str, ...] = ()) -> None:
    """Refuse probe data that differs from the pre-training data in classes, image size or
    normalisation (the features, or the Many/Medium/Few groups, would silently mean something
    else), naming both sides."""
    keys = [k for k in ("num_classes", "image_size", "mean", "std") if k not in ignore]
    diffs = [k for k in keys if pretrain[k] != probe[k]]
    if diffs:
        side = lambda sig: ", ".join(f"{k}={sig[k]}" for k in keys)  # noqa: E731
        raise ValueError(
            f"the probe data does not match the pre-training data of {checkpoint} ({', '.join(diffs)} differ): "
            f"checkpoint {pretrain['datamodule']}: {side(pretrain)}; probe data {probe['datamodule']}: {side(probe)}. "
            "Probe on data with the same classes, image size and normalisation (ltcl probe without --data uses "
            "the checkpoint's own datamodule)."
        )


class LinearProbe(LongTailMethod):
    """A linear classifier on the frozen backbone of a pre-trained checkpoint."""

    uses_online_probe = False

    def __init__(
        self,
        num_classes: int,
        checkpoint: str,
        method: str | None = None,
        grouping: Grouping = "thirds",
        class_counts: list[int] | None = None,
        optimizer: OptimizerCallable = probe_adam,
        lr_schedule: LRSchedule | None = None,
    ):
        """
        Args:
            num_classes: classes of the probe data (must equal the checkpoint's).
            checkpoint: a ``.ckpt`` of any method (SimCLR, SupCon, SDCLR, BoostedCL, ...).
            method: class path of the pre-training method when the checkpoint does not name it.
            grouping: ``thirds`` (SDCLR/BCL on CIFAR) or ``threshold``, of the PRE-TRAINING counts.
            class_counts: counts of the probe's training set (linked by the CLI); informational:
                the groups use the checkpoint's pre-training counts.
            optimizer: default Adam lr 1e-2, weight decay 5e-6.
            lr_schedule: default exponential decay to 1e-6 at the last epoch (per epoch).
        """
        backbone, pretrain_counts, ckpt_classes, ckpt_hparams = load_pretrained(checkpoint, method)
        # the pre-training data's signature, checked against the probe data at setup (None: not recorded)
        pretrain_data = (
            data_signature(checkpoint_datamodule(ckpt_hparams, repr(checkpoint))) if ckpt_hparams.get("_datamodule_class") else None
        )
        if ckpt_classes != num_classes:
            raise ValueError(
                f"the checkpoint was pre-trained with {ckpt_classes} classes but the probe data has {num_classes}; "
                "probe on the same label set (pre-training counts define the groups)"
            )
        super().__init__(
            num_classes,
            backbone,
            class_counts=pretrain_counts.tolist(),
            grouping=grouping,
            optimizer=optimizer,
            lr_schedule=lr_schedule if lr_schedule is not None else ExponentialDecay(min_lr=1e-6),
        )
        self.save_hyperparameters({"checkpoint": checkpoint, "method": method, "probe_class_counts": class_counts})
        self._pretrain_data = pretrain_data
        self.classifier = nn.Linear(self.feat_dim, num_classes)

    def train(self, mode: bool = True):
        """Only the classifier ever trains: the backbone (and its batch norm) stays in eval mode."""
        super().train(mode)
        self.backbone.eval()
        return self

    def setup(self, stage: str) -> None:
        # not LongTailMethod.setup: the probe's data counts (balanced) are not the pre-training counts
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and getattr(dm, "num_classes", self.num_classes) != self.num_classes:
            raise ValueError(f"num_classes={self.num_classes} but the datamodule has {dm.num_classes} classes")
        if dm is not None and self._pretrain_data is not None and hasattr(dm, "image_size"):
            check_same_inputs(self._pretrain_data, data_signature(dm), repr(self.hparams["checkpoint"]))
        self.build_metrics()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.backbone(x)

    def training_loss(self, index, views, target) -> dict[str, torch.Tensor]:
        h = self.features(views[0])
        return {"loss": F.cross_entropy(self.classifier(h), target), "features": h}

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
