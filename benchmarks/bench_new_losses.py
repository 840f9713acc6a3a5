"""Loss-step speed of the issue-14 losses against NT-Xent / SupCon, measured in the same run.

One step = forward + backward of the loss alone on (B, p) unit-norm projections (no network),
functions interleaved per repeat so that machine load hits them alike. Prints min / median ms
per step and the ratio of the minima to the baseline of the row (NT-Xent for the
self-supervised losses, SupCon for the supervised ones).

    python benchmarks/bench_new_losses.py --repeats 15            # CPU
    python benchmarks/bench_new_losses.py --device cuda --repeats 50
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ltcl_lightning.losses.contrastive import nt_xent_loss, supcon_loss
from ltcl_lightning.losses.hard_negative import debiased_nt_xent_loss, hard_negative_nt_xent_loss
from ltcl_lightning.losses.kcl import kcl_loss
from ltcl_lightning.losses.paco import paco_loss
from ltcl_lightning.losses.queue import queue_supcon_loss


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def cases(b: int, p: int, c: int, k: int, device: torch.device) -> dict[str, tuple[str, Callable[[], torch.Tensor]]]:
    g = torch.Generator(device="cpu").manual_seed(0)
    x1 = torch.randn(b, p, generator=g).to(device).requires_grad_()
    x2 = torch.randn(b, p, generator=g).to(device).requires_grad_()
    labels = torch.randint(0, c, (b,), generator=g).to(device)
    queue = F.normalize(torch.randn(k, p, generator=g), dim=1).to(device)
    queue_labels = torch.randint(0, c, (k,), generator=g).to(device)

    centre = torch.randn(2 * b, c, generator=g).to(device).requires_grad_()
    log_prior = torch.log(torch.rand(c, generator=g) + 0.1).to(device)

    scores = torch.rand(b, k, generator=g).to(device)
    targets = F.normalize(torch.randn(c, p, generator=g), dim=1).to(device)
    target_pos = F.one_hot(labels, c).bool()

    def z():
        return F.normalize(x1, dim=1), F.normalize(x2, dim=1)

    return {
        "NT-Xent": ("ssl", lambda: nt_xent_loss(*z(), 0.2)),
        "HCL (beta 1, tau+ 0.1)": ("ssl", lambda: hard_negative_nt_xent_loss(*z(), 0.2, 0.1, 1.0)),
        "DCL (tau+ 0.1)": ("ssl", lambda: debiased_nt_xent_loss(*z(), 0.2, 0.1)),
        "SupCon": ("sup", lambda: supcon_loss(list(z()), labels, 0.1)),
        f"queue SupCon (K {k})": ("sup", lambda: queue_supcon_loss(z()[0], z()[1].detach(), labels, queue, queue_labels, 0.1)),
        f"PaCo (K {k})": (
            "sup",
            lambda: paco_loss(z()[0], z()[1], labels, centre[:b], queue, queue_labels, 0.1, 0.05, log_prior=log_prior),
        ),
        f"KCL (K {k}, k 6)": ("sup", lambda: sum(kcl_loss(z()[0], z()[1], labels, queue, queue_labels, 0.07, 6, scores))),
        f"TSC (K {k}, k 6)": (
            "sup",
            lambda: sum(kcl_loss(z()[0], z()[1], labels, queue, queue_labels, 0.07, 6, scores, targets, target_pos, 0.2)),
        ),
        f"GPaCo (K {k})": (
            "sup",
            lambda: paco_loss(*z(), labels, centre, queue, queue_labels, 0.1, 0.05, log_prior=log_prior, anchors="both"),
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--sizes", default="256,512", help="comma-separated batch sizes B")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--queue", type=int, default=1024)
    args = ap.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}, p {args.dim}")
    print("| B | loss | min ms | median ms | x baseline (min) |\n|---:|---|---:|---:|---:|")
    for b in (int(s) for s in args.sizes.split(",")):
        fns = cases(b, args.dim, args.classes, args.queue, device)
        times: dict[str, list[float]] = {name: [] for name in fns}
        for r in range(args.repeats + 2):  # two warm-up rounds
            for name, (_, fn) in fns.items():
                _sync(device)
                t0 = time.perf_counter()
                fn().backward()
                _sync(device)
                if r >= 2:
                    times[name].append((time.perf_counter() - t0) * 1e3)
        base = {"ssl": min(times["NT-Xent"]), "sup": min(times["SupCon"])}
        for name, (kind, _) in fns.items():
            t = times[name]
            print(f"| {b} | {name} | {min(t):.2f} | {statistics.median(t):.2f} | {min(t) / base[kind]:.2f} |")


if __name__ == "__main__":
    main()
