"""A few training steps on the CPU, then a checkpoint: the starting point of the probe / export tests."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl


def fit_and_save(model: pl.LightningModule, dm: pl.LightningDataModule, folder: Path, steps: int = 1, name: str = "model.ckpt") -> str:
    """Fit ``model`` on ``dm`` for ``steps`` batches (no validation, logger or progress bar) and
    save a checkpoint ``folder / name``; returns its path."""
    trainer = pl.Trainer(
        max_epochs=1,
        limit_train_batches=steps,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(folder),
    )
    trainer.fit(model, dm)
    path = Path(folder) / name
    trainer.save_checkpoint(path)
    return str(path)
