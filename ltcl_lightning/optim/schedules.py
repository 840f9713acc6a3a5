"""Learning-rate schedules as small config objects that build a ``LambdaLR``.

The schedule is stepped every optimisation step (``interval='step'``); ``granularity='epoch'``
makes the factor constant within an epoch (ProCo's per-epoch warm-up, step decay and cosine).
Factors multiply each parameter group's initial lr; ``min_lr`` is absolute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

Granularity = Literal["step", "epoch"]


class LRSchedule:
    granularity: Granularity = "step"

    def factor(self, t: float, warm: float, total: float, min_ratio: float) -> float:
        raise NotImplementedError

    warmup_epochs: float = 0.0
    min_lr: float = 0.0

    def build(self, optimizer: Optimizer, steps_per_epoch: int, max_epochs: int) -> LambdaLR:
        if steps_per_epoch < 1 or max_epochs < 1:
            raise ValueError(f"need steps_per_epoch >= 1 and max_epochs >= 1, got {steps_per_epoch}, {max_epochs}")
        per = steps_per_epoch if self.granularity == "step" else 1
        total = max_epochs * per
        warm = self.warmup_epochs * per

        def make(base_lr: float):
            ratio = self.min_lr / base_lr if base_lr > 0 else 0.0

            def fn(step: int) -> float:
                t = step if self.granularity == "step" else step // steps_per_epoch
                if t < warm:
                    return (t + 1) / warm
                return self.factor(t, warm, total, ratio)

            return fn

        return LambdaLR(optimizer, [make(g["lr"]) for g in optimizer.param_groups])


class WarmupCosine(LRSchedule):
    """Linear warm-up over ``warmup_epochs`` (step t at (t + 1) / W of the lr), then cosine to
    ``min_lr``, as the official loops compute it (their ``LambdaLR`` / ``adjust_learning_rate``
    runs before iteration t, so the cosine at t is already at t + 1):

    * per step (SDCLR / BoostedCL ``cosine_annealing``): progress ``(t + 1 - W) / (T - W)``,
      ``min_lr`` on the last of the T steps (their recipes: 10 epochs, 1e-6);
    * per epoch (BCL / ProCo ``adjust_learning_rate``): progress ``(e + 1 - W) / (E + 1 - W)``,
      so the last epoch stays above ``min_lr``.
    """

    def __init__(self, warmup_epochs: float = 10, min_lr: float = 1e-6, granularity: Granularity = "step"):
        self.warmup_epochs, self.min_lr, self.granularity = warmup_epochs, min_lr, granularity

    def factor(self, t, warm, total, min_ratio):
        span = max(total - warm + (self.granularity == "epoch"), 1)
        progress = min((t + 1 - warm) / span, 1.0)
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class WarmupMultiStep(LRSchedule):
    """Linear warm-up, then x ``gamma`` at each milestone epoch (ProCo CIFAR: 5, [160, 180], 0.1)."""

    def __init__(
        self, warmup_epochs: float = 5, milestones: Sequence[int] = (160, 180), gamma: float = 0.1, granularity: Granularity = "epoch"
    ):
        self.warmup_epochs, self.milestones, self.gamma, self.granularity = warmup_epochs, list(milestones), gamma, granularity
        self._steps_per_epoch = 1

    def build(self, optimizer, steps_per_epoch, max_epochs):
        self._steps_per_epoch = steps_per_epoch if self.granularity == "step" else 1
        return super().build(optimizer, steps_per_epoch, max_epochs)

    def factor(self, t, warm, total, min_ratio):
        epoch = t / self._steps_per_epoch
        return self.gamma ** sum(epoch >= m for m in self.milestones)


class ExponentialDecay(LRSchedule):
    """Exponential decay from the base lr to ``min_lr`` at the last step (BCL's linear probe:
    Adam 1e-2 -> 1e-6 over 500 epochs)."""

    def __init__(self, min_lr: float = 1e-6, granularity: Granularity = "epoch"):
        self.min_lr, self.granularity = min_lr, granularity

    def factor(self, t, warm, total, min_ratio):
        if min_ratio <= 0:
            raise ValueError("ExponentialDecay needs min_lr > 0")
        return min_ratio ** (t / max(total - 1, 1))


class ConstantLR(LRSchedule):
    def __init__(self, warmup_epochs: float = 0):
        self.warmup_epochs = warmup_epochs

    def factor(self, t, warm, total, min_ratio):
        return 1.0
