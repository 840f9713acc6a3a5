"""2-process gloo: the gathered PaCo (query anchors, detached keys) and GPaCo (both views
anchors, with gradients) losses and their parameter gradients equal the single-process values
on the global batch; the centre logits stay local."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from ddp_helpers import free_port, spawn

from ltcl_lightning.losses.paco import paco_loss

pytestmark = pytest.mark.ddp

C = 3


def _data(sizes):
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    x1 = torch.randn(n, 5, generator=g, dtype=torch.float64)
    x2 = torch.randn(n, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)
    wc = torch.randn(5, C, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (n,), generator=g)
    queue = F.normalize(torch.randn(7, 4, generator=g, dtype=torch.float64), dim=1)
    qlabels = torch.randint(0, C, (7,), generator=g)
    log_prior = torch.log(torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64))
    return x1, x2, w, wc, labels, queue, qlabels, log_prior


def _loss(x1, x2, w, wc, labels, queue, qlabels, log_prior, anchors, reduction="mean"):
    q, k = F.normalize(x1 @ w, dim=1), F.normalize(x2 @ w, dim=1)
    centre = x1 @ wc if anchors == "query" else torch.cat([x1, x2]) @ wc
    return paco_loss(q, k, labels, centre, queue, qlabels, 0.2, 0.3, 1.0, 1.0, log_prior=log_prior, anchors=anchors, reduction=reduction)


def _worker(rank, world, port, sizes, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x1, x2, w, wc, labels, queue, qlabels, log_prior = _data(sizes)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    results = []
    for anchors in ("query", "both"):
        wr, wcr = w.clone().requires_grad_(), wc.clone().requires_grad_()
        loss = _loss(x1[lo:hi], x2[lo:hi], wr, wcr, labels[lo:hi], queue, qlabels, log_prior, anchors)
        loss.backward()
        grads = [wr.grad.clone(), wcr.grad.clone(), loss.detach().clone()]
        for t in grads:
            dist.all_reduce(t)
        results.append([t / world for t in grads])
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("sizes", [(5, 3)])  # unequal shards: the general case (equal ones are its special case)
def test_gathered_paco_equals_single_process(tmp_path, sizes):
    spawn(_worker, 2, free_port(), sizes, str(tmp_path), nprocs=2)
    x1, x2, w, wc, labels, queue, qlabels, log_prior = _data(sizes)
    r = [torch.load(tmp_path / f"rank{k}.pt") for k in range(2)]
    for i, anchors in enumerate(("query", "both")):
        wr, wcr = w.clone().requires_grad_(), wc.clone().requires_grad_()
        per = _loss(x1, x2, wr, wcr, labels, queue, qlabels, log_prior, anchors, "none")
        objective = (per[: sizes[0]].mean() + per[sizes[0] :].mean()) / 2  # DDP: mean of the per-rank means
        objective.backward()
        for k in range(2):
            torch.testing.assert_close(r[k][i][2], objective.detach(), rtol=0, atol=1e-12)
            torch.testing.assert_close(r[k][i][0], wr.grad, rtol=0, atol=1e-12)
            torch.testing.assert_close(r[k][i][1], wcr.grad, rtol=0, atol=1e-12)
