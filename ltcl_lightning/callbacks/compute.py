"""``ComputeSwitches``: channels_last and ``torch.compile`` for any method, as a callback.

The other compute switches are the Trainer's and the optimiser's own options, named here so
that one page lists them all (``docs/compute.md``):

- ``trainer.precision: bf16-mixed`` (autocast to bfloat16; the losses compute in float32 at
  least, the vMF / Bessel terms in float64), ``32-true`` the published setting;
- ``trainer.benchmark: true`` sets ``torch.backends.cudnn.benchmark`` (fixed CIFAR shapes);
- fused / foreach optimiser steps: ``torch.optim.SGD``'s ``fused: true`` or ``foreach: true``
  in the optimiser's ``init_args`` (every recipe uses SGD).

This callback adds what Lightning does not switch by itself:

- ``channels_last``: the model's parameters and every input batch of the backbone in NHWC
  memory format (faster convolutions with bf16 on tensor cores);
- ``compile``: ``"modules"`` compiles each child module with parameters in place
  (``nn.Module.compile``: state-dict keys and checkpoints unchanged), ``"step"`` compiles the
  method's whole ``training_loss`` (backbone, heads and loss in one graph; the loss is where
  the many small elementwise kernels of ProCo / BalancedCL fuse), ``"none"`` nothing.
"""

from __future__ import annotations

from typing import Literal

import lightning.pytorch as pl
import torch

CompileWhat = Literal["none", "modules", "step"]


def _to_channels_last(module: torch.nn.Module, args):
    return tuple(a.contiguous(memory_format=torch.channels_last) if torch.is_tensor(a) and a.ndim == 4 else a for a in args)


class ComputeSwitches(pl.Callback):
    """
    Args:
        channels_last: NHWC parameters and backbone inputs.
        compile: ``"none"``, ``"modules"`` or ``"step"`` (see the module docstring).
        compile_mode: ``torch.compile``'s mode (``None``, ``"reduce-overhead"``, ``"max-autotune"``).
        compile_backend: ``torch.compile``'s backend (``"inductor"``; ``"aot_eager"`` traces and
            differentiates without generating code, for checks on the CPU).
    """

    def __init__(
        self, channels_last: bool = False, compile: CompileWhat = "none", compile_mode: str | None = None, compile_backend: str = "inductor"
    ):
        if compile not in ("none", "modules", "step"):
            raise ValueError(f"compile must be 'none', 'modules' or 'step', got {compile!r}")
        self.channels_last = channels_last
        self.compile = compile
        self.compile_mode = compile_mode
        self.compile_backend = compile_backend

    def apply(self, pl_module: pl.LightningModule) -> None:
        """Switch ``pl_module`` (idempotent)."""
        if getattr(pl_module, "_compute_switches_applied", False):
            return
        if self.channels_last:
            pl_module.to(memory_format=torch.channels_last)
            backbone = getattr(pl_module, "backbone", pl_module)
            backbone.register_forward_pre_hook(_to_channels_last)
        options = {"mode": self.compile_mode, "backend": self.compile_backend}
        if self.compile == "modules":
            for child in pl_module.children():
                if any(True for _ in child.parameters()):
                    child.compile(**options)
        elif self.compile == "step":
            pl_module.training_loss = torch.compile(pl_module.training_loss, **options)  # type: ignore[call-overload]
        pl_module._compute_switches_applied = True  # type: ignore[assignment]

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.apply(pl_module)
