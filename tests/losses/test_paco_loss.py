"""PaCo / GPaCo loss against the official PaCoLoss (PaCo/LT/losses.py, GPaCo/LT/losses.py)
re-stated in float64 on the CPU, and against a per-anchor Python loop; the limits (alpha = 0:
logit-adjusted CE on the centres; beta = 0, gamma = 1: SupCon over the items); gradcheck."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ltcl_lightning.losses.paco import paco_loss
from ltcl_lightning.losses.queue import queue_supcon_loss


def official_paco(
    features, labels, sup_logits, weight, alpha, beta, gamma, temperature, K, num_classes, smooth=0.0, gpaco=False, eps=1e-12
):
    """PaCoLoss.forward of the official code (device handling removed). PaCo: batch_size =
    (n - K) // 2 anchors; GPaCo: n - K anchors. ``eps``: the official 1e-12 inside the log; after
    the max-subtraction (the max is the masked self column, 1/T) the sum can be ~e^-10, so the
    epsilon moves the loss by ~1e-8 relative: compared at eps = 0 to 1e-12, at 1e-12 to 1e-6."""
    batch_size = features.shape[0] - K if gpaco else (features.shape[0] - K) // 2
    labels = labels.contiguous().view(-1, 1)
    mask = torch.eq(labels[:batch_size], labels.T).double()
    anchor_dot_contrast = torch.div(torch.matmul(features[:batch_size], features.T), temperature)
    anchor_dot_contrast = torch.cat(((sup_logits + torch.log(weight + 1e-9)) / 1.0, anchor_dot_contrast), dim=1)
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    logits_mask = torch.scatter(torch.ones_like(mask), 1, torch.arange(batch_size).view(-1, 1), 0)
    mask = mask * logits_mask
    one_hot_label = F.one_hot(labels[:batch_size].view(-1), num_classes=num_classes).double()
    one_hot_label = smooth / (num_classes - 1) * (1 - one_hot_label) + (1 - smooth) * one_hot_label
    mask = torch.cat((one_hot_label * beta, mask * alpha), dim=1)
    logits_mask = torch.cat((torch.ones(batch_size, num_classes, dtype=torch.float64), gamma * logits_mask), dim=1)
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True) + eps)
    mean_log_prob_pos = (mask * log_prob).sum(1) / mask.sum(1)
    return (-mean_log_prob_pos).mean()


def data(b=6, p=5, c=4, k=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = F.normalize(torch.randn(b, p, generator=g, dtype=torch.float64), dim=1)
    kk = F.normalize(torch.randn(b, p, generator=g, dtype=torch.float64), dim=1)
    queue = F.normalize(torch.randn(k, p, generator=g, dtype=torch.float64), dim=1)
    labels = torch.randint(0, c, (b,), generator=g)
    qlabels = torch.randint(0, c, (k,), generator=g)
    sup = torch.randn(2 * b, c, generator=g, dtype=torch.float64) * 2
    prior = torch.rand(c, generator=g, dtype=torch.float64) + 0.1
    return q, kk, labels, sup, queue, qlabels, prior / prior.sum()


@pytest.mark.parametrize("alpha,beta,gamma,t", [(0.05, 1.0, 1.0, 0.2), (0.01, 1.0, 1.0, 0.05), (1.0, 0.5, 2.0, 0.3)])
def test_paco_matches_official(alpha, beta, gamma, t):
    q, k, y, sup, queue, ql, prior = data()
    b = q.shape[0]
    args = (torch.cat([q, k, queue]), torch.cat([y, y, ql]), sup[:b], prior[None], alpha, beta, gamma, t, len(queue), 4)
    got = paco_loss(q, k, y, sup[:b], queue, ql, t, alpha, beta, gamma, log_prior=torch.log(prior + 1e-9), gather=False)
    assert got.item() == pytest.approx(official_paco(*args, eps=0.0).item(), rel=1e-12)
    assert got.item() == pytest.approx(official_paco(*args).item(), rel=1e-6)


@pytest.mark.parametrize("smooth", [0.0, 0.1])
def test_gpaco_matches_official(smooth):
    q, k, y, sup, queue, ql, prior = data(seed=1)
    ref = official_paco(
        torch.cat([q, k, queue]),
        torch.cat([y, y, ql]),
        sup,
        prior[None],
        0.045,
        1.0,
        1.0,
        0.2,
        len(queue),
        4,
        smooth=smooth,
        gpaco=True,
        eps=0.0,
    )
    got = paco_loss(q, k, y, sup, queue, ql, 0.2, 0.045, log_prior=torch.log(prior + 1e-9), smooth=smooth, anchors="both", gather=False)
    assert got.item() == pytest.approx(ref.item(), rel=1e-12)


def loop(q, k, y, sup, queue, ql, t, alpha, beta, gamma, log_prior):
    """Per-anchor loop (PaCo), natural logs of the paper's eq. (PaCo loss), no stabilisation."""
    items = [(v, int(l)) for v, l in zip(torch.cat([q, k, queue]), torch.cat([y, y, ql]))]
    total = 0.0
    for a in range(len(q)):
        centre = [float(sup[a, c] + log_prior[c]) for c in range(sup.shape[1])]
        its = [(float(q[a] @ v) / t, l) for j, (v, l) in enumerate(items) if j != a]
        denom = sum(math.exp(x) for x in centre) + gamma * sum(math.exp(x) for x, _ in its)
        num = beta * (centre[int(y[a])] - math.log(denom)) + alpha * sum(x - math.log(denom) for x, l in its if l == int(y[a]))
        total += -num / (beta + alpha * sum(1 for _, l in its if l == int(y[a])))
    return total / len(q)


def test_paco_matches_loop_and_gradcheck():
    q, k, y, sup, queue, ql, prior = data(b=4, p=3, k=3, seed=2)
    lp = torch.log(prior)
    sup = sup[:4]
    got = paco_loss(q, k, y, sup, queue, ql, 0.3, 0.2, 1.0, 1.5, log_prior=lp, gather=False)
    assert got.item() == pytest.approx(loop(q, k, y, sup, queue, ql, 0.3, 0.2, 1.0, 1.5, lp), rel=1e-12)
    qq, ss = q.clone().requires_grad_(), sup.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a, s: paco_loss(a, k, y, s, queue, ql, 0.3, 0.2, 1.0, 1.5, log_prior=lp, gather=False), (qq, ss))
    kk = k.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda a, b_, s: paco_loss(a, b_, y, s, queue, ql, 0.3, 0.2, 1.0, 1.5, log_prior=lp, anchors="both", gather=False),
        (qq, kk, torch.cat([ss, ss]).detach().requires_grad_()),
    )


def test_limits():
    q, k, y, sup, queue, ql, prior = data(seed=3)
    b = q.shape[0]
    lp = torch.log(prior)
    # alpha = 0, gamma = 0: logit-adjusted cross-entropy on the centres (Balanced Softmax)
    ce = F.cross_entropy(sup[:b] + lp, y)
    assert paco_loss(q, k, y, sup[:b], queue, ql, 0.2, 0.0, 1.0, 0.0, log_prior=lp, gather=False).item() == pytest.approx(
        ce.item(), rel=1e-12
    )
    # beta = 0 and centres pushed to -inf: SupCon of the queries over [q, k, queue]
    far = torch.full_like(sup[:b], -1e4)
    sc = queue_supcon_loss(q, k, y, queue, ql, 0.2, gather=False)
    assert paco_loss(q, k, y, far, queue, ql, 0.2, 1.0, 0.0, 1.0, gather=False).item() == pytest.approx(sc.item(), rel=1e-12)


def test_bad_arguments():
    q, k, y, sup, queue, ql, prior = data()
    with pytest.raises(ValueError, match="rows"):
        paco_loss(q, k, y, sup, queue, ql, 0.2, 0.05)  # 2B rows for anchors='query'
    with pytest.raises(ValueError, match="no positive"):
        paco_loss(q, k, y, sup[:6], queue, ql, 0.2, 0.0, 0.0)
