"""LARS one step against a hand computation; LambdaLR schedules against their formulas."""

import math

import pytest
import torch

from ltcl_lightning.optim import LARS, ConstantLR, ExponentialDecay, WarmupCosine, WarmupMultiStep


def test_lars_one_step_by_hand():
    w = torch.nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = torch.nn.Parameter(torch.tensor([1.0]))
    w.grad = torch.tensor([[0.6, 0.8]])  # ||g|| = 1
    b.grad = torch.tensor([0.5])
    opt = LARS([w, b], lr=0.1, momentum=0.9, weight_decay=0.01, eta=0.02)
    opt.step()
    # w: g' = g + 0.01 w = [0.63, 0.84], ||g'|| = 1.05; trust = 0.02 * 5 / 1.05
    trust = 0.02 * 5 / 1.05
    expected_w = torch.tensor([[3.0 - 0.1 * trust * 0.63, 4.0 - 0.1 * trust * 0.84]])
    torch.testing.assert_close(w.data, expected_w)
    # bias excluded: plain momentum SGD, no decay, no trust ratio
    torch.testing.assert_close(b.data, torch.tensor([1.0 - 0.1 * 0.5]))
    # second step: momentum buffer v = 0.9 v + lr * trust' * g'
    v_prev = 0.1 * trust * torch.tensor([[0.63, 0.84]])
    w.grad = torch.tensor([[0.6, 0.8]])
    w_before = w.data.clone()
    g2 = w.grad + 0.01 * w_before
    trust2 = 0.02 * w_before.norm() / g2.norm()
    opt.step()
    torch.testing.assert_close(w.data, w_before - (0.9 * v_prev + 0.1 * trust2 * g2))


def test_lars_zero_norm_uses_trust_one_and_groups_keep_options():
    w = torch.nn.Parameter(torch.zeros(2, 2))
    w.grad = torch.ones(2, 2)
    opt = LARS([{"params": [w], "lr": 0.5}], lr=1.0, momentum=0.0)
    opt.step()
    torch.testing.assert_close(w.data, torch.full((2, 2), -0.5))


def _lrs(schedule, steps_per_epoch, epochs, base=1.0):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base)
    sched = schedule.build(opt, steps_per_epoch, epochs)
    out = []
    for _ in range(steps_per_epoch * epochs):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_cosine_per_step():
    lrs = _lrs(WarmupCosine(warmup_epochs=2, min_lr=1e-3), steps_per_epoch=5, epochs=10, base=0.5)
    assert lrs[0] == pytest.approx(0.5 / 10)  # first step: lr / warmup_steps (reference behaviour)
    assert lrs[9] == pytest.approx(0.5)
    assert lrs[10] == pytest.approx(0.5)  # cosine starts at the base lr
    assert lrs[-1] == pytest.approx(1e-3)  # ends at min_lr on the last step
    mid = 10 + (49 - 10) / 2
    assert lrs[int(mid)] < 0.5 and lrs[int(mid)] > 1e-3
    t = (30 - 10) / (49 - 10)
    assert lrs[30] == pytest.approx(1e-3 + (0.5 - 1e-3) * 0.5 * (1 + math.cos(math.pi * t)))


def test_warmup_multistep_per_epoch():
    lrs = _lrs(WarmupMultiStep(warmup_epochs=2, milestones=[4, 6], gamma=0.1), steps_per_epoch=3, epochs=8, base=0.3)
    per_epoch = lrs[::3]
    assert per_epoch == pytest.approx([0.15, 0.3, 0.3, 0.3, 0.03, 0.03, 0.003, 0.003])
    assert lrs[1] == lrs[0]  # constant within an epoch


def test_exponential_decay_reaches_min_lr():
    lrs = _lrs(ExponentialDecay(min_lr=1e-6), steps_per_epoch=2, epochs=5, base=1e-2)
    assert lrs[0] == pytest.approx(1e-2)
    assert lrs[-1] == pytest.approx(1e-6)
    assert lrs[4] == pytest.approx(1e-2 * (1e-4) ** (2 / 4))


def test_constant():
    assert set(_lrs(ConstantLR(), 2, 3, base=0.2)) == {0.2}
