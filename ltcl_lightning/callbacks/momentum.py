"""``MomentumWeightUpdate``: the per-step and per-epoch driver of BoostedCL's momentum loss.

The equations, the state and the DDP gather / de-duplication live in
:class:`~ltcl_lightning.modules.momentum.MomentumLoss` (spec boosted_cl.md a, b, h); this callback
finds that module by type and calls ``update(index, per_sample_loss, epoch)`` every step,
``end_epoch`` at every epoch end and ``start_epoch`` (idempotent) at the start of training and of
every epoch, so that a resume from any checkpoint augments with the weights an uninterrupted
run uses; the weights reach the loader and its workers through ``set_sample_weights`` of the
datamodule or the training dataset (``ltcl_lightning.data.boosted``).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from ltcl_lightning.modules import state_modules
from ltcl_lightning.modules.momentum import MomentumLoss


class MomentumWeightUpdate(pl.Callback):
    """Drives the LightningModule's :class:`MomentumLoss`; holds no state and no hyper-parameter
    (beta is the module's). BoostedCL / BoostedSDCLR add it themselves."""

    @staticmethod
    def momentum(pl_module: torch.nn.Module) -> MomentumLoss:
        return state_modules(pl_module, MomentumLoss, "MomentumWeightUpdate", "BoostedCL, BoostedSDCLR")[0]

    @staticmethod
    def weight_sink(trainer: pl.Trainer):
        """The object whose ``set_sample_weights`` feeds the training loader."""
        candidates = [getattr(trainer, "datamodule", None)]
        try:
            loader = trainer.train_dataloader
        except Exception:  # not built yet
            loader = None
        candidates.append(getattr(loader, "dataset", None))
        for c in candidates:
            if c is not None and callable(getattr(c, "set_sample_weights", None)):
                return c
        raise TypeError(
            "BoostedCL needs training data that applies the boosted augmentation: a datamodule or dataset "
            f"with set_sample_weights(), e.g. ltcl_lightning.data.boosted.BoostedCIFAR100LTDataModule; got "
            f"datamodule {type(candidates[0]).__name__}. Without it the weights never reach the "
            "augmentation and BoostedCL trains as plain SimCLR."
        )

    def publish(self, trainer: pl.Trainer, weights: torch.Tensor) -> None:
        self.weight_sink(trainer).set_sample_weights(weights.detach().cpu())

    # ----- hooks --------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.momentum(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a resume skips on_train_epoch_start (mid-epoch, and at a last-batch checkpoint)
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.publish(trainer, self.momentum(pl_module).start_epoch(trainer.current_epoch))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not isinstance(outputs, dict) or "per_sample_loss" not in outputs or "index" not in outputs:
            raise KeyError(
                f"{type(pl_module).__name__}.training_step must return 'index' and 'per_sample_loss' "
                "(training_loss returns per_sample_loss, the base step passes it on)"
            )
        self.momentum(pl_module).update(outputs["index"], outputs["per_sample_loss"], trainer.current_epoch)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.publish(trainer, self.momentum(pl_module).end_epoch(trainer.current_epoch))
