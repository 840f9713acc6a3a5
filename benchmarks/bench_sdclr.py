"""SDCLR cost against SimCLR, measured in one run on the same machine and batch.

Times (forward + loss + backward + SGD step, training_loss only, no online probe):
  * SimCLR step: plain backbone, both views in one forward of 2B (the reference SimCLR);
  * SDCLR step: masked backbone with dual BN, dense(v1) + pruned(v2), one backward;
  * mask recomputation (global kthvalue threshold + applying the masks) for ResNet-18 CIFAR
    and ResNet-50, next to the reference's method (host copy + numpy full sort) and one
    ResNet-50 SDCLR training step.
Variants are interleaved round-robin; min and median wall seconds are printed.

    python benchmarks/bench_sdclr.py --batch 64 --repeats 5            # CPU
    python benchmarks/bench_sdclr.py --device cuda --batch 512 --r50-batch 128
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from ltcl_lightning.methods.sdclr import SDCLR
from ltcl_lightning.methods.simclr import SimCLR
from ltcl_lightning.modules.pruning import masked_convs, prune_global


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timeit(fn, device) -> float:
    _sync(device)
    t = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t


def _step_fn(model, batch, opt):
    index, views, target = batch

    def step():
        opt.zero_grad(set_to_none=True)
        model.training_loss(index, views, target)["loss"].backward()
        opt.step()

    return step


def _reference_numpy_threshold(model) -> None:
    """The reference: every weight copied to the host, concatenated, fully sorted."""
    layers = list(masked_convs(model.backbone).values())
    flat = np.concatenate([m.weight.detach().abs().cpu().numpy().ravel() for m in layers])
    k = int(np.ceil(model.backbone.ratio * flat.size))
    thr = np.sort(flat)[min(k, flat.size - 1)]
    thr_t = torch.tensor(thr, device=layers[0].weight.device)
    for m in layers:
        m.prune_mask.copy_(m.weight.detach().abs() >= thr_t)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=64, help="images per step (2 views each)")
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--r50-batch", type=int, default=4, help="images per ResNet-50 step")
    p.add_argument("--r50-size", type=int, default=224)
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )

    def batch(b, size):
        g = torch.Generator().manual_seed(1)
        views = [torch.randn(b, 3, size, size, generator=g).to(device) for _ in range(2)]
        return torch.arange(b, device=device), views, torch.zeros(b, dtype=torch.long, device=device)

    b = batch(args.batch, args.size)
    simclr = SimCLR(num_classes=10, backbone="resnet18_cifar", head_layers=2).to(device)
    sdclr = SDCLR(num_classes=10, backbone="resnet18_cifar", head_layers=3, prune_ratio=0.9).to(device)
    sdclr2 = SDCLR(num_classes=10, backbone="resnet18_cifar", head_layers=2, prune_ratio=0.9).to(device)
    for m in (sdclr, sdclr2):
        m.backbone.recompute_masks(0)
    variants = {
        "SimCLR (2-layer head, 2B fwd)": _step_fn(simclr, b, torch.optim.SGD(simclr.parameters(), lr=0.01, momentum=0.9)),
        "SDCLR (3-layer dual-BN head)": _step_fn(sdclr, b, torch.optim.SGD(sdclr.parameters(), lr=0.01, momentum=0.9)),
        "SDCLR (2-layer dual-BN head)": _step_fn(sdclr2, b, torch.optim.SGD(sdclr2.parameters(), lr=0.01, momentum=0.9)),
        "mask recompute R18 (kthvalue)": lambda m=sdclr: prune_global(m.backbone, 0.9),
        "mask recompute R18 (reference numpy sort)": lambda m=sdclr: _reference_numpy_threshold(m),
    }
    for fn in variants.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            times[name].append(_timeit(fn, device))
    del simclr, sdclr, sdclr2

    r50 = SDCLR(num_classes=100, backbone="resnet50", proj_hidden_dim=2048, prune_ratio=0.3).to(device)
    r50.backbone.recompute_masks(0)
    b50 = batch(args.r50_batch, args.r50_size)
    r50_vars = {
        "mask recompute R50 (kthvalue)": lambda: prune_global(r50.backbone, 0.3),
        "mask recompute R50 (reference numpy sort)": lambda: _reference_numpy_threshold(r50),
        f"SDCLR R50 step (batch {args.r50_batch}, {args.r50_size}px)": _step_fn(
            r50, b50, torch.optim.SGD(r50.parameters(), lr=0.01, momentum=0.9)
        ),
    }
    for fn in r50_vars.values():
        fn()
    for name in r50_vars:
        times[name] = []
    for _ in range(max(2, args.repeats // 2)):
        for name, fn in r50_vars.items():
            times[name].append(_timeit(fn, device))

    print(f"\nbatch {args.batch} images ({2 * args.batch} views) at {args.size}px, {args.repeats} repeats")
    print(f"{'variant':<46}{'min s':>10}{'median s':>10}")
    for name, ts in times.items():
        print(f"{name:<46}{min(ts):>10.4f}{statistics.median(ts):>10.4f}")
    base = "SimCLR (2-layer head, 2B fwd)"
    for name in ("SDCLR (3-layer dual-BN head)", "SDCLR (2-layer dual-BN head)"):
        print(
            f"ratio {name} / SimCLR: min {min(times[name]) / min(times[base]):.3f}, "
            f"median {statistics.median(times[name]) / statistics.median(times[base]):.3f}"
        )
    step = [k for k in times if k.startswith("SDCLR R50 step")][0]
    print(f"ratio R50 mask recompute / R50 step: min {min(times['mask recompute R50 (kthvalue)']) / min(times[step]):.3f}")


if __name__ == "__main__":
    main()
