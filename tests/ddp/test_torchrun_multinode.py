"""A 2-node x 1-process torchrun launch on localhost (gloo, c10d rendezvous on 127.0.0.1), as
users run Lightning's DDP across machines: ProCo's estimator is identical on both ranks and the
checkpoint matches a single process on the same global batch (issue 11, multi-node)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ddp_helpers import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(Path(__file__).with_name("torchrun_proco.py"))


@pytest.mark.ddp
def test_two_nodes_one_process_each_match_one_process(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK"):
        env.pop(k, None)
    port = free_port()
    multi = tmp_path / "multi"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "2",
        "--nproc_per_node",
        "1",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{port}",
        "--rdzv_id",
        "ltcl",
        "--local_addr",
        "127.0.0.1",
    ]
    procs = [
        subprocess.Popen(
            [*cmd, "--node_rank", str(r), SCRIPT, str(multi), "2", "16"],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for r in range(2)
    ]
    outs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    single = tmp_path / "single"
    proc = subprocess.run(
        [sys.executable, SCRIPT, str(single), "1", "32"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    ranks = [torch.load(multi / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1]
    for k, v in ranks[0]["estimator"].items():  # every rank holds the same state, bit for bit
        assert torch.equal(ranks[1]["estimator"][k], v), k
    a = torch.load(multi / "final.ckpt", weights_only=True)
    b = torch.load(single / "final.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 2
    assert float(a["state_dict"]["estimator.count_old"].sum()) == 2 * 32 * 2  # 2 steps x 32 images x 2 views
    for k, v in b["state_dict"].items():  # the same global batch: equal up to float summation order
        if v.is_floating_point():
            torch.testing.assert_close(a["state_dict"][k], v, rtol=1e-4, atol=1e-5, msg=k)
        else:
            assert torch.equal(a["state_dict"][k], v), k


@pytest.mark.ddp
def test_vmf_counts_leave_out_the_samplers_padding(tmp_path):
    """Issue 11 item 10: one epoch of 585 images on 2 ranks has one padded repeat (586 positions);
    before, the estimator counted 586 x 2 features where one process counts 585 x 2."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), "OMP_NUM_THREADS": "1"}
    for k in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK", "NODE_RANK"):
        env.pop(k, None)
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc_per_node",
        "2",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{port}",
        SCRIPT,
        str(tmp_path / "multi"),
        "2",
        "16",
        "19",
    ]
    env["LTCL_NODES_AS_DEVICES"] = "1"
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    single = subprocess.run(
        [sys.executable, SCRIPT, str(tmp_path / "single"), "1", "32", "19"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    a = torch.load(tmp_path / "multi" / "final.ckpt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "single" / "final.ckpt", weights_only=True)["state_dict"]
    assert float(b["estimator.count_new"].sum()) == 585 * 2
    assert torch.equal(a["estimator.count_new"], b["estimator.count_new"])
    torch.testing.assert_close(a["estimator.mean_new"], b["estimator.mean_new"], rtol=1e-4, atol=1e-5)
