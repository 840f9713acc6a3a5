"""2-process gloo: gathered NT-Xent / SupCon loss and gradients equal the single-process values."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from ddp_helpers import free_port, spawn

from ltcl_lightning.losses.contrastive import nt_xent_loss, supcon_loss

pytestmark = pytest.mark.ddp


def _data(sizes):
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    x1 = torch.randn(n, 5, generator=g, dtype=torch.float64)
    x2 = torch.randn(n, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (n,), generator=g)
    return x1, x2, w, labels


def _losses(x1, x2, w, labels, reduction="mean"):
    z1, z2 = F.normalize(x1 @ w, dim=1), F.normalize(x2 @ w, dim=1)
    return nt_xent_loss(z1, z2, 0.2, reduction), supcon_loss([z1, z2], labels, 0.1, reduction)


def _worker(rank, world, port, sizes, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x1, x2, w, labels = _data(sizes)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    results = {}
    for i, name in enumerate(("ntxent", "supcon")):
        wr = w.clone().requires_grad_()
        x1r = x1[lo:hi].clone().requires_grad_()
        loss = _losses(x1r, x2[lo:hi], wr, labels[lo:hi])[i]
        loss.backward()
        # what DDP does: average parameter gradients over ranks; report the mean loss
        gw = wr.grad.clone()
        dist.all_reduce(gw)
        lt = loss.detach().clone()
        dist.all_reduce(lt)
        results[name] = (lt / world, gw / world, x1r.grad.clone())
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("sizes", [(4, 4), (5, 3)])
def test_gathered_losses_and_gradients_equal_single_process(tmp_path, sizes):
    """Each rank's loss covers its own anchors against the global batch. The DDP objective is
    the mean of the per-rank means; with equal shards that is the single-process loss on the
    concatenated batch. Unequal shards (a last batch) give the mean of the two shard means,
    which the single process computes from its per-sample losses."""
    spawn(_worker, 2, free_port(), sizes, str(tmp_path), nprocs=2)
    x1, x2, w, labels = _data(sizes)
    r = [torch.load(tmp_path / f"rank{k}.pt") for k in range(2)]
    shards = [slice(0, sizes[0]), slice(sizes[0], sum(sizes))]
    for i, name in enumerate(("ntxent", "supcon")):
        wr = w.clone().requires_grad_()
        x1r = x1.clone().requires_grad_()
        per = _losses(x1r, x2, wr, labels, "none")[i]
        objective = sum(per[s].mean() for s in shards) / 2
        objective.backward()
        if sizes[0] == sizes[1]:
            torch.testing.assert_close(objective, _losses(x1, x2, w, labels)[i], rtol=0, atol=1e-12)
        for k in range(2):
            torch.testing.assert_close(r[k][name][0], objective.detach(), rtol=0, atol=1e-12)
            torch.testing.assert_close(r[k][name][1], wr.grad, rtol=0, atol=1e-12)
        # input gradients: rank k holds its rows; DDP's 1/W applies to parameters only
        g_in = torch.cat([r[0][name][2], r[1][name][2]]) / 2
        torch.testing.assert_close(g_in, x1r.grad, rtol=0, atol=1e-12)
