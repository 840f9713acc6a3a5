"""Cross-entropy with logit adjustment (Menon et al., ICLR 2021)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logit_adjusted_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, class_prior: torch.Tensor | None = None, tau: float = 1.0
) -> torch.Tensor:
    """``CE(f(x) + tau * log(pi), y)``; ``tau = 0`` or no prior is plain cross-entropy.

    ``class_prior``: (C,) training class frequencies (counts / total). Test time uses raw logits.
    """
    if class_prior is not None and tau != 0:
        if class_prior.shape[-1] != logits.shape[-1]:
            raise ValueError(f"class prior has {class_prior.shape[-1]} classes, logits {logits.shape[-1]}")
        logits = logits + tau * torch.log(class_prior.to(logits.dtype))
    return F.cross_entropy(logits, target)
