"""List-file parsing and decode + augment throughput, each against a baseline run in the same process.

1. Parsing a generated 437,513-line iNaturalist-2018-style train list (8,142 classes, 1,000 ... 2
   images per class): ``read_list_file`` (numpy on the byte buffer) against the plain Python loop
   (``line.rsplit()`` into lists of str / int). Time (median of repeats), peak and retained memory
   (tracemalloc).
2. Decode + augment at 224 px in one process (= images/s per DataLoader worker): the list-file
   dataset with the datamodule's views against ``torchvision.datasets.ImageFolder`` with the same
   transform over the same JPEG files.

    python benchmarks/bench_listfile.py [--images 256] [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from ltcl_lightning.data.base import IndexedDataset
from ltcl_lightning.data.listfile import ListFileDataset, read_list_file
from ltcl_lightning.data.longtail import class_counts_from_profile
from ltcl_lightning.data.transforms import INAT_MEAN, INAT_STD, MultiView, build_view

INAT_TRAIN = 437_513
INAT_CLASSES = 8_142


def inat_like_counts() -> np.ndarray:
    """8,142 counts, max 1,000, min 2, summing to 437,513: an exponential profile 1000 -> 2
    (sum 1.31M) scaled down in its middle so the extremes keep the published values."""
    c = np.asarray(class_counts_from_profile(INAT_CLASSES, 1000, 500), dtype=np.float64)
    mid = slice(1, INAT_CLASSES - 1)
    target_mid = INAT_TRAIN - c[0] - c[-1]
    c[mid] = np.maximum(2, np.floor(c[mid] * target_mid / c[mid].sum()))
    c = c.astype(np.int64)
    rem = int(INAT_TRAIN - c.sum())  # the floors' shortfall: one more image for the next classes
    c[1 : 1 + abs(rem)] += np.sign(rem)
    assert c.sum() == INAT_TRAIN and c.max() == 1000 and c.min() == 2
    return c


def write_inat_list(path: Path) -> None:
    counts = inat_like_counts()
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.repeat(np.arange(INAT_CLASSES), counts))
    kingdoms = ("Plantae", "Insecta", "Aves", "Reptilia", "Mammalia", "Fungi", "Amphibia")
    lines = [
        f"train_val2018/{kingdoms[c % 7]}/{c}/{hashlib.md5(str(i).encode()).hexdigest()}.jpg {c}\n" for i, c in enumerate(labels.tolist())
    ]
    path.write_text("".join(lines))


def python_parse(path: Path):
    paths, labels = [], []
    with open(path) as f:
        for line in f:
            if line.strip():
                p, lab = line.rsplit(None, 1)
                paths.append(p)
                labels.append(int(lab))
    return paths, labels


def measure(fn, repeats: int):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
        del out
    tracemalloc.start()
    out = fn()
    current, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del out
    return statistics.median(times), current, peak


def write_jpegs(root: Path, n: int, classes: int = 8) -> list[tuple[str, int]]:
    """ImageNet-sized JPEGs (500x375, quality 90) of smooth colour fields plus texture, so that
    decoding costs what a photo costs (noise alone would make the files unrealistically large)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:375, 0:500].astype(np.float32)
    entries = []
    for i in range(n):
        c = i % classes
        a, b, ph = rng.uniform(0.005, 0.03, 3)
        base = np.stack([128 + 100 * np.sin(a * xx + ph + k) * np.cos(b * yy + k) for k in range(3)], -1)
        img = (base + rng.normal(0, 12, base.shape)).clip(0, 255).astype(np.uint8)
        rel = f"class{c:02d}/img_{i:05d}.JPEG"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(root / rel, quality=90)
        entries.append((rel, c))
    return entries


def throughput(dataset, n: int, repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        t = time.perf_counter()
        for i in range(n):
            dataset[i]
        rates.append(n / (time.perf_counter() - t))
    return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (one DataLoader worker uses 1)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"machine: {platform.node()} {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__}, numpy {np.__version__}, torch threads {args.threads}"
    )

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lst = tmp / "iNaturalist18_train.txt"
        write_inat_list(lst)
        print(f"\n[1] parse {INAT_TRAIN:,}-line list ({lst.stat().st_size / 2**20:.1f} MiB)")
        t_np, cur_np, peak_np = measure(lambda: read_list_file(lst), args.repeats)
        t_py, cur_py, peak_py = measure(lambda: python_parse(lst), args.repeats)
        lf = read_list_file(lst)
        ref_paths, ref_labels = python_parse(lst)
        assert lf.labels.tolist() == ref_labels and lf.path(12345) == ref_paths[12345]
        counts = np.bincount(lf.labels)
        print(f"  parsed: {len(lf):,} images, {len(counts):,} classes, max {counts.max()}, min {counts.min()}")
        print(f"  read_list_file : {t_np * 1e3:8.1f} ms   retained {cur_np / 2**20:6.1f} MiB   peak {peak_np / 2**20:6.1f} MiB")
        print(f"  python rsplit  : {t_py * 1e3:8.1f} ms   retained {cur_py / 2**20:6.1f} MiB   peak {peak_py / 2**20:6.1f} MiB")
        print(f"  speed-up {t_py / t_np:.1f}x, retained memory {cur_py / cur_np:.1f}x smaller")

        print(f"\n[2] decode + augment at 224 px, {args.images} JPEGs of 500x375, one process")
        img_root = tmp / "images"
        entries = write_jpegs(img_root, args.images)
        (tmp / "list.txt").write_text("".join(f"{p} {c}\n" for p, c in entries))
        from torchvision.datasets import ImageFolder

        for views in (["eval"], ["randaugment"], ["simclr", "simclr"]):
            if views == ["eval"]:
                from ltcl_lightning.data.transforms import eval_transform

                transform = MultiView([eval_transform(224, INAT_MEAN, INAT_STD, resize=256)])
            else:
                transform = MultiView([build_view(v, 224, INAT_MEAN, INAT_STD) for v in views])
            ours_lf = read_list_file(tmp / "list.txt")
            ours = IndexedDataset(ListFileDataset(str(img_root), ours_lf), ours_lf.labels, transform)
            base = ImageFolder(str(img_root), transform=transform)
            ours[0], base[0]  # warm-up
            r_ours = throughput(ours, args.images, args.repeats)
            r_base = throughput(base, args.images, args.repeats)
            print(
                f"  views {'+'.join(views):15s}: list file {r_ours:7.1f} img/s   ImageFolder {r_base:7.1f} img/s   "
                f"ratio {r_ours / r_base:.2f}"
            )


if __name__ == "__main__":
    main()
