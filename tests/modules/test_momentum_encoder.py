"""Momentum encoder (EMA against a hand computation, schedules), feature queue (FIFO contents
after wrap-around against a one-key-at-a-time reference, checkpoint round trip with
``weights_only=True``) and the query-vs-keys-and-queue SupCon against a float64 loop."""

from __future__ import annotations

import io
import math

import pytest
import torch
import torch.nn as nn

from ltcl_lightning.losses.queue import queue_supcon_loss
from ltcl_lightning.modules.momentum_encoder import EMASchedule, FeatureQueue, MomentumEncoder


def test_ema_update_matches_hand_computation():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    enc = MomentumEncoder(online)
    assert not any(p.requires_grad for p in enc.parameters())
    start = [p.detach().clone() for p in enc.parameters()]
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    enc.update([online], 0.9)
    for k0, q, k in zip(start, online.parameters(), enc.parameters()):
        torch.testing.assert_close(k, 0.9 * k0 + 0.1 * q.detach(), rtol=0, atol=1e-7)
    # m = 1 freezes, m = 0 copies
    before = [p.clone() for p in enc.parameters()]
    enc.update([online], 1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, enc.parameters()))
    enc.update([online], 0.0)
    assert all(torch.equal(a, b) for a, b in zip(online.parameters(), enc.parameters()))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        enc.update([online], 1.5)
    with pytest.raises(ValueError, match="2 online modules for 1"):
        enc.update([online, online], 0.5)


def test_momentum_encoder_runs_stages_in_sequence():
    a, b = nn.Linear(3, 4), nn.Linear(4, 2)
    enc = MomentumEncoder(a, b)
    x = torch.randn(5, 3)
    h, z = enc(x)
    torch.testing.assert_close(h, a(x))
    torch.testing.assert_close(z, b(a(x)))


def test_ema_schedules():
    assert EMASchedule(0.99)(123, 1000) == 0.99
    cos = EMASchedule(0.99, "cosine", 1.0)
    assert cos(0, 100) == pytest.approx(0.99, abs=1e-15)
    assert cos(100, 100) == pytest.approx(1.0, abs=1e-15)
    assert cos(25, 100) == pytest.approx(1 - 0.01 * (math.cos(math.pi / 4) + 1) / 2, abs=1e-15)
    with pytest.raises(ValueError, match="kind"):
        EMASchedule(0.9, "linear")


def reference_fifo(size, batches):
    """One key at a time: slot ptr, ptr += 1 mod size."""
    slots, ptr, filled = [None] * size, 0, 0
    for keys in batches:
        for key in keys:
            slots[ptr] = key
            ptr, filled = (ptr + 1) % size, min(filled + 1, size)
    return slots, ptr, filled


@pytest.mark.parametrize("batch_sizes", [[3, 3, 3, 3], [4, 1, 6, 2], [11], [2, 9]])
def test_queue_contents_after_wrap_around(batch_sizes):
    size = 5
    q = FeatureQueue(size, 2)
    batches, count = [], 0
    for n in batch_sizes:
        keys = torch.arange(count, count + n, dtype=torch.float32)[:, None].repeat(1, 2)
        batches.append([int(v) for v in keys[:, 0]])
        q.enqueue(keys, torch.arange(count, count + n) * 10)
        count += n
    slots, ptr, filled = reference_fifo(size, batches)
    assert int(q.ptr) == ptr and int(q.filled) == filled
    keys, labels = q.contents()
    assert keys.shape == (filled, 2)
    assert [int(v) for v in keys[:, 0]] == slots[:filled]
    assert [int(v) for v in labels] == [10 * s for s in slots[:filled]]


def test_queue_not_full_returns_only_written_keys():
    q = FeatureQueue(8, 3)
    assert q.contents()[0].shape == (0, 3)
    q.enqueue(torch.ones(3, 3), torch.tensor([1, 2, 3]))
    keys, labels = q.contents()
    assert keys.shape == (3, 3) and labels.tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="keys must be"):
        q.enqueue(torch.ones(2, 4))


def test_queue_and_encoder_survive_checkpoint_weights_only():
    torch.manual_seed(0)
    online = nn.Linear(3, 2)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.key = MomentumEncoder(online)
            self.queue = FeatureQueue(7, 2)

    a = M()
    for _ in range(3):
        a.queue.enqueue(torch.randn(3, 2), torch.randint(0, 5, (3,)))
        with torch.no_grad():
            online.weight.add_(0.1)
        a.key.update([online], 0.5)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = M()
    b.load_state_dict(torch.load(buf, weights_only=True))
    for name, t in a.state_dict().items():
        assert torch.equal(t, b.state_dict()[name]), name
    # resumed: the next enqueue lands where the original's does
    nxt = torch.randn(4, 2), torch.randint(0, 5, (4,))
    a.queue.enqueue(*nxt)
    b.queue.enqueue(*nxt)
    for x, y in zip(a.queue.contents(), b.queue.contents()):
        assert torch.equal(x, y)
    assert int(a.queue.ptr) == int(b.queue.ptr) == (9 + 4) % 7


def loop_queue_supcon(q, k, labels, queue, queue_labels, t):
    """Float64 loop over anchors: candidates [q, k, queue] minus self; mean -log p over positives."""
    cands = [(q[j], labels[j], j) for j in range(len(q))] + [(k[j], labels[j], None) for j in range(len(k))]
    cands += [(queue[j], queue_labels[j], None) for j in range(len(queue))]
    total = 0.0
    for i in range(len(q)):
        others = [(c, l) for c, l, j in cands if j != i]
        denom = sum(math.exp(float(q[i] @ c) / t) for c, _ in others)
        pos = [float(q[i] @ c) / t - math.log(denom) for c, l in others if int(l) == int(labels[i])]
        total += -sum(pos) / len(pos)
    return total / len(q)


def test_queue_supcon_matches_float64_loop_and_gradcheck():
    g = torch.Generator().manual_seed(0)
    b, d, kq = 6, 4, 5
    q = torch.nn.functional.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    k = torch.nn.functional.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)
    queue = torch.nn.functional.normalize(torch.randn(kq, d, generator=g, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    qlabels = torch.tensor([2, 0, 3, 1, 0])
    got = queue_supcon_loss(q, k, labels, queue, qlabels, 0.3)
    assert got.item() == pytest.approx(loop_queue_supcon(q, k, labels, queue, qlabels, 0.3), rel=1e-12)
    # empty queue: the contrast set is the batch's queries and keys
    empty = queue_supcon_loss(q, k, labels, queue[:0], qlabels[:0], 0.3)
    assert empty.item() == pytest.approx(loop_queue_supcon(q, k, labels, queue[:0], qlabels[:0], 0.3), rel=1e-12)
    qq = q.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda x: queue_supcon_loss(x, k, labels, queue, qlabels, 0.3), (qq,))
    # keys carry no gradient
    kk = k.clone().requires_grad_()
    assert not queue_supcon_loss(q, kk, labels, queue, qlabels, 0.3).requires_grad


def test_contents_survive_an_enqueue_before_the_backward():
    """The step's order: loss on the queue contents, enqueue, then backward (Lightning)."""
    q = FeatureQueue(4, 3)
    q.enqueue(torch.randn(2, 3))
    x = torch.randn(2, 3, requires_grad=True)
    keys, _ = q.contents()
    loss = (x @ keys.T).sum()
    q.enqueue(torch.randn(3, 3))
    loss.backward()  # would fail if contents() were views of the buffer
    assert x.grad is not None


def test_host_mirrors_follow_a_loaded_state_dict():
    """ptr / filled are read on the host (no device sync per step); a load sets them."""
    a, b = FeatureQueue(5, 2), FeatureQueue(5, 2)
    a.enqueue(torch.randn(7, 2))
    assert a.num_filled == 5 and int(a.ptr) == 2
    b.load_state_dict(a.state_dict())
    assert b.num_filled == 5 and b._ptr == 2
    b.enqueue(torch.ones(1, 2))
    assert torch.equal(b.keys[2], torch.ones(2)) and int(b.ptr) == 3
