"""2-process gloo: over several MoCo steps (loss, backward, SGD, EMA update, enqueue) every
rank's queue and key encoder equal the single-process ones on the global batch, and so do the
loss and the parameter gradients."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from ddp_helpers import free_port, spawn

from ltcl_lightning.losses.queue import queue_supcon_loss
from ltcl_lightning.modules.momentum_encoder import FeatureQueue, MomentumEncoder

pytestmark = pytest.mark.ddp

STEPS, QUEUE = 3, 11  # 8 keys per step: the queue wraps around in step 2


def _data(sizes):
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    x1 = torch.randn(STEPS, n, 5, generator=g, dtype=torch.float64)
    x2 = torch.randn(STEPS, n, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (STEPS, n), generator=g)
    return x1, x2, labels


def _run(x1, x2, labels, shards):
    """MoCo-style steps on shard ``shards`` of each global batch; with shards=None: one process.
    Returns per step (loss, weight grad), and the final queue and key weights."""
    torch.manual_seed(1)
    online = nn.Linear(5, 4, bias=False).double()
    key = MomentumEncoder(online)
    queue = FeatureQueue(QUEUE, 4).double()
    opt = torch.optim.SGD(online.parameters(), lr=0.5)
    out = []
    for s in range(STEPS):
        a, b, y = x1[s], x2[s], labels[s]
        if shards is not None:
            a, b, y = a[shards], b[shards], y[shards]
        key.update([online], 0.9)
        q = F.normalize(online(a), dim=1)
        with torch.no_grad():
            k = F.normalize(key(b)[-1], dim=1)
        qk, ql = queue.contents()
        loss = queue_supcon_loss(q, k, y, qk, ql, 0.2)
        opt.zero_grad()
        loss.backward()
        g = online.weight.grad
        lt = loss.detach().clone()
        if shards is not None:  # what DDP does: average gradients; report the mean loss
            dist.all_reduce(g)
            g /= 2
            dist.all_reduce(lt)
            lt /= 2
        out.append((lt, g.clone()))
        opt.step()
        queue.enqueue(k, y)
    return out, queue.state_dict(), key.state_dict()


def _worker(rank, world, port, sizes, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x1, x2, labels = _data(sizes)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    torch.save(_run(x1, x2, labels, slice(lo, hi)), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_queue_loss_and_gradients_equal_single_process(tmp_path):
    sizes = (4, 4)
    spawn(_worker, 2, free_port(), sizes, str(tmp_path), nprocs=2)
    ref_steps, ref_queue, ref_key = _run(*_data(sizes), None)
    assert int(ref_queue["filled"]) == QUEUE and int(ref_queue["ptr"]) == (STEPS * 8) % QUEUE
    for r in range(2):
        steps, queue, key = torch.load(tmp_path / f"rank{r}.pt")
        for (lt, g), (lt_ref, g_ref) in zip(steps, ref_steps):
            torch.testing.assert_close(lt, lt_ref, rtol=0, atol=1e-12)
            torch.testing.assert_close(g, g_ref, rtol=0, atol=1e-12)
        for name in ref_queue:
            torch.testing.assert_close(queue[name], ref_queue[name], rtol=0, atol=1e-12)
        for name in ref_key:
            torch.testing.assert_close(key[name], ref_key[name], rtol=0, atol=1e-12)
