"""2-process gloo: BalancedCL's loss with ``gather=True`` (loss and gradients) equals the
single-process value on the concatenated batch; ``gather=False`` is the per-rank local loss."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from ddp_helpers import free_port, spawn

from ltcl_lightning.losses.balanced import balanced_contrastive_loss

pytestmark = pytest.mark.ddp

NUM_CLASSES = 4


def _data(sizes):
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    x1 = torch.randn(n, 5, generator=g, dtype=torch.float64)
    x2 = torch.randn(n, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)  # shared projection ("head")
    cw = torch.randn(NUM_CLASSES, 5, generator=g, dtype=torch.float64)  # "classifier weights"
    labels = torch.tensor([0, 0, 1, 0, 2, 0, 1, 3, 0, 2][:n])  # imbalanced, class counts differ per shard
    return x1, x2, w, cw, labels


def _loss(x1, x2, w, cw, labels, gather, reduction="mean"):
    z1, z2 = F.normalize(x1 @ w, dim=1), F.normalize(x2 @ w, dim=1)
    prototypes = F.normalize(cw @ w, dim=1)  # computed identically on every rank, not gathered
    return balanced_contrastive_loss([z1, z2], labels, prototypes, 0.1, reduction, gather=gather)


SIZES = [(5, 5), (6, 4)]  # equal shards, and a short last batch


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    for sizes in SIZES:  # one process group for both cases: spawning costs seconds
        _run(rank, world, sizes, out_dir)
    dist.destroy_process_group()


def _run(rank, world, sizes, out_dir):
    x1, x2, w, cw, labels = _data(sizes)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    results = {}
    for gather in (True, False):
        wr, cwr = w.clone().requires_grad_(), cw.clone().requires_grad_()
        x1r = x1[lo:hi].clone().requires_grad_()
        loss = _loss(x1r, x2[lo:hi], wr, cwr, labels[lo:hi], gather)
        loss.backward()
        # what DDP does: average parameter gradients over ranks; report the mean loss too
        gw, gcw = wr.grad.clone(), cwr.grad.clone()
        dist.all_reduce(gw)
        dist.all_reduce(gcw)
        lt = loss.detach().clone()
        dist.all_reduce(lt)
        results[gather] = (loss.detach().clone(), lt / world, gw / world, gcw / world, x1r.grad.clone())
    torch.save(results, os.path.join(out_dir, f"{sizes[0]}_{sizes[1]}_rank{rank}.pt"))


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    out = tmp_path_factory.mktemp("balanced_ddp")
    spawn(_worker, 2, free_port(), str(out), nprocs=2)
    return out


@pytest.mark.parametrize("sizes", SIZES)
def test_gathered_loss_and_gradients_equal_single_process(ddp_results, sizes):
    x1, x2, w, cw, labels = _data(sizes)
    r = [torch.load(ddp_results / f"{sizes[0]}_{sizes[1]}_rank{k}.pt") for k in range(2)]
    shards = [slice(0, sizes[0]), slice(sizes[0], sum(sizes))]

    # gather=True: the DDP objective is the mean over ranks of each rank's anchor mean, with every
    # anchor contrasted against the global batch (class counts n_k of the global batch)
    wr, cwr = w.clone().requires_grad_(), cw.clone().requires_grad_()
    x1r = x1.clone().requires_grad_()
    per = _loss(x1r, x2, wr, cwr, labels, gather=False, reduction="none")
    objective = sum(per[s].mean() for s in shards) / 2
    objective.backward()
    if sizes[0] == sizes[1]:
        torch.testing.assert_close(objective, _loss(x1, x2, w, cw, labels, gather=False), rtol=0, atol=1e-12)
    for k in range(2):
        _, mean_loss, gw, gcw, _ = r[k][True]
        torch.testing.assert_close(mean_loss, objective.detach(), rtol=0, atol=1e-12)
        torch.testing.assert_close(gw, wr.grad, rtol=0, atol=1e-12)
        torch.testing.assert_close(gcw, cwr.grad, rtol=0, atol=1e-12)
    # input gradients: rank k holds its rows; DDP's 1/W applies to parameters only
    g_in = torch.cat([r[0][True][4], r[1][True][4]]) / 2
    torch.testing.assert_close(g_in, x1r.grad, rtol=0, atol=1e-12)

    # gather=False (official criterion per process): each rank's loss is the loss of its shard alone
    for k, s in enumerate(shards):
        local = _loss(x1[s], x2[s], w, cw, labels[s], gather=False)
        torch.testing.assert_close(r[k][False][0], local, rtol=0, atol=1e-12)
    # and it is a different objective from the gathered one (the test can tell them apart)
    assert abs(float(r[0][False][1]) - objective.item()) > 1e-4
