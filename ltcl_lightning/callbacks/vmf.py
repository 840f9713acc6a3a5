"""ProCo online vMF estimation: the per-epoch window of the estimators, and kappa by group.

Spec proco.md (a): at the start of every epoch (epoch 0 included) the "old" estimator takes the
"new" one's statistics and "new" restarts (fresh seeded means, count 0), so during epoch e the
loss uses the features of epoch e-1 and of epoch e so far. The step-wise updates happen inside
the method's loss (before the logits, as the reference does); this callback owns the window.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from ltcl_lightning.longtail import group_means
from ltcl_lightning.modules import state_modules
from ltcl_lightning.modules.vmf import VMFEstimator


class VMFEstimation(pl.Callback):
    """Swaps the estimators' window at each epoch start; logs the mean concentration kappa of
    the Many / Medium / Few classes (``vmf/kappa_<group>``) and its overall median at epoch end.

    The swap is idempotent per epoch (``VMFEstimator.start_epoch``), and is also applied in
    ``on_train_start`` because a resume skips ``on_train_epoch_start`` (mid-epoch, and at a
    checkpoint written at an epoch's last batch): a checkpoint taken inside epoch e already holds
    epoch e's window and is used as it is; one taken at the last batch of epoch e gets epoch
    e+1's swap. The callback finds the estimator by type and holds no state.
    """

    @staticmethod
    def _estimator(pl_module) -> VMFEstimator:
        return state_modules(pl_module, VMFEstimator, "VMFEstimation", "ProCo")[0]

    def on_train_start(self, trainer, pl_module) -> None:
        self._estimator(pl_module).start_epoch(trainer.current_epoch)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._estimator(pl_module).start_epoch(trainer.current_epoch)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        kappa = self._estimator(pl_module).kappa().detach().double().cpu()
        for name, mean in group_means(kappa, pl_module.class_group).items():
            pl_module.log(f"vmf/kappa_{name}", mean)
        pl_module.log("vmf/kappa_median", float(torch.median(kappa)))
