"""Online kNN monitor: weighted kNN accuracy (overall / Many / Medium / Few) of the backbone's
features every N epochs, without training anything (:mod:`ltcl_lightning.knn`).

At the end of every ``every_n_epochs``-th validation the backbone (eval mode: the features the
final probe sees; SDCLR: the dense branch) embeds the training images once, with the
evaluation view, and the validation images; each validation image is classified by its ``k``
nearest training images. Logged: ``knn/acc``, ``knn/mean_class_acc``, ``knn/many``,
``knn/medium``, ``knn/few``, ``knn/group_std``; groups from the model's training class counts.

Cost: one forward pass over the training set per evaluation (no augmentation, no backward).
Under DDP every rank embeds the whole of both sets (the numbers are then identical on every
rank without a gather of features; the metric drops the repeated indices).
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from ltcl_lightning.knn import DEFAULT_K, DEFAULT_TEMPERATURE, knn_predict
from ltcl_lightning.metrics import LongTailAccuracy


@torch.no_grad()
def embed(backbone: torch.nn.Module, loader: DataLoader, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Pooled features and labels of every batch of ``loader`` (batches ``(index, views, target)``)."""
    feats, labels = [], []
    for _, views, target in loader:
        feats.append(backbone(views[0].to(device)).float())
        labels.append(target.to(device))
    return torch.cat(feats), torch.cat(labels)


class KNNMonitor(pl.Callback):
    """Weighted kNN accuracy of the backbone's features every ``every_n_epochs`` validations.

    Args:
        every_n_epochs: evaluate at the end of every N-th validation epoch (counting the
            epochs the trainer validates in; the sanity check is skipped).
        k, temperature: neighbours and vote temperature (200 and 0.1 as in InstDisc / DINO).
    """

    def __init__(self, every_n_epochs: int = 1, k: int = DEFAULT_K, temperature: float = DEFAULT_TEMPERATURE):
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be >= 1, got {every_n_epochs}")
        if k < 1 or not temperature > 0:
            raise ValueError(f"k must be >= 1 and temperature > 0, got k={k}, temperature={temperature}")
        self.every_n_epochs = every_n_epochs
        self.k = k
        self.temperature = temperature

    def _loader(self, dm, ds) -> DataLoader:
        return DataLoader(ds, batch_size=dm.eval_batch_size, shuffle=False, num_workers=dm.num_workers)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: Any) -> None:  # a LongTailMethod
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        dm = trainer.datamodule  # type: ignore[attr-defined]
        if dm is None or not hasattr(dm, "train_eval_dataset"):
            raise TypeError("KNNMonitor needs a LongTailDataModule (trainer.fit(model, datamodule=...))")
        backbone = pl_module.backbone
        was_training = backbone.training
        backbone.eval()
        try:
            x_train, y_train = embed(backbone, self._loader(dm, dm.train_eval_dataset()), pl_module.device)
            x_val, y_val = embed(backbone, self._loader(dm, dm.datasets["val"]), pl_module.device)
        finally:
            backbone.train(was_training)
        preds = knn_predict(x_train, y_train, x_val, pl_module.num_classes, self.k, self.temperature)
        metric = LongTailAccuracy(pl_module.num_classes, pl_module.class_group).to(pl_module.device)
        metric.update(torch.arange(len(y_val), device=pl_module.device), preds, y_val)
        res = metric.compute()
        for key in ("acc", "mean_class_acc", "many", "medium", "few", "group_std"):
            pl_module.log(f"knn/{key}", float(res[key]))
        pl_module.last_eval["knn"] = {**res, "epoch": trainer.current_epoch}
