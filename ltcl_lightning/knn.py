"""Weighted k-nearest-neighbour classification on frozen features, the SSL literature's cheap
probe (Wu et al., "Unsupervised Feature Learning via Non-Parametric Instance Discrimination",
CVPR 2018, Eq. 6; as in DINO's and solo-learn's ``WeightedKNNClassifier``).

Features are L2-normalised; for a query ``q`` the ``k`` training features ``x_i`` with the
largest cosine similarity ``s_i = q . x_i`` vote for their labels with weight
``exp(s_i / T)``; the prediction is the class with the largest total weight (ties: the smaller
class index). Defaults k = 200, T = 0.1 (InstDisc, DINO). With fewer than ``k`` training
features every one votes.

Pure torch (no Lightning): :class:`ltcl_lightning.callbacks.knn.KNNMonitor` runs it every N
epochs during training, ``ltcl probe`` once per probe set.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: k and temperature of InstDisc / DINO
DEFAULT_K = 200
DEFAULT_TEMPERATURE = 0.1


@torch.no_grad()
def knn_scores(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """(Q, C) summed vote weights ``sum_{i in top-k(q)} exp(s_i / T) [y_i = c]``, in float32
    (queries in chunks of ``chunk_size``: memory ``chunk_size x N``)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if train_features.ndim != 2 or query_features.ndim != 2 or train_features.shape[1] != query_features.shape[1]:
        raise ValueError(
            f"features must be (N, D) and (Q, D) with the same D, got {tuple(train_features.shape)} and {tuple(query_features.shape)}"
        )
    if train_labels.shape != (train_features.shape[0],):
        raise ValueError(f"train_labels must be ({train_features.shape[0]},), got {tuple(train_labels.shape)}")
    bank = F.normalize(train_features.float(), dim=1)
    labels = train_labels.to(bank.device).long()
    k = min(k, bank.shape[0])
    out = []
    for start in range(0, query_features.shape[0], chunk_size):
        q = F.normalize(query_features[start : start + chunk_size].float().to(bank.device), dim=1)
        sim, idx = (q @ bank.T).topk(k, dim=1)
        weight = (sim / temperature).exp()
        scores = torch.zeros(q.shape[0], num_classes, device=bank.device)
        out.append(scores.scatter_add_(1, labels[idx], weight))
    if not out:
        return torch.zeros(0, num_classes, device=bank.device)
    return torch.cat(out)


def knn_predict(
    train_features: torch.Tensor,
    train_labels: torch.Tensor,
    query_features: torch.Tensor,
    num_classes: int,
    k: int = DEFAULT_K,
    temperature: float = DEFAULT_TEMPERATURE,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """(Q,) predicted class of every query (see :func:`knn_scores`)."""
    return knn_scores(train_features, train_labels, query_features, num_classes, k, temperature, chunk_size).argmax(1)
