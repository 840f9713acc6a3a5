"""2-process gloo: SDCLR masks are identical on every rank; the DDP loss and gradients equal the
single-process values on the concatenated batch; the Lightning run keeps masks in sync."""

from __future__ import annotations

import os
from functools import partial

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn as nn
from ddp_helpers import free_port, spawn
from torch.nn.parallel import DistributedDataParallel as DDP

from ltcl_lightning.data.base import IndexedDataset, LongTailDataModule
from ltcl_lightning.losses.contrastive import nt_xent_loss
from ltcl_lightning.methods.sdclr import SDCLR
from ltcl_lightning.modules.pruning import masked_convs, prune_global

pytestmark = pytest.mark.ddp

B = 4  # per rank


def _model(random_prune_ratio=0.0) -> SDCLR:
    torch.manual_seed(0)
    m = SDCLR(
        num_classes=3,
        backbone="tiny",
        class_counts=[5, 3, 1],
        prune_ratio=0.6,
        random_prune_ratio=random_prune_ratio,
        prune_seed=7,
        proj_hidden_dim=16,
        proj_dim=8,
    )
    return m.double()


def _batch():
    g = torch.Generator().manual_seed(3)
    x1 = torch.randn(2 * B, 3, 8, 8, generator=g, dtype=torch.float64)
    x2 = torch.randn(2 * B, 3, 8, 8, generator=g, dtype=torch.float64) * 1.3 + 0.2
    return x1, x2, torch.randint(0, 3, (2 * B,), generator=g)


def _flat_masks(m: nn.Module) -> torch.Tensor:
    return torch.cat([c.prune_mask.flatten() for c in masked_convs(m).values()]).to(torch.uint8)


def _all_equal_across_ranks(t: torch.Tensor) -> bool:
    out = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(out, t)
    return all(torch.equal(o, out[0]) for o in out)


class _Step(nn.Module):
    """What Lightning's DDP wrapper runs: both branches in one forward, one loss."""

    def __init__(self, m: SDCLR):
        super().__init__()
        self.m = m

    def forward(self, index, views, target):
        return self.m.training_loss(index, views, target)["loss"]


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    res = {}
    # masks: magnitude only, then with a random part (seeded identically; then broadcast)
    for rr in (0.0, 0.2):
        m = _model(rr)
        with torch.no_grad():  # make rank 1's weights differ: the broadcast must win
            if rank == 1 and rr > 0:
                for c in masked_convs(m).values():
                    c.weight.mul_(torch.rand_like(c.weight))
        m.backbone.recompute_masks(epoch=3)
        res[f"masks_equal_{rr}"] = _all_equal_across_ranks(_flat_masks(m))
        res[f"masks_{rr}"] = _flat_masks(m)
    # the random draw alone, without broadcast, is already identical across ranks
    m = _model()
    prune_global(m.backbone, 0.6, 0.2, torch.Generator().manual_seed(11))
    res["random_draw_equal"] = _all_equal_across_ranks(_flat_masks(m))

    # loss and gradients under DDP (train-mode BN: each rank normalises its own shard)
    x1, x2, t = _batch()
    sl = slice(rank * B, (rank + 1) * B)
    for mode in ("train", "eval"):
        m = _model()
        m.backbone.recompute_masks(0)
        m.probe.requires_grad_(False)  # the probe is trained in training_step, not in training_loss
        m.train(mode == "train")
        ddp = DDP(_Step(m), find_unused_parameters=False)
        loss = ddp(torch.arange(B), [x1[sl], x2[sl]], t[sl])
        loss.backward()
        lt = loss.detach().clone()
        dist.all_reduce(lt)
        res[f"loss_{mode}"] = lt / world
        res[f"grads_{mode}"] = {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
        res[f"masks_after_ddp_{mode}"] = _all_equal_across_ranks(_flat_masks(m))
    res["lightning"] = _lightning_run(rank, world, out_dir)
    torch.save(res, os.path.join(out_dir, f"rank{rank}.pt"))
    if dist.is_initialized():
        dist.destroy_process_group()


def _reference(mode: str):
    """Single process on the concatenated batch. Train mode: BN statistics per shard (what DDP
    without SyncBatchNorm computes; SyncBatchNorm needs a GPU); eval mode: the whole batch."""
    m = _model()
    m.backbone.recompute_masks(0)
    m.train(mode == "train")
    x1, x2, t = _batch()
    if mode == "eval":
        loss = m.training_loss(torch.arange(2 * B), [x1, x2], t)["loss"]
    else:
        z1 = torch.cat([m.project(m.backbone(x1[s])) for s in (slice(0, B), slice(B, 2 * B))])
        z2 = torch.cat([m.project(m.backbone(x2[s], pruned=True), pruned=True) for s in (slice(0, B), slice(B, 2 * B))])
        loss = nt_xent_loss(z1, z2, m.temperature, gather=False)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}, m


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    """One 2-process spawn for all checks (spawning costs more than the checks on 2 cores)."""
    out = tmp_path_factory.mktemp("sdclr_ddp")
    spawn(_worker, 2, free_port(), str(out), nprocs=2)
    return [torch.load(out / f"rank{k}.pt") for k in range(2)]


def test_sdclr_masks_loss_and_gradients_match_single_process(ddp_results):
    r = ddp_results
    for k in range(2):
        assert r[k]["masks_equal_0.0"] and r[k]["masks_equal_0.2"] and r[k]["random_draw_equal"]
        assert r[k]["masks_after_ddp_train"] and r[k]["masks_after_ddp_eval"]
    # magnitude masks equal the single-process ones
    single = _model()
    single.backbone.recompute_masks(3)
    assert torch.equal(r[0]["masks_0.0"], _flat_masks(single))
    # the random part removed about 20 % more of the weights
    assert 0.3 < r[0]["masks_0.2"].double().mean() < 0.5 and not torch.equal(r[0]["masks_0.2"], r[0]["masks_0.0"])
    for mode in ("train", "eval"):
        loss, grads, m = _reference(mode)
        for k in range(2):
            torch.testing.assert_close(r[k][f"loss_{mode}"], loss, rtol=0, atol=1e-12)
            g = r[k][f"grads_{mode}"]
            assert set(g) == set(grads)
            for n in grads:
                torch.testing.assert_close(g[n], grads[n], rtol=0, atol=1e-12, msg=f"{mode} {n}")


# ----- the Lightning path: callback added by the model, masks in sync at every step --------------


class _DM(LongTailDataModule):
    num_classes = 3

    def __init__(self):
        super().__init__(batch_size=4, num_workers=0)
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(16, 3, 8, 8, generator=g)
        self.targets = np.array([0] * 9 + [1] * 5 + [2] * 2)

    def train_targets(self):
        return self.targets

    def build_datasets(self, stage):
        views = lambda i: [self.images[i], self.images[i].flip(-1)]  # noqa: E731
        return {"train": IndexedDataset([(i, 0) for i in range(16)], self.targets, views)}


class _MaskCheck(pl.Callback):
    def __init__(self):
        self.records = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        flat = _flat_masks(pl_module)
        self.records.append((trainer.global_step, int(pl_module.backbone.mask_epoch), _all_equal_across_ranks(flat), int(flat.sum())))


def _lightning_run(rank: int, world: int, out_dir: str) -> list:
    """Lightning's DDP on the process group this worker already joined (as under torchrun)."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), NODE_RANK="0")
    torch.manual_seed(0)
    model = SDCLR(
        num_classes=3,
        backbone="tiny",
        prune_ratio=0.6,
        random_prune_ratio=0.2,
        proj_hidden_dim=16,
        proj_dim=8,
        optimizer=partial(torch.optim.SGD, lr=0.5, momentum=0.9),
    )
    check = _MaskCheck()
    trainer = pl.Trainer(
        strategy="ddp",
        accelerator="cpu",
        devices=world,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[check],
        default_root_dir=out_dir,
    )
    trainer.fit(model, datamodule=_DM())
    return check.records


def test_lightning_ddp_masks_identical_on_both_ranks(ddp_results):
    recs = [r["lightning"] for r in ddp_results]
    assert len(recs[0]) == len(recs[1]) == 4  # 2 epochs x (16 images / 2 ranks / batch 4)
    for k in range(2):
        assert all(eq for _, _, eq, _ in recs[k])
        assert [e for _, e, _, _ in recs[k]] == [0, 0, 1, 1]
    assert recs[0] == recs[1]
    kept = [n for *_, n in recs[0]]
    assert kept[0] == kept[1] and kept[2] == kept[3]
