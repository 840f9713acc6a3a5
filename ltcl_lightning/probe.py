"""The self-supervised evaluation protocol of SDCLR / BoostedCL in one command.

    python -m ltcl_lightning.probe CHECKPOINT --data-dir data [--splits-dir MY_SPLITS/]
    ltcl probe CHECKPOINT ...            (same arguments)

Spec: ``data_and_eval.md`` section 3, ``boosted_cl.md`` section e. The frozen backbone's pooled
features (eval mode, test-time transform, no projector; SDCLR: dense branch, dense BN) are
computed once for the CIFAR train images the probe sets use and for the 10,000 test images.
A ``Linear(feat_dim, C)`` is then trained per probe set exactly as the official ``eval_sgd``:
Adam lr 1e-2, weight decay 5e-6, ``ExponentialLR`` with gamma = (1e-6 / 1e-2) ** (1 / epochs)
stepped per epoch, 500 epochs, batch 1000, a fresh permutation per epoch, cross-entropy.

Probe sets: full-shot ``trainIdxList.npy``; 100-shot and 50-shot ``split{k}_test_{n}shot.npy``
for k = 1..5 (reported: the mean over the five splits, and the std of the overall accuracy).
Reported per set: overall top-1, Many / Medium / Few (mean per-class accuracy; groups from the
PRE-TRAINING class counts stored in the checkpoint, thirds by default) and the population std
of the three group means.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ltcl_lightning import splits
from ltcl_lightning.data.base import IndexedDataset
from ltcl_lightning.data.cifar import CIFAR10LTDataModule, CIFAR100LTDataModule
from ltcl_lightning.data.longtail import load_index_file
from ltcl_lightning.longtail import GROUP_NAMES, class_groups, format_table
from ltcl_lightning.methods.linear_probe import load_pretrained
from ltcl_lightning.metrics import LongTailAccuracy

_DATAMODULES = {100: CIFAR100LTDataModule, 10: CIFAR10LTDataModule}
METRIC_KEYS = ("acc", *GROUP_NAMES, "group_std")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ltcl probe",
        description="Linear probe of a pre-trained checkpoint on frozen features: full-shot, and the mean over "
        "the five 100-shot and 50-shot subsets (BoostedCL / SDCLR protocol).",
    )
    p.add_argument("checkpoint", help="a .ckpt written by `ltcl fit` (SimCLR, SDCLR, BoostedCL, SupCon, ...)")
    p.add_argument("--data-dir", default="data", help="folder with cifar-100-python/ (or cifar-10-batches-py/)")
    p.add_argument("--splits-dir", default=None, help="folder with trainIdxList.npy and split{k}_test_{n}shot.npy "
                   "(default: the published files shipped with the package, ltcl_lightning/splits/cifar100 or cifar10)")
    p.add_argument("--shots", default="full,100,50", help="comma-separated subset of full,100,50")
    p.add_argument("--splits", default="1,2,3,4,5", help="few-shot split ids to average over")
    p.add_argument("--method", default=None, help="class path of the pre-training method, if the checkpoint lacks it")
    p.add_argument("--grouping", choices=["thirds", "threshold"], default="thirds", help="groups of the pre-training counts")
    p.add_argument("--mean", type=float, nargs=3, default=None,
                   help="input normalisation mean (default: the pre-training datamodule's, saved in the checkpoint)")
    p.add_argument("--std", type=float, nargs=3, default=None, help="input normalisation std (as --mean)")
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--min-lr", type=float, default=1e-6)
    p.add_argument("--weight-decay", type=float, default=5e-6)
    p.add_argument("--batch-size", type=int, default=1000)
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
    x: torch.Tensor, y: torch.Tensor, num_classes: int, epochs: int, lr: float, min_lr: float,
    weight_decay: float, batch_size: int, generator: torch.Generator, bar=None,
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
def evaluate(clf: nn.Linear, x: torch.Tensor, y: torch.Tensor, groups: torch.Tensor, num_classes: int) -> dict:
    metric = LongTailAccuracy(num_classes, groups).to(x.device)
    metric.update(torch.arange(len(y), device=x.device), clf(x), y)
    res = metric.compute()
    return {k: float(res[k]) for k in METRIC_KEYS} | {"per_class": [float(v) for v in res["per_class"]]}


def probe_sets(splits_dir: Path, shots: list[str], splits: list[int]) -> dict[str, list[tuple[str, Path]]]:
    """{'full': [(name, path)], '100': [...five...], '50': [...]}, every file checked to exist."""
    out: dict[str, list[tuple[str, Path]]] = {}
    missing = []
    for shot in shots:
        if shot == "full":
            files = [("full", splits_dir / "trainIdxList.npy")]
        elif shot in ("100", "50"):
            files = [(f"split{k}_{shot}shot", splits_dir / f"split{k}_test_{shot}shot.npy") for k in splits]
        else:
            raise ValueError(f"unknown shot setting {shot!r}: use full, 100 or 50")
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


def _normalisation(args: argparse.Namespace, datamodule_hparams: dict) -> dict:
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
    if not out:
        print("ltcl probe: the checkpoint records no input normalisation; using the CIFAR datamodule's "
              "default (ImageNet mean/std). Pass --mean/--std if pre-training used others.", flush=True)
    return out


def run(args: argparse.Namespace) -> dict:
    progress = not args.no_progress
    device = _device(args.device)
    if args.epochs < 1 or args.batch_size < 1:
        raise ValueError(f"--epochs and --batch-size must be >= 1, got {args.epochs}, {args.batch_size}")
    backbone, pretrain_counts, num_classes, hparams = load_pretrained(args.checkpoint, args.method)
    norm = _normalisation(args, hparams.get("_datamodule", {}))
    if num_classes not in _DATAMODULES:
        raise ValueError(f"the checkpoint has {num_classes} classes; this protocol covers CIFAR-10 / CIFAR-100 only")
    splits_dir = Path(args.splits_dir) if args.splits_dir else splits.ROOT / f"cifar{num_classes}"
    shots = [s.strip() for s in args.shots.split(",") if s.strip()]
    split_ids = [int(s) for s in args.splits.split(",") if s.strip()]
    sets = probe_sets(splits_dir, shots, split_ids)
    groups = class_groups(pretrain_counts, args.grouping)

    dm = _DATAMODULES[num_classes](
        data_dir=args.data_dir, split_file=str(sets[shots[0]][0][1]), num_workers=args.num_workers, **norm
    )
    train_base, test_base = dm.train_base, dm.test_base
    train_labels = np.asarray(train_base.targets, dtype=np.int64)
    indices = {name: load_index_file(str(path), len(train_labels)) for files in sets.values() for name, path in files}
    union = np.unique(np.concatenate(list(indices.values())))
    backbone = backbone.to(device)
    tf = dm.eval_transform()
    x_union, y_union = extract_features(
        backbone, IndexedDataset(train_base, train_labels, tf, union), args.feature_batch_size, args.num_workers,
        device, "train features", progress,
    )
    x_test, y_test = extract_features(
        backbone, IndexedDataset(test_base, test_base.targets, tf), args.feature_batch_size, args.num_workers,
        device, "test features", progress,
    )
    groups = groups.to(device)

    total = args.epochs * sum(len(f) for f in sets.values())
    bar = tqdm(total=total, desc="linear probes (epochs)", disable=not progress)
    per_set: dict[str, dict] = {}
    summary: dict[str, dict] = {}
    for shot, files in sets.items():
        results = []
        for name, _ in files:
            rows = torch.as_tensor(np.searchsorted(union, indices[name]), device=device)
            torch.manual_seed(args.seed)  # classifier init
            gen = torch.Generator().manual_seed(args.seed)  # batch order
            bar.set_postfix_str(name)
            clf = train_linear(
                x_union[rows], y_union[rows], num_classes, args.epochs, args.lr, args.min_lr, args.weight_decay,
                args.batch_size, gen, bar,
            )
            per_set[name] = evaluate(clf, x_test, y_test, groups, num_classes)
            results.append(per_set[name])
        summary[shot] = aggregate(results)
    bar.close()

    label = {"full": "full-shot", "100": "100-shot (mean)", "50": "50-shot (mean)"}
    print(f"\nLinear probe of {args.checkpoint} (%; groups: {args.grouping} of the pre-training counts)")
    print(format_table({label[s]: r for s, r in summary.items()}), flush=True)
    out = {"checkpoint": str(args.checkpoint), "grouping": args.grouping, "epochs": args.epochs,
           "summary": summary, "per_set": per_set}
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(out, f, indent=1)
    return out


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return run(args)


if __name__ == "__main__":
    main()
