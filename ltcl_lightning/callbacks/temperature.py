"""Temperature schedules for NT-Xent (Kukleva, Böhle, Schiele, Kuehne, Rupprecht, "Temperature
Schedules for Self-Supervised Contrastive Methods on Long-Tail Data", ICLR 2023; official
``Annusha/temperature_schedules`` ``train_simCLR.py``, ``--adj_tau cos``).

The temperature oscillates between ``tau_max`` (group-wise discrimination, good for head
classes) and ``tau_min`` (instance discrimination, good for tail classes):

    tau(e) = tau_min + (tau_max - tau_min) (1 + cos(pi e / t_max)) / 2

with ``e`` the epoch, constant within an epoch, counted from 1 as in the official loop
(``start_epoch = 1``): Lightning's epoch ``k`` (from 0) gets ``tau(k + 1)``. The period is
``2 t_max`` epochs. Defaults are the README recipes' (``tau_min 0.1``, ``tau_max 1.0``,
``t_max 200``; the argparse default of ``tau_max`` is 0.5).

:class:`TemperatureSchedule` writes ``pl_module.temperature`` before every training batch, so
it drives every method whose loss reads ``self.temperature`` at each step (SimCLR, SDCLR,
BoostedCL BCL-I / BCL-D, SupCon, the hard-negative / debiased variants). The value is a
function of the epoch, which the checkpoint restores: a resume, mid-epoch too, continues with
exactly the same temperature; the callback keeps no state of its own.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl


def cosine_temperature(epoch: float, tau_min: float, tau_max: float, t_max: float) -> float:
    """``tau_min + (tau_max - tau_min) (1 + cos(pi epoch / t_max)) / 2`` (official, ``epoch`` from 1)."""
    return tau_min + 0.5 * (tau_max - tau_min) * (1 + math.cos(math.pi * epoch / t_max))


class TemperatureSchedule(pl.Callback):
    def __init__(self, tau_min: float = 0.1, tau_max: float = 1.0, t_max: int = 200):
        """
        Args:
            tau_min: lowest temperature (reached at epochs t_max, 3 t_max, ...; official 0.1).
            tau_max: highest temperature (epoch 0, 2 t_max, ...; official README recipes 1.0).
            t_max: half period in epochs (official 200).
        """
        if not 0 < tau_min <= tau_max:
            raise ValueError(f"need 0 < tau_min <= tau_max, got tau_min={tau_min}, tau_max={tau_max}")
        if t_max < 1:
            raise ValueError(f"t_max (half period, epochs) must be >= 1, got {t_max}")
        self.tau_min, self.tau_max, self.t_max = tau_min, tau_max, t_max

    def temperature(self, epoch: int) -> float:
        """The temperature of Lightning's (0-based) epoch ``epoch``."""
        return cosine_temperature(epoch + 1, self.tau_min, self.tau_max, self.t_max)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        value = getattr(pl_module, "temperature", None)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(
                f"TemperatureSchedule sets the NT-Xent temperature of the model, but {type(pl_module).__name__} has "
                f"no float attribute 'temperature' (found {value!r}); use it with SimCLR, SDCLR, BoostedCL or a "
                "hard-negative / debiased variant."
            )

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, batch_idx: int) -> None:
        tau = self.temperature(trainer.current_epoch)
        pl_module.temperature = tau  # type: ignore[assignment]  # a plain float attribute (checked at setup)
        pl_module.log("train/temperature", tau, on_step=False, on_epoch=True, batch_size=1)
