"""Building blocks of SDCLR's self-competitor (Jiang et al., ICML 2021; spec ``sdclr.md``).

- :class:`MaskedConv2d`: a convolution that runs dense (``conv(x, w)``) or pruned
  (``conv(x, w * mask)``); the mask is a registered, persistent ``bool`` buffer (in the
  checkpoint, moved by ``.to()``), unlike the reference where it is a plain attribute.
- :class:`DualBatchNorm`: two batch-norms (separate affine parameters and running statistics),
  ``bn_list.0`` for the dense branch and ``bn_list.1`` for the pruned one (the reference's
  state-dict naming).
- :func:`convert_to_prunable`: replaces, in place, every ``nn.Conv2d`` by a ``MaskedConv2d`` and
  every batch-norm by a ``DualBatchNorm`` (works for any backbone of ``modules.backbones`` and
  for the projection head).
- :class:`PrunableNetwork`: wraps a converted network; ``forward(x, pruned=False)`` is the
  per-call branch switch, dense by default (evaluation and the linear probe use the dense
  branch with the dense batch-norm).
- :func:`global_magnitude_masks` / :func:`prune_global`: one magnitude threshold over every
  prunable convolution weight (section (a) of the spec), computed on the weights' device with
  ``torch.kthvalue`` (the reference copies all weights to the host and fully sorts them).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

_Conv = TypeVar("_Conv", bound=nn.Conv2d)


def _conv_like(cls: Callable[..., _Conv], conv: nn.Conv2d) -> _Conv:
    """A ``cls`` convolution with ``conv``'s geometry sharing its Parameter objects, so a
    converted model keeps its weights (and the optimiser's references to them)."""
    new = cls(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
        conv.padding_mode,
        device=conv.weight.device,
        dtype=conv.weight.dtype,
    )
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    return new


class MaskedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with a binary weight mask used only when ``self.pruned`` is True."""

    prune_mask: torch.Tensor  # buffer, registered in __init__

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # bool: 1 byte per weight in checkpoints, and .half()/.double() leave it alone
        self.register_buffer("prune_mask", torch.ones_like(self.weight, dtype=torch.bool), persistent=True)
        self.pruned = False

    @classmethod
    def from_conv(cls, conv: nn.Conv2d) -> MaskedConv2d:
        if type(conv) is not nn.Conv2d:
            raise TypeError(f"can only convert a plain nn.Conv2d, got {type(conv).__name__}")
        return _conv_like(cls, conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pruned:
            # d(w*m)/dw = m: masked weights get no gradient from the pruned branch (spec (a)).
            # Cast first: float*bool takes torch's slow type-promotion path (~5x on CPU).
            return self._conv_forward(x, self.weight * self.prune_mask.to(self.weight.dtype), self.bias)
        return self._conv_forward(x, self.weight, self.bias)

    @property
    def density(self) -> float:
        return float(self.prune_mask.float().mean())


class DualBatchNorm(nn.Module):
    """Two copies of a batch-norm: ``bn_list[0]`` for the dense branch, ``bn_list[1]`` for the
    pruned one. Each has its own affine parameters and running statistics (spec (c))."""

    def __init__(self, bn: _BatchNorm):
        super().__init__()
        if not isinstance(bn, _BatchNorm):
            raise TypeError(f"DualBatchNorm wraps a batch-norm module, got {type(bn).__name__}")
        self.bn_list = nn.ModuleList([bn, copy.deepcopy(bn)])
        self.pruned = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn_list[1 if self.pruned else 0](x)

    @property
    def dense(self) -> nn.Module:
        return self.bn_list[0]

    @property
    def pruned_bn(self) -> nn.Module:
        return self.bn_list[1]


def convert_to_prunable(module: nn.Module) -> nn.Module:
    """Replace, in place, every ``nn.Conv2d`` by :class:`MaskedConv2d` and every batch-norm by
    :class:`DualBatchNorm`; returns ``module`` (or the replacement if ``module`` itself is one).

    Weights are shared with the original layers (no copy); the pruned batch-norm copies start
    as copies of the dense ones. Already-converted parts are left as they are.
    """
    if type(module) is nn.Conv2d:
        return MaskedConv2d.from_conv(module)
    if isinstance(module, _BatchNorm):
        return DualBatchNorm(module)
    if isinstance(module, (MaskedConv2d, DualBatchNorm)):
        return module
    for name, child in list(module.named_children()):
        new = convert_to_prunable(child)
        if new is not child:
            setattr(module, name, new)
    bad = [n for n, m in module.named_modules() if isinstance(m, nn.modules.conv._ConvNd) and not isinstance(m, MaskedConv2d)]
    if bad:
        raise TypeError(f"convert_to_prunable supports nn.Conv2d only; these convolutions cannot be masked: {bad[:5]}")
    return module


def _switchable(module: nn.Module) -> Iterator[MaskedConv2d | DualBatchNorm]:
    for m in module.modules():
        if isinstance(m, (MaskedConv2d, DualBatchNorm)):
            yield m


def set_branch(module: nn.Module, pruned: bool) -> None:
    """Route every masked conv and dual batch-norm inside ``module`` to one branch."""
    for m in _switchable(module):
        m.pruned = pruned


@contextmanager
def pruned_branch(*modules: nn.Module):
    """Run the pruned branch inside the block; always back to dense afterwards."""
    try:
        for mod in modules:
            set_branch(mod, True)
        yield
    finally:
        for mod in modules:
            set_branch(mod, False)


class PrunableNetwork(nn.Module):
    mask_epoch: torch.Tensor  # buffer, registered in __init__ when the network prunes
    """A network converted by :func:`convert_to_prunable`; ``forward(x, pruned=False)``.

    Dense by default, so ``backbone(x)`` of an SDCLR model is the dense network with the dense
    batch-norm (what the linear probe must use; the BoostedCL code's in-training probe used the
    pruned one by accident). ``out_dim`` is taken from the wrapped network when it has one.

    With a ``ratio`` it owns SDCLR's per-epoch re-pruning (spec (b)): :meth:`start_epoch`
    recomputes the masks from the current dense weights when the masks in use are older than
    the epoch they are due for, and records that epoch in the persistent ``mask_epoch`` buffer.
    """

    def __init__(self, net: nn.Module, ratio: float | None = None, random_ratio: float = 0.0, seed: int = 0):
        """``ratio``: fraction of the convolution weights :meth:`recompute_masks` prunes (``None``:
        not this network's to re-prune, e.g. a head); ``random_ratio``: the part of it pruned at
        random (reference ``random_prune_percent``), from ``seed`` and the epoch (same on every rank)."""
        super().__init__()
        if ratio is not None:
            _check_ratio("prune_ratio", ratio)
            if not 0.0 <= random_ratio <= ratio:
                raise ValueError(f"random_prune_ratio must be in [0, prune_ratio={ratio}], got {random_ratio}")
            # epoch whose start produced the current masks (-1: never), checkpointed
            self.register_buffer("mask_epoch", torch.tensor(-1, dtype=torch.long))
        self.ratio, self.random_ratio, self.seed = ratio, random_ratio, seed
        self.net = convert_to_prunable(net)
        if hasattr(net, "out_dim"):
            self.out_dim = net.out_dim

    def forward(self, x: torch.Tensor, pruned: bool = False) -> torch.Tensor:
        if not pruned:
            return self.net(x)
        with pruned_branch(self.net):
            return self.net(x)

    def masked_convs(self) -> dict[str, MaskedConv2d]:
        return masked_convs(self.net)

    def mask_densities(self) -> dict[str, float]:
        return mask_densities(self.net)

    @torch.no_grad()
    def recompute_masks(self, epoch: int) -> dict[str, float]:
        """Global magnitude pruning of the convolutions from the current weights.

        Every rank computes the same mask (identical weights, identically seeded random part);
        the masks are then broadcast from rank 0 so that they agree whatever the DDP settings.
        """
        assert self.ratio is not None, "built without prune_ratio: this network has no masks to recompute"
        generator = None
        if self.random_ratio > 0:
            generator = torch.Generator(device=self.mask_epoch.device)
            generator.manual_seed(self.seed * 1_000_003 + epoch)
        stats = prune_global(self, self.ratio, self.random_ratio, generator)
        broadcast_masks(self)
        self.mask_epoch.fill_(epoch)
        if self.random_ratio > 0:  # after the broadcast the counts are rank 0's
            stats["overall"] = mask_densities(self)["overall"]
        return stats

    def start_epoch(self, epoch: int, every_n_epochs: int = 1) -> dict[str, float] | None:
        """Masks for ``epoch`` (re-pruned at epochs 0, n, 2n, ...): recomputed unless the masks in
        use already belong to the last due epoch (idempotent: any hook may call it, a resume from
        any checkpoint gets the masks an uninterrupted run has). Returns the stats if recomputed."""
        if int(self.mask_epoch) >= epoch - epoch % every_n_epochs:  # one host sync per epoch
            return None
        return self.recompute_masks(epoch)

    def to_dense(self) -> nn.Module:
        """A deep copy of the wrapped network as plain layers (``Conv2d`` and the dense BN
        copy), e.g. to load into code that does not know SDCLR; masks are dropped."""
        return to_dense(copy.deepcopy(self.net))


def to_dense(module: nn.Module) -> nn.Module:
    """Undo :func:`convert_to_prunable` in place: plain ``Conv2d`` and the dense BN copy."""
    if isinstance(module, DualBatchNorm):
        return module.bn_list[0]
    if isinstance(module, MaskedConv2d):
        return _conv_like(nn.Conv2d, module)
    for name, child in list(module.named_children()):
        new = to_dense(child)
        if new is not child:
            setattr(module, name, new)
    return module


def masked_convs(module: nn.Module) -> dict[str, MaskedConv2d]:
    """Prunable layers by qualified name, in module order (the order of the global sort)."""
    return {name: m for name, m in module.named_modules() if isinstance(m, MaskedConv2d)}


# ----- global magnitude pruning ---------------------------------------------------------------


def _check_ratio(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(
            f"{name} must be in [0, 1) (fraction of convolution weights to prune; SDCLR uses 0.9 on "
            f"CIFAR and 0.3 on ImageNet-100), got {value}"
        )


@torch.no_grad()
def global_magnitude_masks(weights: list[torch.Tensor], ratio: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One threshold over all weights together (spec (a)):

    ``N`` = number of weights, ``k = ceil(ratio * N)``, ``thr`` = the value at 0-based position
    ``min(k, N - 1)`` of the ascending ``|w|``, mask ``|w| >= thr`` (ties at the threshold are
    kept, so fewer than ``k`` weights may be pruned). ``ratio = 0`` keeps everything.

    Computed on the weights' device with ``torch.kthvalue`` (a selection, no full sort, no host
    copy). Returns ``(threshold tensor, [bool mask per weight])``.
    """
    _check_ratio("prune ratio", ratio)
    if not weights:
        raise ValueError("no prunable weights: the network has no nn.Conv2d layers")
    mags = [w.detach().abs() for w in weights]
    flat = torch.cat([m.flatten() for m in mags])
    n = flat.numel()
    k = math.ceil(ratio * n)
    # kthvalue is 1-based: the (idx+1)-th smallest is v[idx] of the 0-based ascending sort
    thr = torch.kthvalue(flat, min(k, n - 1) + 1).values
    return thr, [m >= thr for m in mags]


@torch.no_grad()
def prune_global(module: nn.Module, ratio: float, random_ratio: float = 0.0, generator: torch.Generator | None = None) -> dict[str, float]:
    """Recompute every mask of ``module``'s :class:`MaskedConv2d` layers from the current dense
    weights (from scratch, not cumulative, as the reference).

    ``random_ratio > 0`` reproduces the reference's random component: magnitude pruning at
    ``ratio - random_ratio``, then every kept weight is dropped with probability
    ``ceil(random_ratio * N) / (N - ceil((ratio - random_ratio) * N))``. The draw uses
    ``generator`` (seed it identically on every rank so that all ranks draw the same mask; the
    reference seeds with ``seed + rank`` and its masks differ across ranks). Unlike the
    reference, no random numbers are drawn when ``random_ratio == 0``.

    Returns the overall density, the threshold and the number of pruned weights.
    """
    _check_ratio("prune ratio", ratio)
    if not 0.0 <= random_ratio <= ratio:
        raise ValueError(f"random_ratio must be in [0, ratio={ratio}], got {random_ratio}")
    layers = list(masked_convs(module).values())
    if not layers:
        raise ValueError(f"{type(module).__name__} has no MaskedConv2d layer: convert it with convert_to_prunable first")
    mag_ratio = ratio - random_ratio
    thr, masks = global_magnitude_masks([m.weight for m in layers], mag_ratio)
    n = sum(m.numel() for m in masks)
    if random_ratio > 0:
        p_drop = math.ceil(random_ratio * n) / (n - math.ceil(mag_ratio * n))
        for i, m in enumerate(masks):
            dev = generator.device if generator is not None else m.device
            u = torch.rand(m.shape, generator=generator, device=dev).to(m.device)
            masks[i] = m & (u >= p_drop)
    for layer, m in zip(layers, masks):
        layer.prune_mask.copy_(m)
    kept = torch.stack([m.sum() for m in masks]).sum()
    kept_i = int(kept)
    return {"overall": kept_i / n, "threshold": float(thr), "num_pruned": float(n - kept_i), "num_weights": float(n)}


@torch.no_grad()
def mask_densities(module: nn.Module) -> dict[str, float]:
    """Density (kept fraction) of every prunable layer by name, plus ``'overall'``."""
    layers = masked_convs(module)
    if not layers:
        return {}
    kept = torch.stack([m.prune_mask.sum() for m in layers.values()]).tolist()  # one host sync
    sizes = [m.prune_mask.numel() for m in layers.values()]
    out = {name: k / s for name, k, s in zip(layers, kept, sizes)}
    out["overall"] = sum(kept) / sum(sizes)
    return out


@torch.no_grad()
def broadcast_masks(module: nn.Module, src: int = 0) -> None:
    """Make every rank hold rank ``src``'s masks (one collective; no-op without DDP)."""
    from ltcl_lightning.utils import dist

    if not dist.is_distributed():
        return
    layers = list(masked_convs(module).values())
    if not layers:
        return
    # uint8 rather than bool: every backend (gloo, NCCL) broadcasts bytes
    flat = torch.cat([m.prune_mask.flatten() for m in layers]).to(torch.uint8)
    dist.broadcast(flat, src=src)
    for layer, part in zip(layers, flat.split([m.prune_mask.numel() for m in layers])):
        layer.prune_mask.copy_(part.view_as(layer.prune_mask).bool())
