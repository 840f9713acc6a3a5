"""2-process gloo: BoostedCL's momentum buffer and weights after each epoch equal the
single-process ones for the same per-sample losses, with the distributed sampler padding the
odd-sized training set (a padded sample must not get two EMA steps in one epoch), and every rank
holds and publishes bit-identical weights."""

from __future__ import annotations

import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
from ddp_helpers import free_port, spawn
from torch.utils.data import DistributedSampler

from ltcl_lightning.callbacks.momentum import MomentumWeightUpdate
from ltcl_lightning.modules.momentum import MomentumLoss, momentum_weights

pytestmark = pytest.mark.ddp

N, EPOCHS, BATCH, BETA = 13, 3, 3, 0.97


def _loss(index: torch.Tensor, epoch: int) -> torch.Tensor:
    """A per-sample loss that depends on the sample and the epoch (padding copies carry the same)."""
    return (torch.sin(index.double() * 0.7 + epoch) + 1.5 + 0.1 * epoch).float()


class _Module(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.momentum = MomentumLoss(N, BETA)


class _Sink:
    def __init__(self):
        self.published = []

    def set_sample_weights(self, w):
        self.published.append(w.clone())


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    sampler = DistributedSampler(range(N), num_replicas=world, rank=rank, shuffle=True, seed=3)
    module, sink = _Module(), _Sink()
    trainer = SimpleNamespace(current_epoch=0, datamodule=sink)
    cb = MomentumWeightUpdate()
    cb.setup(trainer, module, "fit")
    history, padded = [], []
    for epoch in range(EPOCHS):
        trainer.current_epoch = epoch
        sampler.set_epoch(epoch)
        local = torch.tensor(list(sampler))
        padded.append(local)
        for s in range(0, len(local), BATCH):
            idx = local[s : s + BATCH]
            out = {"loss": torch.tensor(0.0), "index": idx, "per_sample_loss": _loss(idx, epoch), "target": idx % 4}
            cb.on_train_batch_end(trainer, module, out, None, s // BATCH)
        cb.on_train_epoch_end(trainer, module)
        history.append((module.momentum.loss.clone(), module.momentum.weight.clone()))
    torch.save({"history": history, "published": sink.published, "indices": padded}, os.path.join(out_dir, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_momentum_buffer_equals_single_process_with_padding(tmp_path):
    # fork: the children inherit the imported modules (spawn re-imports lightning: ~10 s per process here)
    spawn(_worker, 2, free_port(), str(tmp_path), start_method="fork")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    # the sampler really padded: 14 slots for 13 samples, one index twice in the epoch
    both = torch.cat([r0["indices"][0], r1["indices"][0]])
    assert len(both) == 14 and len(both.unique()) == N
    # single process: each sample once per epoch, epoch 1 raw, then EMA (numpy, float32)
    m = np.zeros(N, dtype=np.float32)
    for epoch in range(EPOCHS):
        loss = _loss(torch.arange(N), epoch).numpy()
        m = loss.copy() if epoch == 0 else (np.float32(1 - BETA) * loss + np.float32(BETA) * m).astype(np.float32)
        for r in (r0, r1):
            mem, w = r["history"][epoch]
            np.testing.assert_allclose(mem.numpy(), m, rtol=1e-6, atol=1e-7)
            assert torch.equal(w, momentum_weights(torch.from_numpy(m)))
        # identical on both ranks, and what each rank published to its loader
        assert torch.equal(r0["history"][epoch][0], r1["history"][epoch][0])
        assert torch.equal(r0["published"][epoch], r1["published"][epoch])
        assert torch.equal(r0["published"][epoch], r0["history"][epoch][1])
