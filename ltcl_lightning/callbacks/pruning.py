"""``MaskRepruning``: the per-epoch driver of SDCLR's global magnitude re-pruning (spec sdclr.md (b)).

The masks, the rule and the epoch the masks belong to live in the backbone's
:class:`~ltcl_lightning.modules.pruning.PrunableNetwork`; this callback finds every such network
with a prune ratio by type and calls its idempotent ``start_epoch(epoch, every_n_epochs)`` at
the start of training and of every epoch, so a resume from any checkpoint (mid-epoch: the
restored masks; last batch: the next epoch's, from the same weights) trains with the masks of an
uninterrupted run. It logs ``prune/density``, ``prune/threshold``, ``prune/density/<layer>`` and
holds no state. SDCLR adds it itself unless ``trainer.callbacks`` lists one (to change its settings).
"""

from __future__ import annotations

import lightning.pytorch as pl

from ltcl_lightning.modules import state_modules
from ltcl_lightning.modules.pruning import PrunableNetwork


class MaskRepruning(pl.Callback):
    def __init__(self, every_n_epochs: int = 1, log_per_layer: bool = True):
        """
        Args:
            every_n_epochs: recompute the masks at the start of epochs 0, n, 2n, ... (SDCLR: 1).
            log_per_layer: also log the density of every prunable layer.
        """
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self.log_per_layer = log_per_layer

    @staticmethod
    def networks(pl_module) -> list[PrunableNetwork]:
        # the backbone's (with a prune ratio); the head's dual batch-norms have no masks to recompute
        return state_modules(pl_module, PrunableNetwork, "MaskRepruning", "SDCLR", one=False, keep=lambda m: m.ratio is not None)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.networks(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a resume skips on_train_epoch_start (mid-epoch, and at a last-batch checkpoint)
        self.on_train_epoch_start(trainer, pl_module)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        for net in self.networks(pl_module):
            stats = net.start_epoch(trainer.current_epoch, self.every_n_epochs)
            if stats is None:
                continue
            logs = {"prune/density": stats["overall"], "prune/threshold": stats["threshold"]}
            if self.log_per_layer:
                logs.update({f"prune/density/{k}": v for k, v in net.mask_densities().items() if k != "overall"})
            # identical on every rank by construction: no sync needed
            pl_module.log_dict(logs, on_step=False, on_epoch=True)
