"""Momentum (EMA) encoder and feature queue: the MoCo building block (He et al., CVPR 2020) that
PaCo / GPaCo and KCL contrast against.

- :class:`MomentumEncoder`: a frozen copy of one or more online modules (backbone, projector)
  whose parameters follow ``theta_k <- m theta_k + (1 - m) theta_q`` (MoCo eq. 2), ``m`` from
  an :class:`EMASchedule` evaluated at the global step (a function of the step: a resume, mid
  epoch too, continues with the same ``m``). Its batch-norm running statistics come from its own
  forwards, as in MoCo (they are not averaged). Parameters are ordinary ``requires_grad=False``
  parameters of the LightningModule, so they are checkpointed and broadcast like the others.
- :class:`FeatureQueue`: the last ``size`` keys (and their labels), enqueued FIFO from the keys
  of **all** ranks (gathered through ``utils.dist``, so every rank holds the same queue). The
  keys, labels, write pointer and fill count are persistent buffers (plain tensors, loadable
  with ``weights_only=True``): a checkpoint resumes with the same queue and pointer. The pointer
  and fill count are mirrored on the host, so a step never syncs host and device for them.

Differences from MoCo / PaCo's ``moco/builder.py`` (deliberate):

- The queue starts empty and only filled entries are returned (:meth:`FeatureQueue.contents`);
  the official queue starts as ``size`` random vectors with random labels that act as
  negatives (and, with labels, as false positives) for the first ``size / batch`` steps.
- Any batch size: the official asserts ``size % global_batch == 0``; here writes wrap around
  (key ``j`` of an enqueue goes to slot ``(ptr + j) % size``, as if written one at a time).
- No shuffled batch-norm for the key encoder (the official shuffles images across GPUs; with
  one GPU it is a no-op, which is the CIFAR recipe). Under DDP the key encoder's batch-norm sees
  the rank's own batch.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn as nn

from ltcl_lightning.utils import dist


class EMASchedule:
    """The momentum ``m`` of the EMA as a function of the step.

    ``constant``: ``m = base`` (MoCo / PaCo: 0.999). ``cosine``: BYOL's
    ``m = final - (final - base) (cos(pi step / total) + 1) / 2``, from ``base`` at step 0 to
    ``final`` at the last step.
    """

    def __init__(self, base: float = 0.999, kind: Literal["constant", "cosine"] = "constant", final: float = 1.0):
        if not 0.0 <= base <= 1.0:
            raise ValueError(f"EMA momentum base must be in [0, 1], got {base}")
        if not 0.0 <= final <= 1.0:
            raise ValueError(f"EMA momentum final must be in [0, 1], got {final}")
        if kind not in ("constant", "cosine"):
            raise ValueError(f"EMA schedule kind must be 'constant' or 'cosine', got {kind!r}")
        self.base, self.kind, self.final = base, kind, final

    def __call__(self, step: int, total_steps: int) -> float:
        if self.kind == "constant":
            return self.base
        if total_steps < 1:
            raise ValueError(f"a cosine EMA schedule needs total_steps >= 1, got {total_steps}")
        progress = min(step / total_steps, 1.0)
        return self.final - (self.final - self.base) * (math.cos(math.pi * progress) + 1) / 2

    def __repr__(self) -> str:
        return f"EMASchedule(base={self.base}, kind={self.kind!r}, final={self.final})"


class MomentumEncoder(nn.Module):
    """Frozen EMA copies of ``online`` modules, applied in sequence by :meth:`forward`."""

    def __init__(self, *online: nn.Module):
        super().__init__()
        if not online:
            raise ValueError("MomentumEncoder needs at least one module to copy")
        self.stages = nn.ModuleList(copy.deepcopy(m) for m in online)
        self.stages.requires_grad_(False)

    @torch.no_grad()
    def update(self, online: Sequence[nn.Module], momentum: float) -> None:
        """``theta_k <- m theta_k + (1 - m) theta_q`` for every parameter (MoCo eq. 2)."""
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"EMA momentum must be in [0, 1], got {momentum}")
        if len(online) != len(self.stages):
            raise ValueError(f"{len(online)} online modules for {len(self.stages)} momentum copies")
        for src, dst in zip(online, self.stages):
            p_q, p_k = list(src.parameters()), list(dst.parameters())
            if len(p_q) != len(p_k):
                raise ValueError(f"online module {type(src).__name__} has {len(p_q)} parameters, its copy {len(p_k)}")
            for q, k in zip(p_q, p_k):
                k.mul_(momentum).add_(q.detach(), alpha=1.0 - momentum)

    @torch.no_grad()
    def keys(self, online: Sequence[nn.Module], momentum: float, x: torch.Tensor) -> torch.Tensor:
        """MoCo's key step: :meth:`update` from ``online``, then the L2-normalised output of the
        last stage for ``x`` (no gradient)."""
        self.update(online, momentum)
        return torch.nn.functional.normalize(self(x)[-1], dim=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage (e.g. ``[backbone features, projection]``)."""
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs


class FeatureQueue(nn.Module):
    """FIFO queue of the last ``size`` keys (``dim`` wide) and their labels, identical on every rank."""

    keys: torch.Tensor
    labels: torch.Tensor
    ptr: torch.Tensor
    filled: torch.Tensor

    def __init__(self, size: int, dim: int):
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"queue size and dim must be >= 1, got size={size}, dim={dim}")
        self.size, self.dim = size, dim
        self.register_buffer("keys", torch.zeros(size, dim))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))  # next slot to write
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))  # valid entries
        # host mirrors of ptr / filled: a step reads and writes them without a device sync; set
        # from the buffers whenever a state dict is loaded
        self._ptr, self._filled = 0, 0

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._ptr, self._filled = int(self.ptr), int(self.filled)

    @property
    def num_filled(self) -> int:
        """Valid entries (host value, no device sync)."""
        return self._filled

    def contents(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Copies of the valid keys (n, dim) and labels (n,), detached (slot order; order is
        immaterial to the losses). Copies, as MoCo's ``queue.clone().detach()``: the loss saves
        them for the backward, which runs after this step's :meth:`enqueue` wrote the buffer."""
        n = self._filled
        return self.keys[:n].detach().clone(), self.labels[:n].detach().clone()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor, labels: torch.Tensor | None = None, gather: bool = True) -> None:
        """Write the keys of all ranks (rank order) over the oldest entries.

        ``gather=False`` enqueues only the given keys (they must already be the same on every rank).
        """
        if keys.ndim != 2 or keys.shape[1] != self.dim:
            raise ValueError(f"keys must be (n, {self.dim}), got {tuple(keys.shape)}")
        if labels is None:
            labels = torch.full((keys.shape[0],), -1, dtype=torch.long, device=keys.device)
        if labels.shape != (keys.shape[0],):
            raise ValueError(f"{tuple(labels.shape)} labels for {keys.shape[0]} keys")
        if gather:
            sizes = dist.gather_sizes(keys.shape[0], keys.device)
            keys = dist.gather(keys.detach(), sizes=sizes)
            labels = dist.gather(labels, sizes=sizes)
        n = keys.shape[0]
        # key j goes to slot (ptr + j) % size, as if written one at a time; of more than ``size``
        # keys only the newest ``size`` survive, in the slots they would have ended in
        first = max(n - self.size, 0)
        slots = (self._ptr + torch.arange(first, n, device=self.keys.device)) % self.size
        self.keys[slots] = keys[first:].to(self.keys.device, self.keys.dtype)
        self.labels[slots] = labels[first:].to(self.labels.device, torch.long)
        self._ptr, self._filled = (self._ptr + n) % self.size, min(self._filled + n, self.size)
        self.ptr.fill_(self._ptr)
        self.filled.fill_(self._filled)
