"""Projection heads and classifiers."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ProjectionHead(nn.Sequential):
    """MLP ``Linear -> BN -> ReLU`` x (num_layers - 1), then ``Linear`` (+ BN if ``last_bn``).

    SimCLR/BoostedCL reference: 2 layers, ``512-512-128``, hidden bias, BN on the output.
    SDCLR reference: 3 layers. ProCo/BalancedCL: 2 layers without output BN.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, last_bn: bool = True, hidden_bias: bool = True):
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        layers: list[nn.Module] = []
        d = in_dim
        for i in range(num_layers - 1):
            layers += [nn.Linear(d, hidden_dim, bias=hidden_bias and i == 0), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True)]
            d = hidden_dim
        layers.append(nn.Linear(d, out_dim, bias=not last_bn))
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim))
        super().__init__(*layers)


class NormedLinear(nn.Module):
    """Cosine classifier: ``scale * cos(h, w_c)``; weight (in, out), uniform(-1, 1), unit columns."""

    def __init__(self, in_dim: int, num_classes: int, scale: float = 30.0):
        super().__init__()
        w = torch.empty(in_dim, num_classes).uniform_(-1, 1)
        self.weight = nn.Parameter(F.normalize(w, dim=0))
        self.scale = scale

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(h, dim=1) @ F.normalize(self.weight, dim=0)


class OnlineLinearProbe(nn.Linear):
    """Linear classifier trained on detached backbone features next to a self-supervised method
    (as lightly's ``OnlineLinearClassifier``): it owns its loss, its accuracy and its optimiser
    group (``lr``, no weight decay). An ``nn.Linear``, so its checkpoint keys stay
    ``probe.weight`` / ``probe.bias`` as in every checkpoint written so far."""

    def __init__(self, in_dim: int, num_classes: int, lr: float = 0.1):
        super().__init__(in_dim, num_classes)
        self.lr = lr

    def loss_and_accuracy(self, features: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self(features.detach())
        return F.cross_entropy(logits, target), (logits.argmax(1) == target).float().mean()

    def param_group(self) -> dict:
        return {"params": list(self.parameters()), "lr": self.lr, "weight_decay": 0.0}
