"""Evaluate a checkpoint on frozen features: linear probes and weighted kNN, on any datamodule.

    ltcl probe CHECKPOINT [--data-dir DIR]              the checkpoint's own datamodule
    ltcl probe CHECKPOINT --data data.yaml              other data (LightningCLI-style --data:
    ltcl probe CHECKPOINT --data.init_args.data_dir=X   a YAML file, a class path, or overrides)

The data: by default the datamodule the checkpoint was trained with, rebuilt from its saved
arguments (``--data.init_args.<arg>`` and ``--data-dir`` override single arguments); ``--data
<class path or YAML>`` names other data, which must agree with the checkpoint in the number of
classes, the image size and the input normalisation (else a clear error naming both sides).

Spec: ``data_and_eval.md`` section 3, ``boosted_cl.md`` section e. The frozen backbone's pooled
features (eval mode, test-time transform, no projector; SDCLR: dense branch, dense BN) are
computed once per image. A ``Linear(feat_dim, C)`` is then trained per probe set exactly as the
official ``eval_sgd``: Adam lr 1e-2, weight decay 5e-6, ``ExponentialLR`` with gamma =
(1e-6 / 1e-2) ** (1 / epochs) stepped per epoch, 500 epochs, batch 1000, a fresh permutation per
epoch, cross-entropy. Beside each linear probe, a weighted kNN classifier (k=200, T=0.1;
:mod:`ltcl_lightning.knn`) on the same probe set (``--no-knn`` to skip).

Probe sets (``--shots``):

- CIFAR-10/100 (BoostedCL / SDCLR protocol): ``full`` = ``trainIdxList``; ``100`` / ``50`` =
  ``split{k}_test_{n}shot`` for k = 1..5 (the mean over the splits, and the std of the overall
  accuracy), from ``--splits-dir`` (default: the published files shipped with the package);
  evaluated on the 10,000 CIFAR test images. Default: ``full,100,50`` (CIFAR-10: ``full``).
- list-file data (ImageNet-LT, ImageNet-100-LT, iNaturalist 2018): ``full`` = the training list,
  ``fewshot`` = the datamodule's ``fewshot_list``; for ImageNet-LT and ImageNet-100-LT without
  one, the published 1 % list shipped with the package (``imagenet_lt/imageNet_sub_balance_train_0.01``,
  ``imagenet100_lt/imageNet_100_sub_balance_train_0.01``; printed). Evaluated on the test list.
  Default: ``full,fewshot`` when there is a few-shot list, else ``full``.
- any other datamodule (e.g. Digits-LT): ``full`` = its training set; evaluated on its test set.

Reported per set: overall top-1, Many / Medium / Few (mean per-class accuracy; groups from the
PRE-TRAINING class counts stored in the checkpoint, thirds by default) and the population std
of the three group means.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from jsonargparse import ArgumentParser, Namespace
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ltcl_lightning import splits
from ltcl_lightning.data.base import IndexedDataset, LongTailDataModule
from ltcl_lightning.data.cifar import _CIFARLTDataModule
from ltcl_lightning.data.imagenet import ImageNet100LTDataModule, ImageNetLTDataModule
from ltcl_lightning.data.listfile import ListFileDataModule
from ltcl_lightning.data.longtail import load_index_file
from ltcl_lightning.knn import DEFAULT_K, DEFAULT_TEMPERATURE, knn_predict
from ltcl_lightning.longtail import GROUP_NAMES, class_groups, format_table
from ltcl_lightning.methods.linear_probe import check_same_inputs, checkpoint_datamodule, data_signature, load_pretrained
from ltcl_lightning.metrics import LongTailAccuracy

METRIC_KEYS = ("acc", *GROUP_NAMES, "group_std")
#: the published 1 % few-shot lists (shipped) of the list-file benchmarks that have one
FEWSHOT_DEFAULTS = {
    ImageNet100LTDataModule: "imagenet100_lt/imageNet_100_sub_balance_train_0.01",
    ImageNetLTDataModule: "imagenet_lt/imageNet_sub_balance_train_0.01",
}


def build_parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="ltcl probe",
        description="Linear probes and weighted kNN on the frozen features of a checkpoint, on its own datamodule "
        "(default) or on --data: full-shot, and for CIFAR the mean over the five 100-shot and 50-shot subsets "
        "(BoostedCL / SDCLR protocol), for ImageNet(-100)-LT the 1 %% few-shot list.",
    )
    p.add_argument("checkpoint", help="a .ckpt written by `ltcl fit` (SimCLR, SDCLR, BoostedCL, SupCon, ...)")
    p.add_subclass_arguments(
        LongTailDataModule,
        "data",
        required=False,
        help="the probe data (default: the checkpoint's datamodule; --data.init_args.X=... overrides one argument)",
    )
    p.add_argument("--data-dir", default=None, help="shortcut for --data.init_args.data_dir (e.g. the CIFAR folder)")
    p.add_argument(
        "--splits-dir",
        default=None,
        help="CIFAR: folder with trainIdxList.npy and split{k}_test_{n}shot.npy "
        "(default: the published files shipped with the package, ltcl_lightning/splits/cifar100 or cifar10)",
    )
    p.add_argument(
        "--shots",
        default=None,
        help="comma-separated probe sets: full,100,50 (CIFAR), full,fewshot (list files); default: every set the data has",
    )
    p.add_argument("--splits", default="1,2,3,4,5", help="CIFAR few-shot split ids to average over")
    p.add_argument("--method", default=None, help="class path of the pre-training method, if the checkpoint lacks it")
    p.add_argument("--grouping", choices=["thirds", "threshold"], default="thirds", help="groups of the pre-training counts")
    p.add_argument(
        "--mean",
        type=float,
        nargs=3,
        default=None,
        help="input normalisation mean (default: the pre-training datamodule's, saved in the checkpoint)",
    )
    p.add_argument("--std", type=float, nargs=3, default=None, help="input normalisation std (as --mean)")
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--weight-decay", type=float, default=5e-6)
    p.add_argument("--batch-size", type=int, default=1000)
    p.add_argument("--knn-k", type=int, default=DEFAULT_K, help="neighbours of the weighted kNN (200 as InstDisc/DINO)")
    p.add_argument("--knn-temperature", type=float, default=DEFAULT_TEMPERATURE, help="kNN vote temperature (0.1)")
    p.add_argument("--no-knn", action="store_true", help="skip the kNN classifiers")
    p.add_argument("--feature-batch-size", type=int, default=500)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="write all numbers (per set and aggregated) to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    return p


# ----- features ------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(backbone: nn.Module, dataset, batch_size: int, num_workers: int, device, desc: str, progress: bool):
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    feats, labels = [], []
    backbone.eval()
    for _, views, target in tqdm(loader, desc=desc, disable=not progress, leave=False):
        feats.append(backbone(views[0].to(device)).float())
        labels.append(target.to(device))
    return torch.cat(feats), torch.cat(labels)


# ----- the official eval_sgd ------------------------------------------------------------------
def train_linear(
    x: torch.Tensor,
    y: torch.Tensor,
    num_classes: int,
    epochs: int,
    lr: float,
    min_lr: float,
    weight_decay: float,
    batch_size: int,
    generator: torch.Generator,
    bar=None,
) -> nn.Linear:
    """Adam + ExponentialLR(gamma = (min_lr / lr) ** (1 / epochs)), stepped per epoch."""
    clf = nn.Linear(x.shape[1], num_classes).to(x.device)
    opt = torch.optim.Adam(clf.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=(min_lr / lr) ** (1.0 / epochs))
    n = x.shape[0]
    for _ in range(epochs):
        perm = torch.randperm(n, generator=generator).to(x.device)
        for start in range(0, n, batch_size):
            sel = perm[start : start + batch_size]
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(clf(x[sel]), y[sel]).backward()
            opt.step()
        sched.step()
        if bar is not None:
            bar.update(1)
    return clf


@torch.no_grad()
def evaluate_predictions(preds: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, num_classes: int) -> dict:
    metric = LongTailAccuracy(num_classes, groups).to(y.device)
    metric.update(torch.arange(len(y), device=y.device), preds, y)
    res = metric.compute()
    return {k: float(res[k]) for k in METRIC_KEYS} | {"per_class": [float(v) for v in res["per_class"]]}


@torch.no_grad()
def evaluate(clf: nn.Linear, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, num_classes: int) -> dict:
    return evaluate_predictions(clf(x).argmax(1), y, groups, num_classes)


def probe_sets(splits_dir: Path, shots: list[str], split_ids: list[int]) -> dict[str, list[tuple[str, Path]]]:
    """CIFAR: {'full': [(name, path)], '100': [...five...], '50': [...]}, every file checked to exist."""
    out: dict[str, list[tuple[str, Path]]] = {}
    missing = []
    for shot in shots:
        if shot == "full":
            files = [("full", splits_dir / "trainIdxList.npy")]
        elif shot in ("100", "50"):
            files = [(f"split{k}_{shot}shot", splits_dir / f"split{k}_test_{shot}shot.npy") for k in split_ids]
        else:
            raise ValueError(f"unknown shot setting {shot!r} for CIFAR: use full, 100 or 50")
        missing += [str(p) for _, p in files if not p.is_file()]
        out[shot] = files
    if missing:
        raise FileNotFoundError(
            f"probe split files not found: {missing[:4]}{' ...' if len(missing) > 4 else ''}. Point --splits-dir at the "
            "folder holding trainIdxList.npy and split{k}_test_{n}shot.npy, or restrict --shots (CIFAR-10 has full only)."
        )
    return out


def aggregate(results: list[dict]) -> dict:
    out = {k: float(np.mean([r[k] for r in results])) for k in METRIC_KEYS}
    out["acc_std_over_splits"] = float(np.std([r["acc"] for r in results])) if len(results) > 1 else 0.0
    out["num_splits"] = len(results)
    return out


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _normalisation(args, datamodule_hparams: dict) -> dict:
    """mean/std of the probe's inputs: the command line, else the pre-training datamodule's
    (features of a network trained on CIFAR-normalised inputs must see the same inputs)."""
    out = {}
    for key in ("mean", "std"):
        value = getattr(args, key)
        if value is None and datamodule_hparams.get(key) is not None:
            value = datamodule_hparams[key]
        if value is not None:
            out[key] = tuple(float(v) for v in value)
    if len(out) == 1:
        raise ValueError("pass both --mean and --std, or neither")
    return out


# ----- the probe data -------------------------------------------------------------------------
def _names_data(argv: list[str]) -> bool:
    """``--data X`` / ``--data=X`` replaces the data; ``--data.init_args.k=v`` only overrides."""
    return any(a == "--data" or a.startswith("--data=") for a in argv)


def resolve_data(parser: ArgumentParser, argv: list[str], cfg: Namespace, hparams: dict) -> tuple[LongTailDataModule, Namespace]:
    """The probe's datamodule: the checkpoint's (its saved arguments, with the command line's
    overrides) unless ``--data`` names other data; then checked against the checkpoint."""
    if not _names_data(argv):
        if not hparams.get("_datamodule_class"):
            checkpoint_datamodule(hparams, repr(cfg.checkpoint))  # raises: name the data with --data
        saved = {k: v for k, v in hparams["_datamodule"].items() if not k.startswith("_")}
        parser.set_defaults(data={"class_path": hparams["_datamodule_class"], "init_args": saved})
        cfg = parser.parse_args(argv)
    if cfg.data is None:
        raise ValueError("no probe data: pass --data <class path or YAML>")
    init = cfg.data.init_args
    if cfg.data_dir is not None:
        if "data_dir" not in init:
            raise ValueError(f"--data-dir was given but {cfg.data.class_path} takes no data_dir")
        init.data_dir = cfg.data_dir
    norm = _normalisation(cfg, {})  # --mean/--std on the command line win over the saved ones
    if norm:
        init.mean, init.std = list(norm["mean"]), list(norm["std"])
    dm = parser.instantiate(cfg).data
    if hparams.get("_datamodule_class"):
        pretrain = data_signature(checkpoint_datamodule(hparams, repr(cfg.checkpoint)))
        check_same_inputs(pretrain, data_signature(dm), repr(cfg.checkpoint), ignore=("mean", "std") if cfg.mean is not None else ())
    else:
        print(
            f"ltcl probe: {cfg.checkpoint} does not record its datamodule; image size and normalisation of "
            f"{cfg.data.class_path} cannot be checked against pre-training.",
            flush=True,
        )
    return dm, cfg


def _default_shots(dm: LongTailDataModule) -> list[str]:
    if isinstance(dm, _CIFARLTDataModule):
        return ["full", "100", "50"] if dm.num_classes == 100 else ["full"]
    if isinstance(dm, ListFileDataModule) and dm.fewshot_list is not None:
        return ["full", "fewshot"]
    return ["full"]


def generic_sets(dm: LongTailDataModule, shots: list[str]) -> tuple[dict[str, list[tuple[str, Dataset]]], Dataset]:
    """Probe sets and test set of a non-CIFAR datamodule: the training set (eval view), the
    few-shot list of list-file data; the test stage's dataset."""
    sets: dict[str, list[tuple[str, Dataset]]] = {}
    dm.setup("test")
    for shot in shots:
        if shot == "full":
            sets["full"] = [("full", dm.train_eval_dataset())]
        elif shot == "fewshot":
            if not isinstance(dm, ListFileDataModule) or dm.fewshot_list is None:
                raise ValueError(
                    f"--shots fewshot needs list-file data with a fewshot_list; {type(dm).__name__} has none "
                    "(pass --data.init_args.fewshot_list=<list>)"
                )
            sets["fewshot"] = [("fewshot", dm.datasets.get("fewshot") or dm.probe_dataloader("fewshot").dataset)]
        else:
            raise ValueError(f"unknown shot setting {shot!r} for {type(dm).__name__}: use full or fewshot")
    return sets, dm.datasets["test"]


# ----- the command ----------------------------------------------------------------------------
def run(cfg: Namespace, dm: LongTailDataModule, loaded: tuple) -> dict:
    progress = not cfg.no_progress
    device = _device(cfg.device)
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise ValueError(f"--epochs and --batch-size must be >= 1, got {cfg.epochs}, {cfg.batch_size}")
    backbone, pretrain_counts, num_classes, hparams = loaded
    if dm.num_classes != num_classes:
        raise ValueError(
            f"the checkpoint's model has {num_classes} classes, the probe data {type(dm).__name__} "
            f"{dm.num_classes}: probe on the pre-training label set"
        )
    for cls, name in FEWSHOT_DEFAULTS.items():
        if type(dm) is cls and dm.fewshot_list is None:
            dm.fewshot_list = name
            print(
                f"ltcl probe: few-shot list {name} (the published 1 % subset, shipped; --data.init_args.fewshot_list=... for another)",
                flush=True,
            )
    shots = [s.strip() for s in cfg.shots.split(",") if s.strip()] if cfg.shots else _default_shots(dm)
    groups = class_groups(pretrain_counts, cfg.grouping).to(device)
    backbone = backbone.to(device)
    feat = lambda ds, desc: extract_features(  # noqa: E731
        backbone, ds, cfg.feature_batch_size, cfg.num_workers, device, desc, progress
    )

    features: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    names_by_shot: dict[str, list[str]] = {}
    if isinstance(dm, _CIFARLTDataModule):
        splits_dir = Path(cfg.splits_dir) if cfg.splits_dir else splits.ROOT / f"cifar{dm.num_classes}"
        split_ids = [int(s) for s in cfg.splits.split(",") if s.strip()]
        sets = probe_sets(splits_dir, shots, split_ids)
        train_base, test_base = dm.train_base, dm.test_base
        train_labels = np.asarray(train_base.targets, dtype=np.int64)
        indices = {name: load_index_file(str(path), len(train_labels)) for files in sets.values() for name, path in files}
        union = np.unique(np.concatenate(list(indices.values())))
        tf = dm.eval_transform()
        x_union, y_union = feat(IndexedDataset(train_base, train_labels, tf, union), "train features")
        for name, idx in indices.items():
            rows = torch.as_tensor(np.searchsorted(union, idx), device=device)
            features[name] = x_union[rows], y_union[rows]
        names_by_shot = {shot: [n for n, _ in files] for shot, files in sets.items()}
        x_test, y_test = feat(IndexedDataset(test_base, test_base.targets, tf), "test features")
    else:
        ds_sets, test_ds = generic_sets(dm, shots)
        for items in ds_sets.values():
            for name, ds in items:
                features[name] = feat(ds, f"{name} features")
        names_by_shot = {shot: [n for n, _ in items] for shot, items in ds_sets.items()}
        x_test, y_test = feat(test_ds, "test features")

    total = cfg.epochs * len(features)
    bar = tqdm(total=total, desc="linear probes (epochs)", disable=not progress)
    per_set: dict[str, dict] = {}
    summary: dict[str, dict] = {}
    knn_per_set: dict[str, dict] = {}
    knn_summary: dict[str, dict] = {}
    for shot, names in names_by_shot.items():
        results, knn_results = [], []
        for name in names:
            x, y = features[name]
            torch.manual_seed(cfg.seed)  # classifier init
            gen = torch.Generator().manual_seed(cfg.seed)  # batch order
            bar.set_postfix_str(name)
            clf = train_linear(x, y, num_classes, cfg.epochs, cfg.lr, cfg.min_lr, cfg.weight_decay, cfg.batch_size, gen, bar)
            per_set[name] = evaluate(clf, x_test, y_test, groups, num_classes)
            results.append(per_set[name])
            if not cfg.no_knn:
                preds = knn_predict(x, y, x_test, num_classes, cfg.knn_k, cfg.knn_temperature)
                knn_per_set[name] = evaluate_predictions(preds, y_test, groups, num_classes)
                knn_results.append(knn_per_set[name])
        summary[shot] = aggregate(results)
        if knn_results:
            knn_summary[shot] = aggregate(knn_results)
    bar.close()

    label = {"full": "full-shot", "100": "100-shot (mean)", "50": "50-shot (mean)", "fewshot": "few-shot"}
    table = {f"{label.get(s, s)} linear": r for s, r in summary.items()}
    table.update({f"{label.get(s, s)} kNN": r for s, r in knn_summary.items()})
    print(
        f"\nProbes of {cfg.checkpoint} on {type(dm).__name__} (%; groups: {cfg.grouping} of the pre-training counts; "
        f"kNN k={cfg.knn_k}, T={cfg.knn_temperature})"
    )
    print(format_table(table), flush=True)
    out = {
        "checkpoint": str(cfg.checkpoint),
        "datamodule": data_signature(dm) | {"class_path": cfg.data.class_path},
        "grouping": cfg.grouping,
        "epochs": cfg.epochs,
        "summary": summary,
        "per_set": per_set,
        "knn": {"k": cfg.knn_k, "temperature": cfg.knn_temperature, "summary": knn_summary, "per_set": knn_per_set},
    }
    if cfg.output:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.output)), exist_ok=True)
        with open(cfg.output, "w") as f:
            json.dump(out, f, indent=1)
    return out


def _without_data_overrides(argv: list[str]) -> list[str]:
    """argv without ``--data.<key> [value]``: those may name arguments of the checkpoint's
    datamodule, which the parser only knows once the checkpoint is read."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a.startswith("--data."):
            skip = "=" not in a
        else:
            out.append(a)
    return out


def main(argv: list[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    cfg = parser.parse_args(argv if _names_data(argv) else _without_data_overrides(argv))
    loaded = load_pretrained(cfg.checkpoint, cfg.method)
    dm, cfg = resolve_data(parser, argv, cfg, loaded[3])
    return run(cfg, dm, loaded)


if __name__ == "__main__":
    main()
