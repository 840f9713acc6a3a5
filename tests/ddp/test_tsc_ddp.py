"""2-process gloo: TSC's centroids and class-to-target matching, updated from the queries of all
ranks, are identical on both ranks and equal the single-process update on the global batch."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from ddp_helpers import free_port, spawn

from ltcl_lightning.modules.tsc_targets import TargetAssignment

pytestmark = pytest.mark.ddp

SIZES = (5, 3)


def _data():
    g = torch.Generator().manual_seed(0)
    return [(F.normalize(torch.randn(8, 6, generator=g), dim=1), torch.randint(0, 5, (8,), generator=g)) for _ in range(3)]


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    a = TargetAssignment(5, 6, steps=0)  # seeded random targets: the test is about centroids + matching
    lo, hi = sum(SIZES[:rank]), sum(SIZES[: rank + 1])
    for q, y in _data():
        a.update(q[lo:hi], y[lo:hi])
    torch.save(a.state_dict(), os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_assignment_equals_single_process(tmp_path):
    spawn(_worker, 2, free_port(), str(tmp_path), nprocs=2)
    ref = TargetAssignment(5, 6, steps=0)
    for q, y in _data():
        ref.update(q, y)
    for r in range(2):
        state = torch.load(tmp_path / f"rank{r}.pt")
        for k, v in ref.state_dict().items():
            torch.testing.assert_close(state[k], v, rtol=0, atol=1e-6, msg=k)
