"""TSC's class targets (Li et al., CVPR 2022, ``LTH14/targeted-supcon``): points spread uniformly
on the unit sphere, generated once, and their assignment to classes by optimal matching.

- :func:`uniform_targets` re-states ``target_generation.py``: Adam (lr 1e-3) on
  ``mean_i log sum_j exp(t_i . t_j / 0.07)`` over normalised free vectors, keeping the best
  iterate (official: 10,000 iterations; the repository ships the 1000 x 128 result).
- :class:`TargetAssignment` keeps an EMA (0.9) of every class's normalised mean query (from the
  queries of all ranks) and, every step, matches classes to targets by
  ``scipy.optimize.linear_sum_assignment`` on the negative cosine, as the official
  ``KCL.forward``. Targets, centroids and the assignment are persistent buffers (checkpointed,
  identical on every rank).

Difference from the official code: the targets are generated from a seed (``target_seed``; the
official loads a precomputed ``.npy``) at their first use, on the host, identically on every rank,
then live in the checkpoint. Not at construction: 10,000 Adam steps take minutes for 1000 classes,
which a model built to load a checkpoint (resume, probe, export) would throw away.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ltcl_lightning.modules.vmf import class_sums
from ltcl_lightning.utils import dist


def uniform_targets(num: int, dim: int, steps: int = 10000, lr: float = 1e-3, t: float = 0.07, seed: int = 0) -> torch.Tensor:
    """``num`` unit vectors in ``dim`` dimensions minimising the uniformity loss (official
    ``target_generation.py``); deterministic for a seed."""
    if num < 1 or dim < 2 or steps < 0:
        raise ValueError(f"need num >= 1, dim >= 2, steps >= 0, got {num}, {dim}, {steps}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(num, dim, generator=g).requires_grad_()
    opt = torch.optim.Adam([x], lr=lr)
    best, best_loss = F.normalize(x.detach(), dim=1), float("inf")
    with torch.inference_mode(False), torch.enable_grad():  # also when first used inside no_grad code
        for _ in range(steps + 1):
            xn = F.normalize(x, dim=1)
            loss = torch.logsumexp(xn @ xn.T / t, dim=1).mean()
            if loss.item() < best_loss:
                best_loss, best = loss.item(), xn.detach().clone()
            if _ == steps:
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
    return best


class TargetAssignment(nn.Module):
    centroids: torch.Tensor
    assignment: torch.Tensor

    def __init__(self, num_classes: int, dim: int, repeats: int = 1, steps: int = 10000, seed: int = 0, momentum: float = 0.9):
        """
        Args:
            repeats: targets per class (official ``--tr``, 1).
            steps: Adam iterations of the target generation (official 10,000).
            seed: seed of the targets and of the initial centroids.
            momentum: EMA factor of the class centroids (official 0.9).
        """
        super().__init__()
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.num_classes, self.repeats, self.momentum = num_classes, repeats, momentum
        self._steps, self._seed, self._ready = steps, seed, False
        self.register_buffer("targets", torch.zeros(num_classes * repeats, dim))  # see the property
        g = torch.Generator().manual_seed(seed + 1)
        self.register_buffer("centroids", F.normalize(torch.randn(num_classes, dim, generator=g), dim=1))
        self.register_buffer("assignment", torch.arange(num_classes))  # class -> target index

    @property  # type: ignore[no-redef]
    def targets(self) -> torch.Tensor:
        """(C * tr, p): the class targets, generated from the seed at the first use unless a
        state dict was loaded (a saved state dict always holds them)."""
        buffers = self.__dict__.get("_buffers", {})
        if "targets" not in buffers:
            raise AttributeError("targets")  # not registered yet (register_buffer asks)
        if not self._ready:
            unique = uniform_targets(self.num_classes, buffers["targets"].shape[1], steps=self._steps, seed=self._seed)
            with torch.no_grad():
                buffers["targets"].copy_(unique.repeat_interleave(self.repeats, dim=0))
            self._ready = True
        return buffers["targets"]

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        _ = self.targets  # generated first: a checkpoint never holds the placeholder
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if prefix + "targets" in state_dict:
            self._ready = True
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def update(self, q: torch.Tensor, labels: torch.Tensor, gather: bool = True, weight: torch.Tensor | None = None) -> None:
        """EMA of the normalised class means of ``q`` (all ranks), then the optimal matching.
        ``weight`` (N,) 0/1 drops rows (the distributed sampler's padded repeats)."""
        q, labels = q.detach(), labels.detach().long()
        w = torch.ones_like(labels, dtype=torch.float64) if weight is None else weight.detach().to(torch.float64)
        if gather and dist.is_distributed():  # one collective: labels and weights ride along as exact float64 columns
            packed = dist.gather(torch.cat([q.to(torch.float64), labels.to(torch.float64)[:, None], w[:, None]], 1))
            q, labels, w = packed[:, :-2], packed[:, -2].long(), packed[:, -1]
        sums, counts = class_sums(q, labels, self.num_classes, w)
        present = counts > 0
        batch_means = F.normalize(sums, dim=1).to(self.centroids.dtype)
        moved = F.normalize(self.momentum * self.centroids + (1 - self.momentum) * batch_means, dim=1)
        self.centroids.copy_(torch.where(present[:, None], moved, self.centroids))
        cosine = (self.centroids @ self.targets[:: self.repeats].T).double().cpu().numpy()
        rows, cols = linear_sum_assignment(-cosine)
        self.assignment[torch.as_tensor(rows, device=self.assignment.device)] = torch.as_tensor(cols, device=self.assignment.device)

    def positive_mask(self, labels: torch.Tensor) -> torch.Tensor:
        """(B, C * tr) bool: the targets assigned to each sample's class."""
        first = self.assignment[labels] * self.repeats  # (B,)
        cols = torch.arange(self.targets.shape[0], device=labels.device)
        return (cols[None, :] >= first[:, None]) & (cols[None, :] < first[:, None] + self.repeats)
