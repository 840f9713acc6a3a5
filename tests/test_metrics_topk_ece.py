"""Top-5 and per-group expected calibration error of LongTailAccuracy, against numpy loops."""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics.functional.classification import multiclass_calibration_error

from ltcl_lightning.longtail import GROUP_NAMES
from ltcl_lightning.metrics import LongTailAccuracy, expected_calibration_error


def _ece_loop(conf: np.ndarray, correct: np.ndarray, n_bins: int = 15) -> float:
    total = 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        inside = (conf > lo) & (conf <= hi) if b else (conf >= lo) & (conf <= hi)
        if inside.any():
            total += inside.sum() / conf.size * abs(correct[inside].mean() - conf[inside].mean())
    return float(total)


def _data(n=300, c=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    target = torch.randint(0, c, (n,), generator=g)
    return logits, target


def test_ece_equals_a_binning_loop_and_torchmetrics():
    logits, target = _data()
    prob = logits.softmax(1)
    conf, pred = prob.max(1)
    ours = expected_calibration_error(conf, pred == target)
    assert abs(ours - _ece_loop(conf.numpy(), (pred == target).numpy())) < 1e-12
    ref = float(multiclass_calibration_error(prob, target, num_classes=20, n_bins=15, norm="l1"))
    assert abs(ours - ref) < 1e-6
    assert ours > 0.05  # random logits x 3 are over-confident: a wrong formula giving 0 fails


def test_top5_and_per_group_ece_once_per_sample():
    logits, target = _data()
    groups = torch.arange(20) % 3  # class -> Many / Medium / Few
    metric = LongTailAccuracy(20, groups)
    index = torch.arange(300)
    metric.update(index[:200], logits[:200].float(), target[:200])
    metric.update(index[200:], logits[200:].float(), target[200:])
    metric.update(index[:7], torch.randn(7, 20), target[:7])  # padded repeats: dropped by index
    res = metric.compute()
    top5 = np.argsort(-logits.numpy(), 1)[:, :5]
    assert abs(res["top5"] - float((top5 == target.numpy()[:, None]).any(1).mean())) < 1e-12
    conf = logits.float().softmax(1).amax(1).double().numpy()
    correct = (logits.argmax(1) == target).numpy()
    assert abs(res["ece"] - _ece_loop(conf, correct)) < 1e-9
    sample_group = groups[target].numpy()
    for g, name in enumerate(GROUP_NAMES):
        member = sample_group == g
        assert abs(res[f"ece_{name}"] - _ece_loop(conf[member], correct[member])) < 1e-9
    assert abs(res["acc"] - float(correct.mean())) < 1e-6


def test_class_predictions_alone_give_no_top5_or_ece():
    logits, target = _data(50, 20)
    metric = LongTailAccuracy(20, torch.zeros(20, dtype=torch.long))
    metric.update(torch.arange(50), logits.argmax(1), target)
    res = metric.compute()
    assert "top5" not in res and "ece" not in res
