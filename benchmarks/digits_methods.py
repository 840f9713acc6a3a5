"""Every method on the offline Digits-LT data (real 8x8 digits, imbalance factor 10), same
seed, tiny backbone, CPU: a smoke test of learning, not of the papers' accuracy.

    .venv/bin/python benchmarks/digits_methods.py --epochs 30

Prints last- and best-epoch overall / Many / Medium / Few (thirds) accuracy on the balanced
300-image test split, and seconds per run. Self-supervised methods are read through their
online linear probe (trained on detached features during pre-training), supervised ones
through their classifier.
"""

from __future__ import annotations

import argparse
import time

import lightning.pytorch as pl
import torch
from torchvision.transforms import v2

from ltcl_lightning.callbacks.temperature import TemperatureSchedule
from ltcl_lightning.data.boosted import BoostedDataModuleMixin
from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.longtail import format_table
from ltcl_lightning.methods import SDCLR, BalancedCL, BoostedCL, CrossEntropy, ProCo, SimCLR, SupCon
from ltcl_lightning.methods.hard_negative import DebiasedSimCLR, HardNegativeSimCLR
from ltcl_lightning.methods.kcl import KCL, TSC
from ltcl_lightning.methods.paco import GPaCo, PaCo
from ltcl_lightning.optim.schedules import WarmupCosine


class _PILFirst:
    """BoostedCL's RandAugment ops are PIL ops (as in the reference); Digits images are tensors."""

    def __init__(self, views):
        self.views, self.to_pil = views, v2.ToPILImage()

    def __call__(self, img, weight):
        return self.views(self.to_pil(img), weight)


class BoostedDigitsLT(BoostedDataModuleMixin, DigitsLTDataModule):
    def __init__(self, rand_k: int = 1, **kwargs):
        super().__init__(rand_k=rand_k, rand_strength=30.0, crop_scale=(0.5, 1.0), **kwargs)

    def train_transform(self):
        return _PILFirst(super().train_transform())


def sgd(lr: float, wd: float = 5e-4):
    return lambda p: torch.optim.SGD(p, lr=lr, momentum=0.9, weight_decay=wd)


def runs(n_train: int):
    ssl = dict(backbone="tiny", grouping="thirds", lr_schedule=WarmupCosine(2), proj_hidden_dim=128, proj_dim=64)
    sup = dict(backbone="tiny", grouping="thirds", lr_schedule=WarmupCosine(2))
    two = lambda: DigitsLTDataModule(train_views=["crop_flip", "digits", "digits"])
    return {
        "SimCLR": (lambda: SimCLR(10, optimizer=sgd(0.3), **ssl), DigitsLTDataModule),
        "SupCon": (lambda: SupCon(10, optimizer=sgd(0.3), temperature=0.1, **ssl), DigitsLTDataModule),
        "SDCLR (ratio 0.9)": (lambda: SDCLR(10, optimizer=sgd(0.3, 1e-4), **ssl), DigitsLTDataModule),
        "BoostedCL (BCL-I)": (lambda: BoostedCL(10, optimizer=sgd(0.3), num_samples=n_train, **ssl), lambda: BoostedDigitsLT(rand_k=1)),
        "CE + logit adj.": (
            lambda: CrossEntropy(10, optimizer=sgd(0.1), logit_adjust_tau=1.0, **sup),
            lambda: DigitsLTDataModule(train_views=["crop_flip"]),
        ),
        "BalancedCL": (lambda: BalancedCL(10, optimizer=sgd(0.1), proj_hidden_dim=128, proj_dim=64, **sup), two),
        "ProCo": (lambda: ProCo(10, optimizer=sgd(0.1), proj_hidden_dim=128, proj_dim=64, **sup), two),
        # t_max 3 of 30 epochs: the official 200 of 2000
        "SimCLR + TS": (
            lambda: SimCLR(10, optimizer=sgd(0.3), **ssl),
            DigitsLTDataModule,
            [TemperatureSchedule(tau_min=0.1, tau_max=1.0, t_max=3)],
        ),
        "HCL (SimCLR)": (lambda: HardNegativeSimCLR(10, optimizer=sgd(0.3), tau_plus=0.1, beta=1.0, **ssl), DigitsLTDataModule),
        "DCL (SimCLR)": (lambda: DebiasedSimCLR(10, optimizer=sgd(0.3), tau_plus=0.1, **ssl), DigitsLTDataModule),
        "PaCo": (
            lambda: PaCo(10, optimizer=sgd(0.1), proj_dim=32, queue_size=256, temperature=0.1, alpha=0.05, **sup),
            lambda: DigitsLTDataModule(train_views=["crop_flip", "digits"]),
        ),
        "KCL": (lambda: KCL(10, optimizer=sgd(0.3), proj_dim=64, queue_size=256, temperature=0.1, **sup), DigitsLTDataModule),
        "TSC": (
            lambda: TSC(10, optimizer=sgd(0.3), proj_dim=64, queue_size=256, temperature=0.1, target_steps=1000, **sup),
            DigitsLTDataModule,
        ),
        "GPaCo": (
            lambda: GPaCo(10, optimizer=sgd(0.1), proj_dim=32, queue_size=256, temperature=0.1, alpha=0.05, **sup),
            lambda: DigitsLTDataModule(train_views=["crop_flip", "digits"]),
        ),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--only", default="", help="comma-separated run names (default: all)")
    args = ap.parse_args()
    n_train = sum(DigitsLTDataModule().class_counts)
    rows, secs = {}, {}
    for name, (make_model, make_data, *callbacks) in runs(n_train).items():
        if args.only and name not in args.only.split(","):
            continue
        pl.seed_everything(0, verbose=False)
        model, dm = make_model(), make_data()
        trainer = pl.Trainer(
            accelerator="cpu",
            devices=1,
            max_epochs=args.epochs,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            callbacks=callbacks[0] if callbacks else None,
        )
        t0 = time.perf_counter()
        trainer.fit(model, dm)
        secs[name] = time.perf_counter() - t0
        rows[f"{name} last"] = model.last_eval["val"]
        rows[f"{name} best"] = model.last_eval.get("val_best", model.last_eval["val"])
        print(f"{name}: {secs[name]:.1f} s", flush=True)
    print(f"\nDigits-LT (IF 10, {n_train} train / 300 test images), {args.epochs} epochs, accuracy in %:")
    print(format_table(rows))


if __name__ == "__main__":
    main()
