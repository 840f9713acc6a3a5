"""BoostedCL's momentum loss and per-sample weights (Zhou et al., ICML 2022, arXiv 2205.12693).

Specification: ``shared/specs/boosted_cl.md`` sections a, b, h. Per training sample ``i``:

- the tracked loss ``l_i`` is the mean of its two anchor directions' NT-Xent losses (2B - 2
  negatives), from the training forward pass, detached (the method's ``per_sample_loss``);
- momentum loss: the first update stores ``l_i``; later ones ``m_i <- (1 - beta) l_i + beta m_i``
  (beta = 0.97), once per sample per epoch;
- at the end of every epoch: ``w_i = 1/2 + 1/2 (m_i - mean(m)) / max_j |m_j - mean(m)|``
  (the official ``calculate_momentum_weight``: z-scoring first, the std cancels).

State lives in the LightningModule's buffers (checkpointed, identical on every rank):
``momentum_loss`` (N, float32), ``momentum_epoch`` (N, int64: the epoch of each sample's last
update, -1 = never) and ``sample_weight`` (N, float32: the weights the loaders use now).

Differences from the official code, all deliberate:

- The update is vectorised (the official per-sample Python loop costs 7.5-12 ms per step).
- "First update stores the raw loss" replaces "epoch 1 stores the raw loss": the same whenever
  epoch 1 covers the training set (it does: no drop_last), and it does not decay from 0 a
  sample that epoch 1 missed (``limit_train_batches``, a mid-epoch resume).
- All-equal momentum losses (e.g. nothing trained yet) give ``w = 1/2`` for every sample (the
  mean weight the formula always has) instead of the official NaN, which silently disables
  the RandAugment stage.
- Under DDP the (index, loss) pairs are gathered from all ranks every step, so every rank
  applies the same update to the whole buffer; indices repeated by the distributed sampler's
  padding (within a step or across steps) are updated once per epoch, the first occurrence
  winning (spec section h).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from ltcl_lightning.utils import dist

#: buffers a module must register (sizes known at ``__init__``) to use the callback
STATE_BUFFERS = ("momentum_loss", "momentum_epoch", "sample_weight")


def momentum_update_(
    memory: torch.Tensor,
    last_epoch: torch.Tensor,
    index: torch.Tensor,
    loss: torch.Tensor,
    epoch: int,
    beta: float = 0.97,
) -> int:
    """In-place EMA of per-sample losses; returns the number of samples updated.

    ``memory`` (N,) float32 and ``last_epoch`` (N,) int64 are updated at ``index``; a sample
    already updated in ``epoch`` is skipped, and among repeated indices in ``index`` only the
    first occurrence counts.
    """
    index = index.to(memory.device, torch.long).reshape(-1)
    loss = loss.to(memory.device, memory.dtype).reshape(-1)
    if index.numel() != loss.numel():
        raise ValueError(f"{index.numel()} indices for {loss.numel()} per-sample losses")
    if index.numel() == 0:
        return 0
    order = torch.argsort(index, stable=True)
    sorted_idx = index[order]
    first_occurrence = torch.ones_like(sorted_idx, dtype=torch.bool)
    first_occurrence[1:] = sorted_idx[1:] != sorted_idx[:-1]
    keep = order[first_occurrence]
    index, loss = index[keep], loss[keep]
    fresh = last_epoch[index] != epoch
    index, loss = index[fresh], loss[fresh]
    old = memory[index]
    memory[index] = torch.where(last_epoch[index] < 0, loss, (1.0 - beta) * loss + beta * old)
    last_epoch[index] = epoch
    return int(index.numel())


def momentum_weights(memory: torch.Tensor) -> torch.Tensor:
    """``w = 1/2 + 1/2 (m - mean(m)) / max|m - mean(m)|`` in float64, returned as float32.

    ``w`` lies in [0, 1] with mean 1/2; all-equal ``m`` gives 1/2 everywhere (not NaN).
    Deterministic: every rank holding the same ``m`` gets bit-identical weights.
    """
    m = memory.double()
    dev = m - m.mean()
    scale = dev.abs().max()
    w = 0.5 + 0.5 * dev / scale
    return torch.where(scale > 0, w, torch.full_like(w, 0.5)).to(torch.float32)


class MomentumWeightUpdate(pl.Callback):
    """Tracks the momentum loss every step and publishes the BoostedCL weights every epoch.

    Reads ``outputs['index']``, ``outputs['per_sample_loss']`` and ``outputs['target']`` of
    each training step (what ``LongTailMethod.training_step`` returns), keeps its state in the
    module's :data:`STATE_BUFFERS`, and hands the weights to the training data through
    ``set_sample_weights`` (the boosted datamodules of ``ltcl_lightning.data.boosted``): at the
    end of every epoch and at the start of training (so a resumed run, even mid-epoch,
    augments with the checkpointed weights).
    """

    def __init__(self, beta: float = 0.97):
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"momentum beta must be in [0, 1), got {beta}")
        self.beta = beta

    # ----- plumbing -------------------------------------------------------------------------
    @staticmethod
    def _check_module(pl_module: pl.LightningModule) -> None:
        missing = [b for b in STATE_BUFFERS if not isinstance(getattr(pl_module, b, None), torch.Tensor)]
        if missing:
            raise TypeError(
                f"{type(pl_module).__name__} lacks the buffers {missing} that MomentumWeightUpdate keeps its "
                "state in; use ltcl_lightning.methods.boosted_cl.BoostedCL (or BoostedSDCLR)."
            )

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

    def publish(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.weight_sink(trainer).set_sample_weights(pl_module.sample_weight.detach().cpu())

    # ----- hooks --------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._check_module(pl_module)
        module_beta = getattr(pl_module, "momentum_beta", None)
        if module_beta is not None and float(module_beta) != self.beta:
            # two sources for one number: refuse rather than let the callback's silently win
            raise ValueError(
                f"MomentumWeightUpdate(beta={self.beta}) disagrees with the model's momentum_beta={module_beta}; "
                "set the same value in both (or drop the callback from trainer.callbacks: the model adds one)."
            )

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # a resume (mid-epoch too) skips the epoch-end publication that produced these weights
        self.publish(trainer, pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if not isinstance(outputs, dict) or "per_sample_loss" not in outputs or "index" not in outputs:
            raise KeyError(
                f"{type(pl_module).__name__}.training_step must return 'index' and 'per_sample_loss' "
                "(training_loss returns per_sample_loss, the base step passes it on)"
            )
        index = outputs["index"].reshape(-1)
        loss = outputs["per_sample_loss"].detach().reshape(-1)
        target = outputs.get("target", torch.full_like(index, -1)).reshape(-1)
        # one gather for the three columns (float64 holds indices and labels exactly)
        packed = torch.stack([index.double(), loss.double(), target.double()], 1)
        packed = dist.gather(packed)
        g_index, g_loss, g_target = packed[:, 0].long(), packed[:, 1], packed[:, 2].long()
        if g_index.numel() and int(g_index.max()) >= pl_module.momentum_loss.numel():
            raise IndexError(
                f"sample index {int(g_index.max())} is outside the momentum buffer of {pl_module.momentum_loss.numel()} "
                "samples: the model was built for a smaller training set than the data provides."
            )
        momentum_update_(
            pl_module.momentum_loss, pl_module.momentum_epoch, g_index, g_loss.float(), trainer.current_epoch, self.beta
        )
        if hasattr(pl_module, "sample_target"):
            known = g_target >= 0
            pl_module.sample_target[g_index[known].to(pl_module.sample_target.device)] = g_target[known].to(
                pl_module.sample_target.device
            )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pl_module.sample_weight.copy_(momentum_weights(pl_module.momentum_loss))
        self.publish(trainer, pl_module)
