"""BoostedCL costs, measured against baselines taken in the same run (compare ratios).

1. Per-worker data throughput (images/s, one process, 1 torch thread, as in a DataLoader worker):
   the boosted two-view pipeline (BCL-I k=1 and BCL-D k=2) at w = 0, w ~ U(0,1) and w = 1,
   against the plain SimCLR CIFAR augmentation (same crop scale (0.1, 1), bicubic). Target:
   boosted at w ~ U(0,1) >= 0.9x SimCLR. Cells are interleaved over rounds; best round kept.
2. The momentum update per step (batch 512, N = 9,754: de-duplication + EMA scatter) and the
   epoch-end weights (amortised over 20 steps), against one BoostedCL training step (ResNet-18,
   CIFAR stem, SGD) measured here, and against the official per-sample Python loop.

    python benchmarks/bench_boosted_aug.py [--samples 500] [--rounds 8] [--step-batch 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import PIL.Image
import torch
from torchvision.transforms import InterpolationMode

from ltcl_lightning.data.boosted import BoostedViews
from ltcl_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, simclr_augmentation
from ltcl_lightning.methods.boosted_cl import BoostedCL
from ltcl_lightning.modules.momentum import MomentumLoss, momentum_weights


def throughput(fn, images, weights) -> float:
    t = time.perf_counter()
    for img, w in zip(images, weights):
        fn(img, w)
    return 2 * len(images) / (time.perf_counter() - t)  # two views per sample


def bench_data(samples: int, rounds: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(samples)]
    plain = simclr_augmentation(32, IMAGENET_MEAN, IMAGENET_STD, scale=(0.1, 1.0), interpolation=InterpolationMode.BICUBIC)
    cells = {"SimCLR": (lambda img, w: [plain(img), plain(img)], None)}
    for k, name in ((1, "BCL-I"), (2, "BCL-D")):
        views = BoostedViews(rand_k=k)
        for label, w in (("w=0", np.zeros(samples)), ("w~U(0,1)", rng.random(samples)), ("w=1", np.ones(samples))):
            cells[f"{name} {label}"] = (views, w)
    best = {name: 0.0 for name in cells}
    names = list(cells)
    for name in names:  # warm-up (first-call costs, caches)
        fn, w = cells[name]
        throughput(fn, images[:100], w[:100] if w is not None else np.zeros(100))
    for r in range(rounds):
        for name in np.random.default_rng(r).permutation(names):  # a different order each round
            fn, w = cells[name]
            best[name] = max(best[name], throughput(fn, images, w if w is not None else np.zeros(samples)))
    return best


def bench_update(step_batch: int, repeats: int = 200) -> dict[str, float]:
    n, b, steps_per_epoch = 9754, 512, 20
    memory = MomentumLoss(n)
    mem = memory.loss
    perm = torch.randperm(n)
    loss = torch.rand(b) + 1
    for e in range(2):  # warm-up, and the EMA branch (epoch > 0)
        memory.update(perm[:b], loss, e)
    t = time.perf_counter()
    for r in range(repeats):
        memory.update(perm[(r % 19) * b : (r % 19 + 1) * b], loss, 2 + r // 19)
    update_ms = (time.perf_counter() - t) / repeats * 1e3
    t = time.perf_counter()
    for _ in range(repeats):
        momentum_weights(mem)
    weights_ms = (time.perf_counter() - t) / repeats * 1e3

    # the official loop (train.py:146-153) for comparison
    shadow, idx = torch.zeros(n), perm[:b]
    t = time.perf_counter()
    for i in range(b):
        shadow[idx[i]] = (1 - 0.97) * loss[i] + 0.97 * shadow[idx[i]]
    loop_ms = (time.perf_counter() - t) * 1e3

    torch.manual_seed(0)
    model = BoostedCL(num_classes=100, backbone="resnet18_cifar", num_samples=n)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    views = [torch.rand(step_batch, 3, 32, 32), torch.rand(step_batch, 3, 32, 32)]
    idx_b, tgt = torch.arange(step_batch), torch.zeros(step_batch, dtype=torch.long)
    times = []
    for _ in range(3):
        t = time.perf_counter()
        opt.zero_grad()
        model.training_loss(idx_b, views, tgt)["loss"].backward()
        opt.step()
        times.append(time.perf_counter() - t)
    step_ms = min(times[1:]) * 1e3
    return {
        "update_ms": update_ms,
        "weights_ms_per_step": weights_ms / steps_per_epoch,
        "loop_ms": loop_ms,
        "step_ms": step_ms,
        "step_batch": step_batch,
    }


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--samples", type=int, default=500)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--step-batch", type=int, default=32)
    args = p.parse_args()
    torch.set_num_threads(1)
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, "
        f"torch {torch.__version__}, Pillow {PIL.__version__}, 1 torch thread"
    )
    data = bench_data(args.samples, args.rounds)
    base = data["SimCLR"]
    print(f"\nper-worker throughput ({args.samples} samples x 2 views, best of {args.rounds} rounds)")
    print(f"{'pipeline':<20}{'images/s':>10}{'vs SimCLR':>11}")
    for name, v in data.items():
        print(f"{name:<20}{v:>10.0f}{v / base:>10.2f}x")
    up = bench_update(args.step_batch)
    per_step = up["update_ms"] + up["weights_ms_per_step"]
    print(
        f"\nmomentum update, batch 512, N 9754: {up['update_ms']:.3f} ms/step + weights {up['weights_ms_per_step']:.4f} ms/step "
        f"(epoch-end cost / 20 steps); official per-sample loop {up['loop_ms']:.1f} ms/step ({up['loop_ms'] / up['update_ms']:.0f}x)"
    )
    print(
        f"one BoostedCL ResNet-18 step at batch {up['step_batch']} (CPU, 1 thread): {up['step_ms']:.0f} ms -> "
        f"update = {100 * per_step / up['step_ms']:.4f} % of a step (a batch-512 step is ~16x longer)"
    )


if __name__ == "__main__":
    main()
