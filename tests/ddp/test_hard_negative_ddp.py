"""2-process gloo: the gathered hard-negative / debiased NT-Xent and its gradients equal the
single-process values on the global batch (N = 2 B_global - 2 negatives)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from ddp_helpers import free_port, spawn

from ltcl_lightning.losses.hard_negative import hard_negative_nt_xent_loss

pytestmark = pytest.mark.ddp

SETTINGS = [(0.5, 0.1, 1.0), (0.5, 0.1, 0.0)]  # (t, tau_plus, beta): HCL, DCL


def _data(sizes):
    g = torch.Generator().manual_seed(0)
    n = sum(sizes)
    x1 = torch.randn(n, 5, generator=g, dtype=torch.float64)
    x2 = torch.randn(n, 5, generator=g, dtype=torch.float64)
    w = torch.randn(5, 4, generator=g, dtype=torch.float64)
    return x1, x2, w


def _loss(x1, x2, w, setting, reduction="mean"):
    return hard_negative_nt_xent_loss(F.normalize(x1 @ w, dim=1), F.normalize(x2 @ w, dim=1), *setting, reduction=reduction)


def _worker(rank, world, port, sizes, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    x1, x2, w = _data(sizes)
    lo, hi = sum(sizes[:rank]), sum(sizes[: rank + 1])
    results = []
    for setting in SETTINGS:
        wr = w.clone().requires_grad_()
        loss = _loss(x1[lo:hi], x2[lo:hi], wr, setting)
        loss.backward()
        gw, lt = wr.grad.clone(), loss.detach().clone()
        dist.all_reduce(gw)
        dist.all_reduce(lt)
        results.append((lt / world, gw / world))
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.mark.parametrize("sizes", [(5, 3)])  # unequal shards: the general case (equal ones are its special case)
def test_gathered_loss_and_gradients_equal_single_process(tmp_path, sizes):
    spawn(_worker, 2, free_port(), sizes, str(tmp_path), nprocs=2)
    x1, x2, w = _data(sizes)
    r = [torch.load(tmp_path / f"rank{k}.pt") for k in range(2)]
    shards = [slice(0, sizes[0]), slice(sizes[0], sum(sizes))]
    for i, setting in enumerate(SETTINGS):
        wr = w.clone().requires_grad_()
        per = _loss(x1, x2, wr, setting, "none")
        objective = sum(per[s].mean() for s in shards) / 2  # DDP: mean of the per-rank means
        objective.backward()
        for k in range(2):
            torch.testing.assert_close(r[k][i][0], objective.detach(), rtol=0, atol=1e-12)
            torch.testing.assert_close(r[k][i][1], wr.grad, rtol=0, atol=1e-12)
