"""BalancedCL's contrastive branch: cost of L_BalSCL and of the head_fc prototypes.

Baseline measured in the same run: SupCon (``supcon_loss``, no gather) on the same two views.
Prints median (min) milliseconds of forward + backward and the ratio to the baseline.

    .venv/bin/python benchmarks/balanced_cl.py [--threads 2] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from ltcl_lightning.losses.balanced import balanced_contrastive_loss
from ltcl_lightning.losses.contrastive import supcon_loss
from ltcl_lightning.modules.heads import ProjectionHead


def timed(fns, repeats: int) -> list[tuple[float, float]]:
    """Median and min ms of each function; the functions alternate within every repeat so that a
    change of the machine's load hits all of them alike (this machine is shared)."""
    for fn in fns:
        fn()  # warm-up
    out: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            out[i].append((time.perf_counter() - t0) * 1e3)
    return [(statistics.median(o), min(o)) for o in out]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(
        f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, load {os.getloadavg()[0]:.2f}"
    )
    # (name, B local, C, p, d): CIFAR-100-LT recipe; ImageNet-LT / iNat per-GPU batch of the official 8 x 32
    cases = [("cifar100", 256, 100, 128, 64), ("imagenet_lt", 32, 1000, 1024, 2048), ("inat18", 32, 8142, 1024, 2048)]
    print("| case | B | C | p | SupCon ms | BalSCL ms (x SupCon) | head_fc prototypes ms (x SupCon) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, b, c, p, d in cases:
        z1 = torch.randn(b, p, requires_grad=True)
        z2 = torch.randn(b, p, requires_grad=True)
        y = torch.randint(0, c, (b,))
        w = torch.randn(c, d, requires_grad=True)
        head = ProjectionHead(d, d if d > 64 else 512, p, num_layers=2, last_bn=False)
        protos_fixed = F.normalize(torch.randn(c, p), dim=1).requires_grad_()

        # timed within this iteration, so the closures see this iteration's tensors
        def sup():
            supcon_loss([F.normalize(z1, dim=1), F.normalize(z2, dim=1)], y, 0.07, gather=False).backward()  # noqa: B023

        def bal():
            balanced_contrastive_loss([F.normalize(z1, dim=1), F.normalize(z2, dim=1)], y, protos_fixed, 0.07).backward()  # noqa: B023

        def protos():
            F.normalize(head(w), dim=1).sum().backward()  # noqa: B023

        # head_fc over 8142 x 2048 weights is ~0.3 TFLOP per step: too heavy for a shared 2-core CPU
        with_head = c <= 1000
        res = timed([sup, bal, protos] if with_head else [sup, bal], args.repeats)
        (s_med, s_min), (b_med, b_min) = res[0], res[1]
        head = f"{res[2][0]:.1f} ({res[2][1]:.1f}) x{res[2][1] / s_min:.1f}" if with_head else "not run"
        print(f"| {name} | {b} | {c} | {p} | {s_med:.2f} ({s_min:.2f}) | {b_med:.2f} ({b_min:.2f}) x{b_min / s_min:.2f} | {head} |")
    print(f"# load at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
