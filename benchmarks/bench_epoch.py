"""End-to-end epoch time of every CIFAR-100-LT recipe, worker path vs device path, and the
augmentation alone, batched vs per sample. One command, whatever device is present:

    python benchmarks/bench_epoch.py                     # GPU: full epochs, the recipes' backbones, bf16
    python benchmarks/bench_epoch.py --batches 6         # CPU: a few batches per epoch, tiny backbone

Part 1 (the augmentation alone): views/s of the per-sample worker pipeline (torchvision v2 on
PIL images, one process, one thread: what one loader worker does) and of the batched pipeline
(``Augmentation.batched`` on a uint8 batch; on the CPU with one thread, so both are per core;
on a GPU on the device).

Part 2 (training): each recipe of ``experiments/cifar100_lt/`` through the ``ltcl`` CLI's own
config parsing, ``--epochs`` epochs with the worker backend (``num_workers`` loader processes,
PIL per sample) and with ``device_resident=true`` (batched on the device); the last epoch is
timed (the first includes start-up and, with ``--compile``, compilation), plus one evaluation
pass amortised over 10 epochs (the recipes evaluate every 10-20 epochs). Views/s = training
views of the timed epoch / its time.

The data is a CIFAR-100 archive written in the real format with random pixels (timings do not
depend on the content) unless ``--data_dir`` names a real one (with generated labels the
published split files are used without their label check: they are long-tailed only under the
real labels, but their sizes are what the timing needs). On the CPU the recipes'
backbones are replaced by ``tiny`` (``--backbone`` to choose); the table says which was used.
"""

from __future__ import annotations

import argparse
import os
import pickle
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

REPO = Path(__file__).resolve().parents[1]
RECIPES = ["simclr", "sdclr", "boosted_cl_i", "boosted_cl_d", "supcon", "ce", "balanced_cl", "proco"]


def write_cifar100(root: Path) -> Path:
    """cifar-100-python/ with 50,000 train and 10,000 test images of random pixels (real format)."""
    folder = root / "cifar-100-python"
    if (folder / "train").exists():
        return root
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", 50000), ("test", 10000)):
        labels = (np.arange(n) % 100).tolist()
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        with open(folder / name, "wb") as f:
            pickle.dump({"filenames": ["x.png"] * n, "fine_labels": labels, "coarse_labels": [x // 5 for x in labels], "data": data}, f)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}, f)
    return root


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ----- part 1: the augmentation alone --------------------------------------------------------
def bench_augment(device: torch.device, n: int, batch: int) -> list[tuple[str, float, float]]:
    from ltcl_lightning.data.boosted import BoostedViews
    from ltcl_lightning.data.transforms import CIFAR_MEAN, CIFAR_STD, PRESETS, build_view

    rng = np.random.default_rng(0)
    arrays = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    pils = [PIL.Image.fromarray(a) for a in arrays]
    x_host = torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # per core on the CPU (a loader worker runs one thread)
    rows = []
    try:
        cases = [(name, PRESETS[name]()) for name in ("simclr_bicubic", "simclr", "crop_flip", "autoaugment_cutout")]
        for name, aug in cases:
            per_sample = build_view(aug, 32, CIFAR_MEAN, CIFAR_STD)
            t = time.perf_counter()
            for img in pils:
                per_sample(img)
            ps = n / (time.perf_counter() - t)
            rows.append((name, ps, _batched_rate(lambda xb, g, aug=aug: aug.batched(xb, g, 32), x_host, device, batch)))
        for k, label in ((1, "boosted BCL-I (w ~ U(0,1))"), (2, "boosted BCL-D (w ~ U(0,1))")):
            views = BoostedViews(32, rand_k=k)
            w = torch.rand(n)
            t = time.perf_counter()
            for img, wi in zip(pils, w.tolist()):
                views(img, wi)
            ps = 2 * n / (time.perf_counter() - t)
            wd = w.to(device)

            def fn(xb, g, views=views, wd=wd):
                return views.batched(xb, wd[: xb.shape[0]], g, 32)

            rows.append((label, ps, 2 * _batched_rate(fn, x_host, device, batch)))
    finally:
        torch.set_num_threads(threads)
    return rows


def _batched_rate(fn, x_host: torch.Tensor, device: torch.device, batch: int) -> float:
    x = x_host[:batch].to(device).float()
    g = torch.Generator(device=device).manual_seed(0)
    fn(x, g)  # warm-up
    sync(device)
    reps = max(1, len(x_host) // batch)
    t = time.perf_counter()
    for _ in range(reps):
        fn(x, g)
    sync(device)
    return reps * batch / (time.perf_counter() - t)


# ----- part 2: training epochs ---------------------------------------------------------------
class EpochTimer:
    def __init__(self, device):
        self.device, self.times, self.views = device, [], 0
        import lightning.pytorch as pl

        timer = self

        class _CB(pl.Callback):
            def on_train_epoch_start(self, trainer, pl_module):
                sync(timer.device)
                timer._t = time.perf_counter()
                timer._views = 0

            def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
                timer._views += int(outputs["index"].numel()) * timer.n_views

            def on_train_epoch_end(self, trainer, pl_module):
                sync(timer.device)
                timer.times.append(time.perf_counter() - timer._t)
                timer.views = timer._views

        self.callback = _CB()
        self.n_views = 2


def run_recipe(name: str, device_resident: bool, args, data_dir: str, accelerator: str) -> tuple[float, float, float]:
    import yaml

    from ltcl_lightning.cli import cli_main

    config = REPO / "experiments" / "cifar100_lt" / f"{name}.yaml"
    cfg = yaml.safe_load(config.read_text())
    overrides = [
        "--config",
        str(config),
        f"--trainer.max_epochs={args.epochs}",
        f"--trainer.accelerator={accelerator}",
        # the recipe's listed callbacks (summary table, checkpoints) go; the ones a method needs
        # for its state (re-pruning, momentum weights, vMF) it adds itself and they are timed
        "--trainer.devices=1",
        "--trainer.logger=false",
        "--trainer.callbacks=[]",
        "--trainer.enable_checkpointing=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.limit_val_batches=0",
        "--trainer.num_sanity_val_steps=0",
        f"--trainer.precision={args.precision}",
        f"--trainer.default_root_dir={tempfile.mkdtemp()}",
        f"--data.init_args.data_dir={data_dir}",
        f"--data.init_args.device_resident={str(device_resident).lower()}",
        f"--data.init_args.num_workers={0 if device_resident else args.workers}",
        f"--data.init_args.persistent_workers={'false' if device_resident else 'true'}",
    ]
    if args.synthetic:
        # generated pixels carry generated labels, under which the published splits are not
        # long-tailed (and are refused as foreign): use them anyway, the sizes are what matters
        overrides.append("--data.init_args.check_split_labels=false")
    if args.batches:
        overrides.append(f"--trainer.limit_train_batches={args.batches}")
    if args.batch_size:
        overrides.append(f"--data.init_args.batch_size={args.batch_size}")
    if args.backbone:
        overrides.append(f"--model.init_args.backbone={args.backbone}")
    if args.compile and device_resident:
        overrides += [
            "--trainer.callbacks+=ltcl_lightning.callbacks.compute.ComputeSwitches",
            "--trainer.callbacks.channels_last=true",
            "--trainer.callbacks.compile=step",
        ]
    cli = cli_main(overrides, run=False)
    dev = torch.device("cuda" if accelerator == "gpu" else "cpu")
    timer = EpochTimer(dev)
    timer.n_views = len(cfg["data"]["init_args"].get("train_views", ["simclr", "simclr"]))
    cli.trainer.callbacks.append(timer.callback)
    cli.trainer.fit(cli.model, cli.datamodule)
    epoch = timer.times[-1]
    # one evaluation pass over the 10,000 test images, amortised over 10 epochs
    dm = cli.datamodule
    dm.setup("validate")
    loader = dm.val_dataloader()
    model = cli.model.to(dev).eval()
    sync(dev)
    t = time.perf_counter()
    with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.precision.startswith("bf16")):
        for batch in loader:
            batch = dm.on_after_batch_transfer(dm.transfer_batch_to_device(batch, dev, 0), 0)
            model.classify(batch[1][0])
    sync(dev)
    evaluation = time.perf_counter() - t
    return epoch, timer.views / epoch, evaluation


def main(argv: list[str] | None = None) -> None:
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_dir", default=None, help="folder with a real cifar-100-python/ (default: a generated one)")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batches", type=int, default=0 if gpu else 6, help="limit_train_batches (0: full epochs)")
    p.add_argument("--batch_size", type=int, default=0, help="override the recipes' batch size (0: as published)")
    p.add_argument("--backbone", default=None if gpu else "tiny", help="override the recipes' backbones")
    p.add_argument("--precision", default="bf16-mixed" if gpu else "32-true")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--compile", action="store_true", help="device path with channels_last + torch.compile of the step")
    p.add_argument("--recipes", nargs="*", default=RECIPES)
    p.add_argument("--skip_training", action="store_true")
    p.add_argument("--aug_images", type=int, default=2048)
    args = p.parse_args(argv)
    device = torch.device("cuda" if gpu else "cpu")
    name = torch.cuda.get_device_name(0) if gpu else platform.processor() or platform.machine()
    print(
        f"# bench_epoch: {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, {name}, "
        f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}, argv {' '.join(sys.argv[1:]) or '(defaults)'}"
    )

    print(
        "\n## Augmentation alone (views/s; per-sample: one process, one thread; batched: batch 256, "
        f"{'on the GPU' if gpu else 'one CPU thread'})\n"
    )
    print("| view | per-sample views/s | batched views/s | batched / per-sample |\n|---|---:|---:|---:|")
    for view, ps, b in bench_augment(device, args.aug_images, 256):
        print(f"| {view} | {ps:,.0f} | {b:,.0f} | x{b / ps:.1f} |")

    if args.skip_training:
        return
    args.synthetic = args.data_dir is None
    data_dir = args.data_dir or str(write_cifar100(Path(tempfile.gettempdir()) / "ltcl_bench_cifar100"))
    accelerator = "gpu" if gpu else "cpu"
    print(
        f"\n## Training (backbone: {args.backbone or 'as in the recipes'}, precision {args.precision}, "
        f"{'full epochs' if not args.batches else f'{args.batches} batches per epoch'}, worker path with "
        f"{args.workers} workers; epoch = the last of {args.epochs}; eval = one pass over the 10,000 test images / 10)\n"
    )
    print(
        "| recipe | worker s/epoch | worker views/s | device s/epoch | device views/s | device x worker | "
        "device s/epoch + eval/10 |\n|---|---:|---:|---:|---:|---:|---:|"
    )
    for recipe in args.recipes:
        w_epoch, w_rate, _ = run_recipe(recipe, False, args, data_dir, accelerator)
        d_epoch, d_rate, d_eval = run_recipe(recipe, True, args, data_dir, accelerator)
        print(
            f"| {recipe} | {w_epoch:.2f} | {w_rate:,.0f} | {d_epoch:.2f} | {d_rate:,.0f} | x{d_rate / w_rate:.1f} | "
            f"{d_epoch + d_eval / 10:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
