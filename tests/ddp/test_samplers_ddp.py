"""2-process gloo (Lightning ddp_spawn): the samplers shard one draw by rank; Lightning keeps them;
the evaluation of an odd-sized set (21 images, padded to 22 by the distributed sampler) counts each image once."""

from __future__ import annotations

import json
import os

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from ddp_helpers import spawn_trainer

from ltcl_lightning.data.inaturalist import INaturalist2018DataModule
from ltcl_lightning.data.samplers import ClassAwareSampler, InstanceSampler
from ltcl_lightning.methods.ce import CrossEntropy

pytestmark = pytest.mark.ddp

TARGETS = np.repeat(np.arange(4), [11, 6, 3, 1])  # 21 labels, an odd size


def _sampler_draws() -> dict:
    """Inside a running process group: samplers built without rank / world size read them from it."""
    samplers = {
        "instance20": InstanceSampler(20, seed=7),
        "instance21": InstanceSampler(21, seed=7),
        "class_balanced": ClassAwareSampler(TARGETS, 0.0, seed=7),
        "sqrt": ClassAwareSampler(TARGETS, 0.5, seed=7),
    }
    out = {}
    for epoch in (0, 1):
        for name, s in samplers.items():
            s.set_epoch(epoch)
            out[f"{name}/{epoch}"] = list(s)
    return out


def _check_sampler_draws(r0: dict, r1: dict) -> None:
    for epoch in (0, 1):
        a, b = r0[f"instance20/{epoch}"], r1[f"instance20/{epoch}"]
        assert len(a) == len(b) == 10 and not set(a) & set(b) and sorted(a + b) == list(range(20))
        # 21 images: 11 per rank, the one padded position repeats an image of the other rank
        a, b = r0[f"instance21/{epoch}"], r1[f"instance21/{epoch}"]
        assert len(a) == len(b) == 11 and set(a) | set(b) == set(range(21)) and len(set(a) & set(b)) == 1
        for name, power in (("class_balanced", 0.0), ("sqrt", 0.5)):
            ref = ClassAwareSampler(TARGETS, power, num_replicas=2, rank=0, seed=7)
            ref.set_epoch(epoch)
            draw = ref.global_draw().tolist()
            # the two shards are the alternate positions of one seeded draw: disjoint positions
            assert r0[f"{name}/{epoch}"] == draw[0::2] and r1[f"{name}/{epoch}"] == draw[1::2]
    assert r0["instance20/0"] != r0["instance20/1"]


class _Record(pl.Callback):
    """Writes, per rank, the training sampler Lightning ended up with, the training indices, the
    metric's local (unsynchronised) evaluation triples and the synchronised result."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.rec: dict = {"train_index": []}

    def on_train_start(self, trainer, pl_module):
        assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == 2
        self.rec["draws"] = _sampler_draws()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.rec["sampler"] = type(trainer.train_dataloader.sampler).__name__
        self.rec["train_index"] += batch[0].tolist()

    def on_validation_epoch_end(self, trainer, pl_module):  # runs before the module computes the metric
        m = pl_module.val_metric
        self.rec["local"] = [torch.cat(x).tolist() for x in (m.index, m.preds, m.target)]

    def on_validation_end(self, trainer, pl_module):
        res = pl_module.last_eval["val"]
        self.rec["result"] = {"num_samples": res["num_samples"], "acc": res["acc"], "support": res["support"].tolist()}
        with open(os.path.join(self.out_dir, f"fit{trainer.global_rank}.json"), "w") as f:
            json.dump(self.rec, f)


def test_samplers_and_evaluation_under_ddp(inat_folder, tmp_path):
    """One 2-process ddp_spawn run (process start-up dominates the cost): the samplers' shards are
    disjoint and cover the data, Lightning keeps them unwrapped, evaluation counts each image once."""
    f = inat_folder
    dm = INaturalist2018DataModule(
        data_dir=f["data_dir"],
        train_list=f["train_list"],
        val_list=f["val_list"],
        num_classes=f["num_classes"],
        image_size=16,
        batch_size=4,
        num_workers=0,
        sampler="class_balanced",
        seed=3,
        pin_memory=False,
    )
    n_val = 3 * f["num_classes"]  # 21: 2 ranks get 11 each, one image twice
    trainer = spawn_trainer(tmp_path, [_Record(str(tmp_path))])
    trainer.fit(CrossEntropy(num_classes=f["num_classes"], backbone="tiny"), datamodule=dm)
    recs = [json.loads((tmp_path / f"fit{r}.json").read_text()) for r in (0, 1)]
    _check_sampler_draws(recs[0]["draws"], recs[1]["draws"])
    targets = dm.train_file.labels
    for r, rec in enumerate(recs):
        # not wrapped in DistributedSamplerWrapper, and each rank got its shard of the seeded draw
        assert rec["sampler"] == "ClassAwareSampler"
        expected = list(ClassAwareSampler(targets, 0.0, num_replicas=2, rank=r, seed=3))[:8]
        assert rec["train_index"] == expected
    # evaluation: 22 predictions were made (padding), 21 were counted, each image once
    local = [rec["local"] for rec in recs]
    seen = local[0][0] + local[1][0]
    assert len(seen) == n_val + 1 and sorted(set(seen)) == list(range(n_val))
    first = {}
    for idx, pred, tgt in zip(seen, local[0][1] + local[1][1], local[0][2] + local[1][2]):
        first.setdefault(idx, (pred, tgt))
    acc = np.mean([p == t for p, t in first.values()])
    for rec in recs:
        assert rec["result"]["num_samples"] == n_val
        assert rec["result"]["support"] == [3] * f["num_classes"]
        assert rec["result"]["acc"] == pytest.approx(acc)
