"""2-process gloo: the ProCo vMF estimators hold the same state on both ranks, equal to one
process updating on the concatenated global batches; each rank's logits are the single-process
logits of its rows (spec proco.md (g))."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from ddp_helpers import free_port, spawn

from ltcl_lightning.losses.proco import proco_logits
from ltcl_lightning.modules.vmf import VMFEstimator

pytestmark = pytest.mark.ddp

C, P, B, STEPS = 7, 16, 5, 4  # B per rank; an epoch boundary after step 2


def _global_batch(step, world):
    g = torch.Generator().manual_seed(100 + step)
    z2 = F.normalize(torch.randn(world * B, P, generator=g), dim=1)
    z3 = F.normalize(torch.randn(world * B, P, generator=g), dim=1)
    y = torch.randint(0, C, (world * B,), generator=g)
    return z2, z3, y


def _run_steps(est, rank, world, gather):
    logits = []
    for step in range(STEPS):
        est.start_epoch(step // 2)
        z2, z3, y = _global_batch(step, world)
        if gather:  # this rank's shard; the estimator gathers
            sl = slice(rank * B, (rank + 1) * B)
            z2, z3, y = z2[sl], z3[sl], y[sl]
        for z in (z2, z3):  # ProCo's order: update with the view, then its logits
            est.update(z, y, gather=gather)
            logits.append(proco_logits(z, est.kappa(), est.mean_direction(), 0.1))
    return logits


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    est = VMFEstimator(C, P, seed=5)
    logits = _run_steps(est, rank, world, gather=True)
    torch.save({"state": est.state_dict(), "logits": logits}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_estimator_state_is_identical_across_ranks_and_equals_single_process(tmp_path):
    world = 2
    spawn(_worker, world, free_port(), str(tmp_path), nprocs=world)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(world)]
    single = VMFEstimator(C, P, seed=5)
    single_logits = _run_steps(single, 0, world, gather=False)
    assert float(single.count_old.sum()) > 0
    for r, res in enumerate(ranks):
        for k, v in single.state_dict().items():
            assert torch.equal(res["state"][k], v), (r, k)
        for got, full in zip(res["logits"], single_logits):
            torch.testing.assert_close(got, full[r * B : (r + 1) * B], rtol=1e-12, atol=1e-12)
