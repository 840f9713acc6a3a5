"""LARS one step against a hand computation; LambdaLR schedules against their formulas."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ltcl_lightning.optim import LARS, ConstantLR, ExponentialDecay, WarmupCosine, WarmupMultiStep

REPO = Path(__file__).resolve().parents[2]


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
    # Issue 13 fixed a one-step lag: step t uses the official factor at t + 1 (the reference LambdaLR
    # is stepped before each iteration); the old assertions lrs[10] == 0.5 and t = (30 - 10) / 39 were the lag.
    lrs = _lrs(WarmupCosine(warmup_epochs=2, min_lr=1e-3), steps_per_epoch=5, epochs=10, base=0.5)
    assert lrs[0] == pytest.approx(0.5 / 10)  # first step: lr / warmup_steps (reference behaviour)
    assert lrs[9] == pytest.approx(0.5)  # the last warm-up step reaches the base lr
    assert lrs[10] == pytest.approx(1e-3 + (0.5 - 1e-3) * 0.5 * (1 + math.cos(math.pi / 40)))  # cosine already moved
    assert lrs[-1] == pytest.approx(1e-3)  # ends at min_lr on the last step
    mid = 10 + (49 - 10) / 2
    assert lrs[int(mid)] < 0.5 and lrs[int(mid)] > 1e-3
    t = (30 + 1 - 10) / (50 - 10)
    assert lrs[30] == pytest.approx(1e-3 + (0.5 - 1e-3) * 0.5 * (1 + math.cos(math.pi * t)))


def _official_cosine_annealing(step, total_steps, lr_max, lr_min, warmup_steps):
    """SDCLR / BoostedCL ``utils.cosine_annealing``, as their LambdaLR evaluates it."""
    if step < warmup_steps:
        return lr_max * step / warmup_steps
    return lr_min + (lr_max - lr_min) * 0.5 * (1 + np.cos((step - warmup_steps) / (total_steps - warmup_steps) * np.pi))


def _recipe(path):
    cfg = yaml.safe_load((REPO / path).read_text())
    sched = cfg["model"]["init_args"]["lr_schedule"]
    assert sched["class_path"].endswith("WarmupCosine")
    return cfg, WarmupCosine(**sched["init_args"]), cfg["model"]["init_args"]["optimizer"]["init_args"]["lr"]


def test_warmup_cosine_equals_official_loop_over_the_sdclr_recipe():
    """The whole CIFAR-100-LT SDCLR run: 2000 epochs x ceil(9754 / 512) = 20 iterations; the official
    loop calls ``scheduler.step()`` before iteration i, so iteration i runs at cosine_annealing(i + 1)."""
    cfg, schedule, lr = _recipe("experiments/cifar100_lt/sdclr.yaml")
    epochs, iters = cfg["trainer"]["max_epochs"], math.ceil(9754 / cfg["data"]["init_args"]["batch_size"])
    assert (epochs, iters, lr) == (2000, 20, 0.5)
    ours = _lrs(schedule, iters, epochs, base=lr)
    official = [lr * _official_cosine_annealing(i + 1, epochs * iters, 1, 1e-6 / lr, 10 * iters) for i in range(epochs * iters)]
    np.testing.assert_allclose(ours, official, rtol=1e-12, atol=1e-15)


def test_warmup_cosine_per_epoch_equals_official_adjust_learning_rate():
    """ProCo / BCL ``adjust_learning_rate`` (set once per epoch e): warm-up lr (e + 1) / W, then
    lr * 0.5 * (1 + cos(pi (e - W + 1) / (E - W + 1))); the ImageNet-LT ProCo recipe has W = 0."""
    cfg, schedule, lr = _recipe("experiments/imagenet_lt/proco_r50.yaml")
    epochs = cfg["trainer"]["max_epochs"]
    assert (epochs, schedule.warmup_epochs, schedule.min_lr) == (90, 0, 0.0)
    for w, sched in ((0, schedule), (5, WarmupCosine(warmup_epochs=5, min_lr=0.0, granularity="epoch"))):
        official = [
            lr * (e + 1) / w if e < w else lr * 0.5 * (1 + math.cos(math.pi * (e - w + 1) / (epochs - w + 1))) for e in range(epochs)
        ]
        ours = _lrs(sched, 3, epochs, base=lr)
        np.testing.assert_allclose(ours[::3], official, rtol=1e-12)
        assert ours[1::3] == ours[::3]  # constant within an epoch


def test_warmup_cosine_default_decays_to_1e_6_as_every_recipe():
    assert WarmupCosine().min_lr == 1e-6 and WarmupCosine().warmup_epochs == 10
    assert _lrs(WarmupCosine(warmup_epochs=1), 2, 3, base=0.5)[-1] == pytest.approx(1e-6)


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
