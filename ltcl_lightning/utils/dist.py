"""The only module that calls ``torch.distributed``.

Everything that must be identical across ranks (gathered features for contrastive losses,
per-sample BoostedCL losses, ProCo class statistics, SDCLR masks) goes through these helpers,
so the single-process case is the same code path with a world size of 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def gather_sizes(n: int, device: torch.device | None = None) -> list[int]:
    """Every rank's local length ``n`` (one small all_gather); ``[n]`` with one process."""
    if not is_distributed():
        return [n]
    size = torch.tensor([n], device=device or torch.device("cpu"), dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _all_gather_padded(x: torch.Tensor, sizes: list[int] | None = None) -> tuple[torch.Tensor, list[int]]:
    """all_gather along dim 0 allowing a different length on each rank (``sizes``, if already
    known, saves the size exchange)."""
    if sizes is None:
        sizes = gather_sizes(x.shape[0], x.device)
    n_max = max(sizes)
    if x.shape[0] < n_max:
        pad = x.new_zeros((n_max - x.shape[0], *x.shape[1:]))
        x_p = torch.cat([x, pad], 0)
    else:
        x_p = x.contiguous()
    out = [torch.empty_like(x_p) for _ in sizes]
    dist.all_gather(out, x_p)
    return torch.cat([o[:s] for o, s in zip(out, sizes)], 0), sizes


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums every rank's gradient for the local slice.

    Each rank's loss uses the gathered tensor; the gradient reaching this rank's local rows is
    the sum over ranks of their losses' gradients (an all_reduce), which together with DDP's
    gradient averaging gives exactly the gradient of the mean of the per-rank losses.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, sizes: list[int] | None) -> torch.Tensor:  # type: ignore[override]
        gathered, sizes = _all_gather_padded(x, sizes)
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        return gathered

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        grad = grad.clone()  # all_reduce is in place: never write into autograd's buffer
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None


def gather(x: torch.Tensor, with_grad: bool = False, sizes: list[int] | None = None) -> torch.Tensor:
    """Concatenate ``x`` from all ranks along dim 0, in rank order.

    ``with_grad=True`` keeps the autograd graph (gradients flow back to every rank's inputs).
    ``sizes`` (every rank's length, from :func:`gather_sizes`) skips the size exchange.
    With a single process this returns ``x`` itself.
    """
    if not is_distributed():
        return x
    if with_grad and x.requires_grad:
        return _GatherWithGrad.apply(x, sizes)
    return _all_gather_padded(x.detach(), sizes)[0]


def gather_views(views: Sequence[torch.Tensor], labels: torch.Tensor | None = None) -> tuple[list[torch.Tensor], torch.Tensor | None, int]:
    """Gather V view tensors of shape (B, d) (with gradients) and optional labels (B,) from all
    ranks: one size exchange, one gather of the stacked views, one of the labels.

    Returns the global views (each (B_global, d), rank order), the global labels (or None) and
    the position of this rank's first sample in them.
    """
    if not is_distributed():
        return list(views), labels, 0
    b = views[0].shape[0]
    sizes = gather_sizes(b, views[0].device)
    offset = sum(sizes[: rank()])
    stacked = gather(torch.stack(list(views), 1), with_grad=True, sizes=sizes)  # (Bg, V, d)
    global_labels = gather(labels, sizes=sizes) if labels is not None else None
    return list(stacked.unbind(1)), global_labels, offset


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op with one process); returns ``x``."""
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def broadcast(x: torch.Tensor, src: int = 0) -> torch.Tensor:
    """In-place broadcast from ``src`` (no-op with one process); returns ``x``."""
    if is_distributed():
        dist.broadcast(x, src=src)
    return x
