"""Online per-class von Mises-Fisher estimation for ProCo (Du et al., TPAMI 2024, spec proco.md (a)).

State per class c (persistent buffers, in checkpoints, identical on every rank):

* ``mean_old`` / ``mean_new`` (C, p) float32: running mean of the class's normalised features
  (NOT normalised; its norm is the mean resultant length R), the official ``Ave``;
* ``count_old`` / ``count_new`` (C,) float32: features accumulated, the official ``Amount``;
* ``window_epoch``: the epoch whose start last swapped the window, ``num_resets``: how many
  random re-initialisations happened (the seed of the next one).

The update is an exact cumulative running mean (spec (a), ``update_CV``):
``w_c = m_c / (m_c + Amount_c)``, ``Ave_c <- (1 - w_c) Ave_c + w_c s_c / m_c``,
``Amount_c += m_c``, with per-class sums ``s_c`` and counts ``m_c`` of the (gathered) batch.
Both estimators get every update; at each epoch start old <- new and new <- reset (random
``Ave = 0.9 * normalize(randn)``, ``Amount = 0``); kappa is always computed from **old**, so
during epoch e the model uses all features of epoch e-1 plus those of epoch e so far.

kappa = p R / (1 - R^2) (the official closed form, Banerjee's approximation without the -R^3
term), computed in float32 from the float32 mean, with the official clamps kappa > kappa_max
-> kappa_max and kappa < 0 (R rounded above 1) -> kappa_max.

Differences from the official ``EstimatorCV`` (seeded, no (N, C, p) tensor, idempotent window
swap; none changes the arithmetic of one process): ``docs/methods/proco.md``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ltcl_lightning.utils import dist


@torch.no_grad()
def class_sums(z: torch.Tensor, y: torch.Tensor, num_classes: int, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums (C, p) float64 and counts (C,) float64 of the rows of ``z`` (each row times
    its 0/1 ``weight``: 0 drops a padded repeat), O(N p) memory, in the same summation order on
    every rank (state that every rank updates from the gathered batch must stay identical)."""
    z = z.detach().to(torch.float64)
    w = torch.ones_like(y, dtype=torch.float64) if weight is None else weight.to(torch.float64)
    if z.is_cuda:
        # index_add_ on CUDA accumulates with atomics (summation order varies run to run,
        # so ranks could drift apart); a float64 one-hot matmul is deterministic
        onehot = F.one_hot(y, num_classes).to(torch.float64) * w[:, None]
        return onehot.T @ z, onehot.sum(0)
    sums = torch.zeros(num_classes, z.shape[1], dtype=torch.float64, device=z.device).index_add_(0, y, z * w[:, None])
    # index_add_ rather than bincount: bincount sizes its output from the data (a host sync on a GPU)
    counts = torch.zeros(num_classes, dtype=torch.float64, device=z.device).index_add_(0, y, w)
    return sums, counts


class VMFEstimator(nn.Module):
    seed: torch.Tensor  # buffers, registered in __init__
    num_resets: torch.Tensor
    window_epoch: torch.Tensor
    mean_old: torch.Tensor
    count_old: torch.Tensor
    mean_new: torch.Tensor
    count_new: torch.Tensor

    def __init__(self, num_classes: int, dim: int, seed: int = 0, kappa_max: float = 1e5, init_resultant: float = 0.9):
        """
        Args:
            num_classes: C.
            dim: p, feature dimension (>= 2).
            seed: seed of the random initial means (same on every rank).
            kappa_max: the clamp of kappa (official 1e5).
            init_resultant: norm of the random initial means (official 0.9, i.e. kappa = p 90/19).
        """
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if dim < 2:
            raise ValueError(f"the vMF feature dimension must be >= 2, got dim={dim}")
        if not 0 < init_resultant < 1:
            raise ValueError(f"init_resultant must be in (0, 1), got {init_resultant}")
        self.num_classes, self.dim = num_classes, dim
        self.kappa_max, self.init_resultant = float(kappa_max), float(init_resultant)
        # the seed is state too: a checkpoint then carries the whole random sequence of resets
        self.register_buffer("seed", torch.tensor(seed, dtype=torch.long))
        self.register_buffer("num_resets", torch.zeros((), dtype=torch.long))
        self.register_buffer("window_epoch", torch.full((), -1, dtype=torch.long))
        self.register_buffer("mean_old", self._random_means(0))
        self.register_buffer("count_old", torch.zeros(num_classes))
        self.register_buffer("mean_new", self._random_means(1))
        self.register_buffer("count_new", torch.zeros(num_classes))
        self.num_resets.fill_(2)

    def _random_means(self, k: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + k)
        return self.init_resultant * F.normalize(torch.randn(self.num_classes, self.dim, generator=g), dim=1)

    # ----- window ----------------------------------------------------------------------------------
    @torch.no_grad()
    def start_epoch(self, epoch: int) -> bool:
        """old <- new, new <- fresh random means with count 0. Idempotent per epoch: returns
        False (and does nothing) if the window was already swapped for ``epoch``."""
        if int(self.window_epoch) == epoch:
            return False
        self.mean_old.copy_(self.mean_new)
        self.count_old.copy_(self.count_new)
        self.mean_new.copy_(self._random_means(int(self.num_resets)).to(self.mean_new.device))
        self.count_new.zero_()
        self.num_resets.add_(1)
        self.window_epoch.fill_(epoch)
        return True

    # ----- update ----------------------------------------------------------------------------------
    def class_sums(self, z: torch.Tensor, y: torch.Tensor, weight: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`class_sums` over this estimator's classes."""
        return class_sums(z, y, self.num_classes, weight)

    @torch.no_grad()
    def update(self, z: torch.Tensor, y: torch.Tensor, gather: bool = True, weight: torch.Tensor | None = None) -> None:
        """Accumulate features ``z`` (N, p) with labels ``y`` (N,) into both estimators.

        With ``gather=True`` the features and labels of all ranks are gathered first (rank
        order), so every rank applies the same update (spec (g)). ``weight`` (N,) 0/1 drops rows
        (the distributed sampler's padded repeats, which one process would not see)."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"features must have shape (N, {self.dim}), got {tuple(z.shape)}")
        if y.shape != z.shape[:1]:
            raise ValueError(f"labels must have shape ({z.shape[0]},), got {tuple(y.shape)}")
        z, y = z.detach(), y.detach().long()
        w = torch.ones_like(y, dtype=torch.float64) if weight is None else weight.detach().to(torch.float64)
        if gather and dist.is_distributed():
            # one collective: labels and weights ride along as exact float64 columns (C <= 2^53)
            packed = dist.gather(torch.cat([z.to(torch.float64), y.to(torch.float64)[:, None], w[:, None]], 1))
            z, y, w = packed[:, :-2], packed[:, -2].long(), packed[:, -1]
        sums, counts = self.class_sums(z, y, w)
        batch_mean = (sums / counts.clamp_min(1).unsqueeze(1)).to(self.mean_old.dtype)
        counts = counts.to(self.count_old.dtype)
        for mean, count in ((self.mean_old, self.count_old), (self.mean_new, self.count_new)):
            total = count + counts
            w = torch.where(total > 0, counts / total.clamp_min(1), torch.zeros_like(total)).unsqueeze(1)
            mean.mul_(1 - w).add_(w * batch_mean)
            count.copy_(total)

    # ----- derived quantities ------------------------------------------------------------------------
    def kappa(self) -> torch.Tensor:
        """(C,) float32 concentrations of the old window: p R / (1 - R^2), clamped."""
        r = self.mean_old.norm(dim=1)
        kappa = self.dim * r / (1 - r * r)
        kappa = torch.where(kappa > self.kappa_max, torch.full_like(kappa, self.kappa_max), kappa)
        return torch.where(kappa < 0, torch.full_like(kappa, self.kappa_max), kappa)

    def mean_direction(self) -> torch.Tensor:
        """(C, p) unit mean directions mu of the old window."""
        return F.normalize(self.mean_old, dim=1)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, dim={self.dim}, seed={int(self.seed)}, kappa_max={self.kappa_max:g}"
