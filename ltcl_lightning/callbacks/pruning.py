"""``MaskRepruning``: SDCLR's per-epoch global magnitude re-pruning (spec sdclr.md (b)).

At the start of every ``every_n_epochs``-th training epoch the module's masks are recomputed
from scratch from the current dense weights (``pl_module.recompute_masks(epoch)``), identical on
every rank, and the overall and per-layer densities are logged (``prune/density``,
``prune/density/<layer>``, ``prune/threshold``).

Resume: the masks and the epoch that produced them (``pl_module.mask_epoch``) are registered
buffers, so they come back with the checkpoint. A mid-epoch resume skips
``on_train_epoch_start`` and continues with the restored mask (the reference would recompute
a different one from the mid-epoch weights); if the hook does run for an epoch whose masks
exist already, nothing is recomputed. The callback itself holds no state.

The SDCLR module adds this callback itself (``configure_callbacks``) unless one is already in
``trainer.callbacks``; list it there only to change its settings.
"""

from __future__ import annotations

import lightning.pytorch as pl


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

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        missing = [a for a in ("recompute_masks", "mask_densities", "mask_epoch") if not hasattr(pl_module, a)]
        if missing:
            raise TypeError(
                f"MaskRepruning needs a pruning method such as SDCLR; {type(pl_module).__name__} lacks {missing}. "
                "Remove the callback or use ltcl_lightning.methods.sdclr.SDCLR."
            )

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = int(pl_module.mask_epoch)
        if last == epoch:  # this epoch's masks exist (restored from a checkpoint)
            return
        if last >= 0 and epoch % self.every_n_epochs != 0:
            return
        stats = pl_module.recompute_masks(epoch)
        logs = {"prune/density": stats["overall"], "prune/threshold": stats["threshold"]}
        if self.log_per_layer:
            logs.update({f"prune/density/{k}": v for k, v in pl_module.mask_densities().items() if k != "overall"})
        # identical on every rank by construction: no sync needed
        pl_module.log_dict(logs, on_step=False, on_epoch=True)
