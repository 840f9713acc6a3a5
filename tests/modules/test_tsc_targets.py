"""TSC targets: the official uniformity optimisation lowers the loss, the centroid EMA against a
hand computation, the matching against scipy's linear_sum_assignment, the positive mask with
repeated targets, checkpoint round trip with weights_only=True."""

from __future__ import annotations

import io

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from ltcl_lightning.modules.tsc_targets import TargetAssignment, uniform_targets


def uniformity(x, t=0.07):
    return float(x.matmul(x.T).div(t).exp().sum(dim=-1).log().mean())  # official uniform_loss


def test_uniform_targets_are_unit_and_more_uniform():
    start = uniform_targets(20, 8, steps=0, seed=3)
    opt = uniform_targets(20, 8, steps=100, seed=3)
    torch.testing.assert_close(opt.norm(dim=1), torch.ones(20))
    assert uniformity(opt) < uniformity(start)  # the self term e^(1/0.07) dominates the value

    def max_cos(x):
        return float((x @ x.T - 2 * torch.eye(len(x))).max())

    assert max_cos(opt) < max_cos(start) - 0.1  # the closest pair moved apart
    assert torch.equal(opt, uniform_targets(20, 8, steps=100, seed=3))  # deterministic


def test_centroid_ema_and_matching():
    a = TargetAssignment(4, 6, steps=50, seed=0)
    c0 = a.centroids.clone()
    g = torch.Generator().manual_seed(1)
    q = F.normalize(torch.randn(7, 6, generator=g), dim=1)
    y = torch.tensor([0, 0, 2, 2, 2, 3, 0])
    a.update(q, y)
    for c in range(4):
        if c == 1:  # absent from the batch: unchanged
            assert torch.equal(a.centroids[c], c0[c])
            continue
        mean = F.normalize(q[y == c].mean(0), dim=0)
        torch.testing.assert_close(a.centroids[c], F.normalize(0.9 * c0[c] + 0.1 * mean, dim=0), rtol=0, atol=1e-6)
    rows, cols = linear_sum_assignment(-(a.centroids @ a.targets.T).numpy())
    assert a.assignment.tolist() == cols[np.argsort(rows)].tolist()
    mask = a.positive_mask(y)
    assert torch.equal(mask, F.one_hot(a.assignment[y], 4).bool())


def test_repeated_targets_mask():
    a = TargetAssignment(3, 4, repeats=2, steps=10)
    assert a.targets.shape == (6, 4) and torch.equal(a.targets[0], a.targets[1])
    a.assignment.copy_(torch.tensor([2, 0, 1]))
    assert a.positive_mask(torch.tensor([0, 1])).tolist() == [[False] * 4 + [True] * 2, [True] * 2 + [False] * 4]


def test_checkpoint_round_trip():
    a = TargetAssignment(4, 6, steps=20)
    a.update(F.normalize(torch.randn(5, 6), dim=1), torch.tensor([0, 1, 2, 3, 1]))
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = TargetAssignment(4, 6, steps=0, seed=9)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_targets_are_generated_once_at_first_use_and_never_for_a_loaded_state(monkeypatch):
    import ltcl_lightning.modules.tsc_targets as mod

    calls = []
    real = mod.uniform_targets
    monkeypatch.setattr(mod, "uniform_targets", lambda *a, **k: calls.append(a) or real(*a, **k))
    a = TargetAssignment(4, 6, steps=20, seed=2)
    assert calls == []  # before: 10,000 Adam steps in every constructor (minutes for 1000 classes)
    state = a.state_dict()  # saving generates them: a checkpoint never holds the zero placeholder
    assert len(calls) == 1 and torch.equal(state["targets"], real(4, 6, steps=20, seed=2))
    assert torch.equal(a.targets, state["targets"]) and len(calls) == 1  # once
    b = TargetAssignment(4, 6, steps=20, seed=7)
    b.load_state_dict(state)  # a resume, probe or export: the checkpoint's targets, nothing generated
    assert torch.equal(b.targets, state["targets"]) and len(calls) == 1


def test_a_weight_zero_row_leaves_the_centroids_as_without_it():
    # the distributed sampler's padded repeat (weight 0) must not move a class centroid, as in one process
    g = torch.Generator().manual_seed(4)
    q = F.normalize(torch.randn(6, 6, generator=g), dim=1)
    y = torch.tensor([0, 1, 1, 2, 3, 1])
    a, b = TargetAssignment(4, 6, steps=5, seed=1), TargetAssignment(4, 6, steps=5, seed=1)
    a.update(q, y, weight=torch.tensor([1.0, 1, 1, 1, 1, 0]))
    b.update(q[:5], y[:5])
    torch.testing.assert_close(a.centroids, b.centroids, rtol=0, atol=1e-7)
    c = TargetAssignment(4, 6, steps=5, seed=1)
    c.update(q, y)
    assert not torch.allclose(c.centroids[1], b.centroids[1], atol=1e-4)  # the row counts when weighted 1
