"""Pure loss functions on tensors (no Lightning, no datasets)."""

from ltcl_lightning.losses.classification import logit_adjusted_cross_entropy
from ltcl_lightning.losses.contrastive import nt_xent_loss, supcon_loss

__all__ = ["nt_xent_loss", "supcon_loss", "logit_adjusted_cross_entropy"]
