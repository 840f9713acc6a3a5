"""Shared fixtures: published split files from ../shared/splits and CIFAR archives written in
torchvision's real python format (pickled batches), labelled with the real CIFAR train labels."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LTCL_SHARED", REPO.parent / "shared"))
SPLITS = SHARED / "splits"

pytest_plugins = ["fixtures_images"]

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def splits_dir() -> Path:
    if not SPLITS.is_dir():
        pytest.fail(f"published split files not found at {SPLITS}; set LTCL_SHARED to the shared/ folder")
    return SPLITS


#: per-class training images of the small CIFAR-10 subset of ``small_split`` (40 images: 3 steps
#: of 16 / 16 / 8 per epoch); tests import it as ``from conftest import SMALL_COUNTS``
SMALL_COUNTS = [8, 6, 5, 4, 4, 3, 3, 3, 2, 2]


@pytest.fixture(scope="session")
def small_split(tmp_path_factory, splits_dir) -> str:
    """A split file (CIFAR-10 train indices, shuffled) of SMALL_COUNTS images per class."""
    labels = np.load(splits_dir / "cifar10" / "train_labels.npy")
    idx = np.concatenate([np.flatnonzero(labels == c)[:n] for c, n in enumerate(SMALL_COUNTS)])
    path = tmp_path_factory.mktemp("split") / "small_D_i.npy"
    np.save(path, np.random.default_rng(0).permutation(idx).astype(np.int64))
    return str(path)


def write_cifar_archive(root: Path, num_classes: int, train_labels: np.ndarray | None = None, n_test: int = 10000) -> Path:
    """Write ``cifar-10-batches-py/`` or ``cifar-100-python/`` exactly as the official archive
    extracts (pickled dicts with str keys, as Python 2 pickles load with encoding="latin1", uint8 rows of 3072 values). Images are class-coloured
    noise so a model can learn something in a few steps."""
    rng = np.random.default_rng(0)
    if train_labels is None:
        train_labels = np.arange(50000) % num_classes
    test_labels = np.arange(n_test) % num_classes

    def images(labels: np.ndarray) -> np.ndarray:
        base = (labels[:, None] * 37 % 256).astype(np.uint8)
        noise = rng.integers(0, 64, size=(len(labels), 3072), dtype=np.uint8)
        return (np.repeat(base, 3072, axis=1) // 2 + noise).astype(np.uint8)

    if num_classes == 10:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(5):
            lab = train_labels[k * 10000 : (k + 1) * 10000]
            with open(folder / f"data_batch_{k + 1}", "wb") as f:
                pickle.dump(
                    {"batch_label": "training batch", "labels": lab.tolist(), "data": images(lab), "filenames": ["x.png"] * len(lab)}, f
                )
        with open(folder / "test_batch", "wb") as f:
            pickle.dump(
                {
                    "batch_label": "testing batch",
                    "labels": test_labels.tolist(),
                    "data": images(test_labels),
                    "filenames": ["x.png"] * n_test,
                },
                f,
            )
        with open(folder / "batches.meta", "wb") as f:
            pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_cases_per_batch": 10000, "num_vis": 3072}, f)
    else:
        folder = root / "cifar-100-python"
        folder.mkdir(parents=True, exist_ok=True)
        for name, lab in (("train", train_labels), ("test", test_labels)):
            with open(folder / name, "wb") as f:
                pickle.dump(
                    {
                        "filenames": ["x.png"] * len(lab),
                        "fine_labels": lab.tolist(),
                        "coarse_labels": (lab // 5).tolist(),
                        "data": images(lab),
                    },
                    f,
                )
        with open(folder / "meta", "wb") as f:
            pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)], "coarse_label_names": [f"super{i}" for i in range(20)]}, f)
    return root


@pytest.fixture(scope="session")
def cifar100_dir(tmp_path_factory, splits_dir) -> Path:
    """A CIFAR-100 python archive (real format, real train labels, synthetic pixels)."""
    labels = np.load(splits_dir / "cifar100" / "train_labels.npy")
    return write_cifar_archive(tmp_path_factory.mktemp("cifar100"), 100, labels)


@pytest.fixture(scope="session")
def cifar10_dir(tmp_path_factory, splits_dir) -> Path:
    labels = np.load(splits_dir / "cifar10" / "train_labels.npy")
    return write_cifar_archive(tmp_path_factory.mktemp("cifar10"), 10, labels)


# ----- every recipe in experiments/ run once per session ------------------------------------------
# data class (module.Class suffix) -> fixture giving data paths for the one-step run
_FIXTURE_BY_DATA = [
    ("CIFAR100", "cifar100_dir"),
    ("CIFAR10", "cifar10_dir"),
    ("ImageNet100LT", "imagenet100_lt_folder"),
    ("ImageNetLT", "imagenet_lt_folder"),
    ("INaturalist2018", "inat_folder"),
]


def _recipe_overrides(cfg: dict, request, root: Path) -> list[str]:
    data_cls = cfg["data"]["class_path"]
    args = [
        "--trainer.fast_dev_run=true",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        f"--trainer.default_root_dir={root}",
        "--trainer.enable_progress_bar=false",
        "--data.init_args.batch_size=8",
        "--data.init_args.num_workers=0",
    ]
    if "backbone" in cfg["model"].get("init_args", {}):
        args.append("--model.init_args.backbone=tiny")
    for key, fixture in _FIXTURE_BY_DATA:
        if key in data_cls.rsplit(".", 1)[-1]:
            value = request.getfixturevalue(fixture)
            if isinstance(value, dict):
                for k, v in value.items():
                    if k in ("data_dir", "train_list", "val_list", "test_list", "train_json", "val_json", "num_classes"):
                        if k in cfg["data"].get("init_args", {}) or k in ("data_dir", "num_classes"):
                            args.append(f"--data.init_args.{k}={v}")
                args.append("--data.init_args.image_size=32")
            else:
                args.append(f"--data.init_args.data_dir={value}")
            break
    return args


@pytest.fixture(scope="session")
def run_recipe(request, tmp_path_factory):
    """``run_recipe('experiments/<dataset>/<method>.yaml', *extra_args)``: the LightningCLI after
    one training step of the recipe (tiny backbone, batch 8, generated real-format data, from a
    folder other than the repository). Cached: every recipe (with the same extra arguments) runs
    once per session, whichever tests read it."""
    import yaml

    from ltcl_lightning.cli import cli_main

    runs: dict[tuple[str, ...], object] = {}

    def run(rel: str, *extra: str):
        if (rel, *extra) not in runs:
            cfg = yaml.safe_load((REPO / rel).read_text())
            root = tmp_path_factory.mktemp(Path(rel).stem)
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(root)  # recipes name shipped split files: nothing relative to the repository
                runs[(rel, *extra)] = cli_main(["fit", "--config", str(REPO / rel), *_recipe_overrides(cfg, request, root), *extra])
        return runs[(rel, *extra)]

    return run
