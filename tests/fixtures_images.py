"""Fixtures that write image folders in real JPEG format with list files (owned by the
large-scale datamodules work). Registered as a pytest plugin by tests/conftest.py.

Each fixture is session-scoped and returns a dict of strings:

- ``data_dir``: the image root the list paths are relative to
- ``train_list``, ``val_list``, ``test_list``: ``relative/path label`` list files laid out like
  the published ones (ImageNet: ``train/<wnid>/<wnid>_<k>.JPEG`` and
  ``val/<wnid>/ILSVRC2012_val_<k>.JPEG``; iNat: ``train_val2018/<kingdom>/<id>/<hash>.jpg``)
- ``num_classes`` (int): pass it as ``--data.init_args.num_classes=<k>``
- ``image_size`` (int): a small crop size that suits the images (32)
- ImageNet-100 also ``balanced_train_list`` and ``fewshot_list``; iNat also ``train_json`` and
  ``val_json`` (the official COCO-style annotation format).

Images are small (48x40) class-coloured noise so a model can learn something in a few steps
and decoding stays cheap. Keep these names and keys stable: other tests depend on them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

#: training images per class of the generated long-tailed sets (head to tail)
IMAGENET_LT_TRAIN_COUNTS = (12, 8, 6, 4, 3, 2)
IMAGENET100_LT_TRAIN_COUNTS = (10, 6, 4, 3, 2)
INAT_TRAIN_COUNTS = (9, 7, 5, 4, 3, 2, 2)
FIXTURE_IMAGE_SIZE = 32


def write_jpeg(path: Path, label: int, rng: np.random.Generator, size: tuple[int, int] = (48, 40)) -> None:
    """A real baseline JPEG (PIL) of class-coloured noise, ``size`` = (width, height)."""
    from PIL import Image

    w, h = size
    colour = np.array([(label * 67) % 256, (label * 131 + 40) % 256, (label * 29 + 90) % 256], dtype=np.int16)
    pixels = colour[None, None, :] // 2 + rng.integers(0, 96, size=(h, w, 3), dtype=np.int16)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8), mode="RGB").save(path, format="JPEG", quality=85)


def write_list(path: Path, entries: list[tuple[str, int]]) -> str:
    path.write_text("".join(f"{rel} {label}\n" for rel, label in entries))
    return str(path)


def _write_images(root: Path, entries: list[tuple[str, int]], seed: int) -> None:
    rng = np.random.default_rng(seed)
    for rel, label in entries:
        if not (root / rel).exists():
            write_jpeg(root / rel, label, rng)


def _imagenet_entries(wnids: list[str], labels: list[int], counts, split: str, start: int = 0):
    """ImageNet layout: train images ``train/<wnid>/<wnid>_<k>.JPEG``, val images
    ``val/<wnid>/ILSVRC2012_val_<k>.JPEG`` (the layout the OLTR lists refer to)."""
    out = []
    serial = start
    for wnid, label, n in zip(wnids, labels, counts):
        for _ in range(n):
            serial += 1
            if split == "train":
                out.append((f"train/{wnid}/{wnid}_{serial}.JPEG", label))
            else:
                out.append((f"val/{wnid}/ILSVRC2012_val_{serial:08d}.JPEG", label))
    return out


@pytest.fixture(scope="session")
def imagenet_lt_folder(tmp_path_factory) -> dict:
    """ImageNet-LT in miniature: 6 classes, train 12..2 per class, val 2 per class (from the
    train folder, as the OLTR val list), test 3 per class (from the val folder)."""
    root = tmp_path_factory.mktemp("imagenet_lt")
    k = len(IMAGENET_LT_TRAIN_COUNTS)
    wnids = [f"n{1440764 + 1000 * c:08d}" for c in range(k)]
    labels = list(range(k))
    train = _imagenet_entries(wnids, labels, IMAGENET_LT_TRAIN_COUNTS, "train")
    val = _imagenet_entries(wnids, labels, [2] * k, "train", start=1000)
    test = _imagenet_entries(wnids, labels, [3] * k, "val")
    _write_images(root, train + val + test, seed=1)
    return {
        "data_dir": str(root),
        "train_list": write_list(root / "ImageNet_LT_train.txt", train),
        "val_list": write_list(root / "ImageNet_LT_val.txt", val),
        "test_list": write_list(root / "ImageNet_LT_test.txt", test),
        "num_classes": k,
        "image_size": FIXTURE_IMAGE_SIZE,
    }


@pytest.fixture(scope="session")
def imagenet100_lt_folder(tmp_path_factory) -> dict:
    """ImageNet-100-LT in miniature: 5 classes whose labels do not follow the wnid order (as in
    the SDCLR lists), an LT train list (10..2), a balanced train list (5 each) of the same total
    size order, a 1-per-class few-shot list, val 2 per class, test 3 per class."""
    root = tmp_path_factory.mktemp("imagenet100_lt")
    k = len(IMAGENET100_LT_TRAIN_COUNTS)
    wnids = [f"n{2869837 - 7000 * c:08d}" for c in range(k)]
    labels = list(range(k))
    train = _imagenet_entries(wnids, labels, IMAGENET100_LT_TRAIN_COUNTS, "train")
    balanced = _imagenet_entries(wnids, labels, [5] * k, "train", start=2000)
    fewshot = [balanced[c * 5] for c in range(k)]
    val = _imagenet_entries(wnids, labels, [2] * k, "train", start=1000)
    test = _imagenet_entries(wnids, labels, [3] * k, "val")
    _write_images(root, train + balanced + val + test, seed=2)
    return {
        "data_dir": str(root),
        "train_list": write_list(root / "imageNet_100_LT_train.txt", train),
        "balanced_train_list": write_list(root / "imageNet_100_BL_train.txt", balanced),
        "fewshot_list": write_list(root / "imageNet_100_sub_balance_train_0.01.txt", fewshot),
        "val_list": write_list(root / "ImageNet_100_val.txt", val),
        "test_list": write_list(root / "ImageNet_100_test.txt", test),
        "num_classes": k,
        "image_size": FIXTURE_IMAGE_SIZE,
    }


INAT_KINGDOMS = ("Plantae", "Insecta", "Aves", "Fungi")


@pytest.fixture(scope="session")
def inat_folder(tmp_path_factory) -> dict:
    """iNaturalist 2018 in miniature: 7 categories, train 9..2, val 3 per category, both as txt
    lists (``train_val2018/<supercategory>/<id>/<md5>.jpg label``, the ProCo format) and as the
    official COCO-style ``train2018.json`` / ``val2018.json``. The test list is the val list (iNat
    2018 publishes no test labels; the papers report on val)."""
    root = tmp_path_factory.mktemp("inat2018")
    k = len(INAT_TRAIN_COUNTS)
    categories = [{"id": c, "name": f"Species {c}", "supercategory": INAT_KINGDOMS[c % len(INAT_KINGDOMS)]} for c in range(k)]

    def entries(counts, tag: str):
        out = []
        for c, n in enumerate(counts):
            for j in range(n):
                digest = hashlib.md5(f"{tag}-{c}-{j}".encode()).hexdigest()
                out.append((f"train_val2018/{categories[c]['supercategory']}/{c}/{digest}.jpg", c))
        return out

    train = entries(INAT_TRAIN_COUNTS, "train")
    val = entries([3] * k, "val")
    _write_images(root, train + val, seed=3)

    def coco(items, first_id: int) -> dict:
        images, annotations = [], []
        for n, (rel, c) in enumerate(items):
            images.append({"id": first_id + n, "file_name": rel, "width": 48, "height": 40, "license": 0})
            annotations.append({"id": first_id + n, "image_id": first_id + n, "category_id": c})
        return {"info": {"year": 2018}, "images": images, "annotations": annotations, "categories": categories, "licenses": []}

    (root / "train2018.json").write_text(json.dumps(coco(train, 100)))
    (root / "val2018.json").write_text(json.dumps(coco(val, 5000)))
    val_list = write_list(root / "iNaturalist18_val.txt", val)
    return {
        "data_dir": str(root),
        "train_list": write_list(root / "iNaturalist18_train.txt", train),
        "val_list": val_list,
        "test_list": val_list,
        "train_json": str(root / "train2018.json"),
        "val_json": str(root / "val2018.json"),
        "num_classes": k,
        "image_size": FIXTURE_IMAGE_SIZE,
    }
