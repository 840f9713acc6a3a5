"""BoostedCL's momentum loss and per-sample weights (Zhou et al., ICML 2022, arXiv 2205.12693).

Specification: ``boosted_cl.md`` sections a, b, h. Per training sample ``i``, with
``l_i`` its tracked loss (the method's per-sample loss of the training forward pass, detached):

- momentum loss: the first update stores ``l_i``; later ones ``m_i <- (1 - beta) l_i + beta m_i``
  (beta = 0.97), once per sample per epoch;
- at the end of every epoch: ``w_i = 1/2 + 1/2 (m_i - mean(m)) / max_j |m_j - mean(m)|``
  (the official ``calculate_momentum_weight``: z-scoring first, the std cancels); the next
  epoch's views are augmented with ``w``.

State (persistent buffers, sizes known at ``__init__``, identical on every rank): ``loss`` (N,
float32: m), ``last_epoch`` (N: each sample's last update, -1 = never), ``weight`` (N, float32:
the weights in use, 0 before the first epoch end) and ``weight_epoch`` (the epoch whose end
produced them, -1 = none), so that :meth:`start_epoch` can make up for an epoch end that a
resume skipped (Lightning's checkpoints written at an epoch's last batch).

Differences from the official code (the update is vectorised and sync-free, first update = raw
loss, all-equal losses, DDP): ``docs/methods/boosted_cl.md``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ltcl_lightning.utils import dist


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


class MomentumLoss(nn.Module):
    loss: torch.Tensor  # buffers, registered in __init__
    last_epoch: torch.Tensor
    weight: torch.Tensor
    weight_epoch: torch.Tensor

    def __init__(self, num_samples: int, beta: float = 0.97):
        """``num_samples``: N, the training-set size (indices 0 .. N-1); ``beta``: the EMA factor."""
        super().__init__()
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"momentum beta must be in [0, 1), got {beta}")
        self.num_samples, self.beta = num_samples, float(beta)
        self.register_buffer("loss", torch.zeros(num_samples, dtype=torch.float32))
        self.register_buffer("last_epoch", torch.full((num_samples,), -1, dtype=torch.long))
        # w = 0: the first epoch is plain SimCLR / SDCLR augmentation, as in the reference
        self.register_buffer("weight", torch.zeros(num_samples, dtype=torch.float32))
        self.register_buffer("weight_epoch", torch.full((), -1, dtype=torch.long))

    @torch.no_grad()
    def update(self, index: torch.Tensor, loss: torch.Tensor, epoch: int, gather: bool = True) -> torch.Tensor:
        """EMA step for samples ``index`` (B,) with losses ``loss`` (B,), gathered from all ranks first;
        once per sample per ``epoch``, the first of repeated indices counting. Returns the (N,) mask
        of the samples updated. No host sync (scatter-based first occurrence)."""
        index, loss = index.reshape(-1), loss.detach().reshape(-1)
        if index.numel() != loss.numel():
            raise ValueError(f"{index.numel()} indices for {loss.numel()} per-sample losses")
        if gather and dist.is_distributed():
            # one collective for both columns (float64 holds indices exactly)
            packed = dist.gather(torch.stack([index.double(), loss.double()], 1))
            index, loss = packed[:, 0].long(), packed[:, 1]
        index, loss = index.to(self.loss.device, torch.long), loss.to(self.loss.device, self.loss.dtype)
        n, m = self.num_samples, index.numel()
        msg = f"a sample index is outside the momentum buffer of {n} samples: the model was built for a smaller training set"
        torch._assert_async(((index >= 0) & (index < n)).all(), msg)
        position = torch.arange(m, device=index.device)
        first = torch.full((n,), m, device=index.device).scatter_reduce_(0, index, position, "amin")
        seen = first < m  # (N,) samples in this (gathered) batch; their first occurrence's loss
        l_i = loss[first.clamp_max(m - 1)] if m else torch.zeros_like(self.loss)
        fresh = seen & (self.last_epoch != epoch)
        ema = torch.where(self.last_epoch < 0, l_i, (1.0 - self.beta) * l_i + self.beta * self.loss)
        self.loss.copy_(torch.where(fresh, ema, self.loss))
        self.last_epoch.masked_fill_(fresh, epoch)
        return fresh

    @torch.no_grad()
    def end_epoch(self, epoch: int) -> torch.Tensor:
        """The weights ``w`` from the momentum losses after ``epoch``; they are used from now on."""
        self.weight.copy_(momentum_weights(self.loss))
        self.weight_epoch.fill_(epoch)
        return self.weight

    @torch.no_grad()
    def start_epoch(self, epoch: int) -> torch.Tensor:
        """The weights ``epoch`` trains with: those of the end of ``epoch - 1``, computed now if
        that end was skipped (a resume from a checkpoint written at an epoch's last batch).
        Idempotent; no host sync."""
        stale = self.weight_epoch < epoch - 1
        self.weight.copy_(torch.where(stale, momentum_weights(self.loss), self.weight))
        self.weight_epoch.copy_(torch.where(stale, epoch - 1, self.weight_epoch))
        return self.weight
