"""KCL / TSC loss against the reference code's formula (LTH14/targeted-supcon moco/builder.py,
KCL.forward: logits [l_pos, queue, targets] / T, log of the L1-normalised exp, masks for the
class and target positives, both divided by the total positive count) re-stated in float64;
the sampling of k positives; gradcheck."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ltcl_lightning.losses.kcl import kcl_loss, sample_positives


def reference(q, k, y, queue, ql, t, class_mask, targets=None, target_mask=None, tw=1.0):
    """The official loss given the positive masks (``class_mask`` over the queue, ``target_mask``
    over the targets, as after its sampling / matching)."""
    l_pos = (q * k).sum(1, keepdim=True)
    neg = queue.T if targets is None else torch.cat([queue.T, targets.T], 1)
    logits = torch.cat([l_pos, q @ neg], 1) / t
    log_prob = F.normalize(logits.exp(), dim=1, p=1).log()
    n = len(y)
    tm = torch.zeros(n, 0, dtype=torch.float64) if target_mask is None else target_mask.double()
    mask_pos_view = torch.cat([torch.ones(n, 1, dtype=torch.float64), class_mask.double(), tm], 1)
    mask_class = torch.cat([torch.ones(n, 1, dtype=torch.float64), class_mask.double(), torch.zeros_like(tm)], 1)
    mask_target = torch.cat([torch.zeros(n, 1 + class_mask.shape[1], dtype=torch.float64), tm], 1)
    loss_class = -torch.sum((mask_class * log_prob).sum(1) / mask_pos_view.sum(1)) / n
    loss_target = -torch.sum((mask_target * log_prob).sum(1) / mask_pos_view.sum(1)) / n * tw
    return loss_class, loss_target


def data(b=6, p=4, kq=12, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = lambda *s: F.normalize(torch.randn(*s, generator=g, dtype=torch.float64), dim=-1)
    return n(b, p), n(b, p), torch.randint(0, c, (b,), generator=g), n(kq, p), torch.randint(0, c, (kq,), generator=g), g


def test_all_positives_match_reference():
    q, k, y, queue, ql, _ = data()
    ours = kcl_loss(q, k, y, queue, ql, 0.1, num_positives=None)
    ref = reference(q, k, y, queue, ql, 0.1, y[:, None] == ql[None, :])
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-12, atol=0)
    assert ours[1] == 0


def test_sampled_positives_and_loss():
    q, k, y, queue, ql, g = data()
    scores = torch.rand(6, 12, generator=g, dtype=torch.float64)
    pos = y[:, None] == ql[None, :]
    chosen = sample_positives(pos, 2, scores)
    assert (chosen <= pos).all()
    assert torch.equal(chosen.sum(1), pos.sum(1).clamp(max=2))
    # the chosen ones are the positives with the largest scores
    for i in range(6):
        idx = pos[i].nonzero().flatten()
        best = idx[scores[i, idx].argsort(descending=True)[:2]]
        assert set(chosen[i].nonzero().flatten().tolist()) == set(best.tolist())
    ours = kcl_loss(q, k, y, queue, ql, 0.1, num_positives=2, scores=scores)
    torch.testing.assert_close(ours[0], reference(q, k, y, queue, ql, 0.1, chosen)[0], rtol=1e-12, atol=0)


def test_sampling_is_uniform():
    pos = torch.tensor([[True, False, True, True, True]])
    g = torch.Generator().manual_seed(1)
    counts = torch.zeros(5)
    for _ in range(2000):
        counts += sample_positives(pos, 2, torch.rand(1, 5, generator=g))[0].float()
    assert counts[1] == 0
    freq = counts[[0, 2, 3, 4]] / 2000
    assert torch.allclose(freq, torch.full((4,), 0.5), atol=0.05)  # each of 4 picked with p = 2/4


def test_targets_match_reference():
    q, k, y, queue, ql, g = data(seed=2)
    targets = F.normalize(torch.randn(3, 4, generator=g, dtype=torch.float64), dim=1)
    assign = torch.tensor([2, 0, 1])
    tmask = F.one_hot(assign[y], 3).bool()
    ours = kcl_loss(q, k, y, queue, ql, 0.07, None, targets=targets, target_positive=tmask, target_weight=0.2)
    ref = reference(q, k, y, queue, ql, 0.07, y[:, None] == ql[None, :], targets, tmask, 0.2)
    torch.testing.assert_close(ours[0], ref[0], rtol=1e-12, atol=0)
    torch.testing.assert_close(ours[1], ref[1], rtol=1e-12, atol=0)


def test_gradcheck_and_keys_carry_no_gradient():
    q, k, y, queue, ql, g = data(b=4, p=3, kq=5, seed=3)
    targets = F.normalize(torch.randn(3, 3, generator=g, dtype=torch.float64), dim=1)
    tmask = F.one_hot(y, 3).bool()
    qq = q.clone().requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: sum(kcl_loss(x, k, y, queue, ql, 0.2, None, targets=targets, target_positive=tmask, target_weight=0.5)), (qq,)
    )
    kk = k.clone().requires_grad_()
    assert not kcl_loss(q, kk, y, queue, ql, 0.2, None)[0].requires_grad


def test_empty_queue_and_bad_arguments():
    q, k, y, queue, ql, _ = data()
    cls, _ = kcl_loss(q, k, y, queue[:0], ql[:0], 0.1, 6, scores=torch.rand(6, 0))
    assert torch.allclose(cls, torch.zeros((), dtype=torch.float64))  # only the own key: log 1
    with pytest.raises(ValueError, match="random scores"):
        kcl_loss(q, k, y, queue, ql, 0.1, 6)
    with pytest.raises(ValueError, match="together"):
        kcl_loss(q, k, y, queue, ql, 0.1, None, targets=queue[:3])
