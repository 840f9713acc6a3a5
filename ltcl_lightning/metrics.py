"""Long-tail evaluation: per-class accuracy, Many / Medium / Few, their spread.

Spec: data_and_eval.md sections 2 and 3. Every evaluation image counts exactly once: the metric
keeps ``(index, prediction, target)`` triples, gathers them from all ranks and drops the
repeated indices that a distributed sampler pads with, so the numbers under DDP equal the
single-process numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_calibration_error, multiclass_accuracy, multiclass_confusion_matrix
from torchmetrics.utilities import dim_zero_cat

from ltcl_lightning.longtail import GROUP_NAMES, group_means


def summarize(per_class: torch.Tensor, support: torch.Tensor, groups: torch.Tensor) -> dict[str, float]:
    """Group means of per-class accuracy (classes present in the evaluated labels only; an
    empty group reports 0 as in the reference code) and the population std of the three group
    means (the SSL papers' balancedness figure; groups that are empty are left out of it)."""
    present = support > 0
    means = group_means(per_class, groups, valid=present)
    out: dict[str, float] = {"mean_class_acc": float(per_class[present].mean()) if present.any() else 0.0}
    out.update({name: means.get(name, 0.0) for name in GROUP_NAMES})
    out["group_std"] = float(torch.tensor(list(means.values()), dtype=torch.float64).std(unbiased=False)) if means else 0.0
    return out


def most_confused_pairs(
    preds: torch.Tensor, target: torch.Tensor, num_classes: int, k: int | None = None
) -> list[tuple[int, int, int, float]]:
    """The ``k`` (default: all) largest off-diagonal confusion counts as ``(true, predicted, count,
    rate)``, rate = count / number of evaluation images of the true class. Ordered by count, then
    rate, then (true, predicted). Sparse: O(N log N) for N predictions, no C x C matrix."""
    preds, target = preds.long().flatten().cpu(), target.long().flatten().cpu()
    wrong = preds != target
    if not wrong.any() or (k is not None and k <= 0):
        return []
    uniq, counts = torch.unique(target[wrong] * num_classes + preds[wrong], return_counts=True)
    true, pred = uniq // num_classes, uniq % num_classes
    rate = counts.double() / torch.bincount(target, minlength=num_classes)[true].double()
    order = np.lexsort((pred.numpy(), true.numpy(), -rate.numpy(), -counts.numpy()))[:k]
    return list(zip(true[order].tolist(), pred[order].tolist(), counts[order].tolist(), rate[order].tolist()))


def expected_calibration_error(confidence: torch.Tensor, correct: torch.Tensor, n_bins: int = 15) -> float:
    """ECE (Guo et al., ICML 2017): ``sum_b |B_b|/N |acc(B_b) - conf(B_b)|`` over ``n_bins`` equal-width
    confidence bins: torchmetrics' ``binary_calibration_error`` (L1), on float64 values (in float32
    its sums drift: 0.6 % of the value at 1e5 samples)."""
    conf = confidence.double().flatten()
    if conf.numel() == 0:
        return 0.0
    return float(binary_calibration_error(conf, correct.flatten().long(), n_bins=n_bins, norm="l1"))


class LongTailAccuracy(Metric):
    """Overall top-1, per-class accuracy, group summaries and the confused class pairs (all of
    them, most confused first), deduplicated by sample index."""

    full_state_update = False
    groups: torch.Tensor
    index: list[torch.Tensor]  # states, registered in __init__
    preds: list[torch.Tensor]
    target: list[torch.Tensor]
    top5: list[torch.Tensor]
    confidence: list[torch.Tensor]

    def __init__(self, num_classes: int, groups: torch.Tensor, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.register_buffer("groups", torch.as_tensor(groups, dtype=torch.long).clone(), persistent=False)
        self.add_state("index", default=[], dist_reduce_fx="cat")
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        # from logits only: target among the top 5, and the softmax confidence of the prediction (ECE)
        self.add_state("top5", default=[], dist_reduce_fx="cat")
        self.add_state("confidence", default=[], dist_reduce_fx="cat")

    def update(self, index: torch.Tensor, preds: torch.Tensor, target: torch.Tensor) -> None:
        """``preds``: (B, C) logits (enables top-5 and ECE) or (B,) predicted classes."""
        if preds.ndim == 2:
            logits = preds.detach().float()
            top = logits.topk(min(5, logits.shape[1]), dim=1).indices
            self.top5.append((top == target.long()[:, None]).any(1).long())
            self.confidence.append(logits.softmax(1).amax(1).double())
            preds = logits.argmax(1)
        self.index.append(index.long())
        self.preds.append(preds.long())
        self.target.append(target.long())

    def predictions(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(predicted class, target) of every evaluated sample exactly once (gathered over ranks,
        padded repeats dropped by sample index)."""
        kept = self._deduplicated()
        return kept["preds"], kept["target"]

    def _deduplicated(self) -> dict[str, torch.Tensor]:
        """Every per-sample state once per sample index (the first occurrence: distributed-sampler
        padding repeats some); ``top5`` / ``confidence`` only when every update gave logits."""
        index = dim_zero_cat(self.index)
        columns = {name: dim_zero_cat(getattr(self, name)) for name in ("preds", "target")}
        for name in ("top5", "confidence"):
            state = getattr(self, name)  # a list, or one tensor once synced across ranks
            values = None if isinstance(state, list) and not state else dim_zero_cat(state)
            if values is not None and values.numel() == index.numel():
                columns[name] = values
        if index.numel() == 0:
            return columns
        order = torch.argsort(index, stable=True)
        index = index[order]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]
        return {name: values[order][keep] for name, values in columns.items()}

    def compute(self) -> dict[str, Any]:
        kept = self._deduplicated()
        preds, target = kept["preds"], kept["target"]
        per_class = multiclass_accuracy(preds, target, self.num_classes, average=None)
        support = torch.bincount(target, minlength=self.num_classes)
        per_class = torch.where(support > 0, per_class, torch.zeros_like(per_class))
        summary = summarize(per_class.cpu(), support.cpu(), self.groups.cpu())
        out: dict[str, Any] = {
            "acc": float((preds == target).float().mean()) if target.numel() else 0.0,
            **summary,
            "per_class": per_class,
            "support": support,
            "num_samples": int(target.numel()),
            "confused_pairs": most_confused_pairs(preds, target, self.num_classes),
        }
        if "top5" in kept and target.numel():
            out["top5"] = float(kept["top5"].double().mean())
        if "confidence" in kept and target.numel():
            correct = preds == target
            sample_group = self.groups.to(target.device)[target]
            out["ece"] = expected_calibration_error(kept["confidence"], correct)
            for g, name in enumerate(GROUP_NAMES):  # per group of the sample's true class
                member = sample_group == g
                if member.any():
                    out[f"ece_{name}"] = expected_calibration_error(kept["confidence"][member], correct[member])
        return out

    def confusion(self) -> torch.Tensor:
        """(C, C) confusion counts (rows: true class) of the deduplicated predictions."""
        preds, target = self.predictions()
        return multiclass_confusion_matrix(preds, target, self.num_classes)
