"""Long-tail metrics: per-class, groups, spread, and deduplication of padded repeats."""

import numpy as np
import torch

from ltcl_lightning.metrics import LongTailAccuracy


def test_group_means_std_and_overall_by_hand():
    groups = torch.tensor([0, 0, 1, 2])
    m = LongTailAccuracy(4, groups)
    target = torch.tensor([0, 0, 1, 1, 2, 2, 2, 3, 3, 3, 3, 0])
    preds = torch.tensor([0, 1, 1, 1, 2, 0, 0, 3, 3, 3, 0, 0])
    m.update(torch.arange(12), preds, target)
    r = m.compute()
    per_class = [2 / 3, 1.0, 1 / 3, 3 / 4]
    np.testing.assert_allclose(r["per_class"].numpy(), per_class, rtol=1e-6)
    assert r["acc"] == torch.tensor(8 / 12).item()
    many, med, few = (2 / 3 + 1.0) / 2, 1 / 3, 3 / 4
    np.testing.assert_allclose([r["many"], r["medium"], r["few"]], [many, med, few], rtol=1e-6)
    np.testing.assert_allclose(r["group_std"], np.std([many, med, few]), rtol=1e-6)
    np.testing.assert_allclose(r["mean_class_acc"], np.mean(per_class), rtol=1e-6)


def test_padded_repeats_counted_once():
    m = LongTailAccuracy(2, torch.tensor([0, 2]))
    # index 2 (a wrong prediction) arrives twice, as a DistributedSampler pads
    m.update(torch.tensor([0, 1, 2]), torch.tensor([0, 1, 0]), torch.tensor([0, 1, 1]))
    m.update(torch.tensor([2, 3]), torch.tensor([0, 1]), torch.tensor([1, 1]))
    r = m.compute()
    assert r["num_samples"] == 4
    assert r["acc"] == 0.75
    np.testing.assert_allclose(r["per_class"].numpy(), [1.0, 2 / 3], rtol=1e-6)


def test_empty_group_reports_zero_and_is_left_out_of_std():
    m = LongTailAccuracy(2, torch.tensor([0, 1]))  # no Few class
    m.update(torch.arange(4), torch.tensor([0, 0, 1, 0]), torch.tensor([0, 0, 1, 1]))
    r = m.compute()
    assert r["few"] == 0.0
    np.testing.assert_allclose(r["group_std"], np.std([1.0, 0.5]), rtol=1e-6)


def test_logits_are_argmaxed():
    m = LongTailAccuracy(3, torch.tensor([0, 1, 2]))
    m.update(torch.arange(2), torch.tensor([[0.1, 0.9, 0.0], [2.0, 0.0, 0.0]]), torch.tensor([1, 2]))
    assert m.compute()["acc"] == 0.5
