"""LARS (You et al., 2017), from its published update rule (spec simclr_supcon.md).

For each parameter tensor ``w`` with gradient ``g``:
``g <- g + wd * w``; ``trust = eta * ||w|| / ||g||`` if both norms are > 0, else 1;
``v <- momentum * v + lr * trust * g``; ``w <- w - v``.
Parameter groups with ``lars_exclude=True`` (biases and norm layers, by convention) skip both
the adaptation and the weight decay and get a plain momentum-SGD update.
"""

from __future__ import annotations

import torch
from torch.optim import Optimizer


class LARS(Optimizer):
    def __init__(
        self, params, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, eta: float = 1e-3, exclude_bias_and_norm: bool = True
    ):
        if lr < 0:
            raise ValueError(f"lr must be >= 0, got {lr}")
        defaults = dict(lr=lr, momentum=momentum, weight_decay=weight_decay, eta=eta, lars_exclude=False)
        groups = list(params)
        if groups and not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        if exclude_bias_and_norm:
            # 1-D tensors (biases, norm-layer affine parameters) skip adaptation and weight decay
            split = []
            for g in groups:
                ps = list(g["params"])
                rest = {k: v for k, v in g.items() if k != "params"}
                split.append({**rest, "params": [p for p in ps if p.ndim > 1]})
                split.append({**rest, "params": [p for p in ps if p.ndim <= 1], "lars_exclude": True})
            groups = [g for g in split if g["params"]]
        params = groups
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if not group["lars_exclude"]:
                    if group["weight_decay"] != 0:
                        g = g.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.norm(p), torch.norm(g)
                    trust = torch.where((w_norm > 0) & (g_norm > 0), group["eta"] * w_norm / g_norm, torch.ones_like(w_norm))
                    g = g * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"]
                buf.mul_(group["momentum"]).add_(g, alpha=group["lr"])
                p.sub_(buf)
        return loss
