"""2-process gloo (ddp_spawn): device-resident data keeps the samplers' sharding, the index
contract and the once-per-image evaluation; the ranks draw different augmentation parameters."""

from __future__ import annotations

import json
import os

import lightning.pytorch as pl
import pytest
import torch
from ddp_helpers import spawn_trainer

from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.data.samplers import InstanceSampler
from ltcl_lightning.methods.simclr import SimCLR

pytestmark = pytest.mark.ddp


class _Record(pl.Callback):
    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.rec: dict = {"train_index": [], "view_sums": []}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        index, views, target = batch
        self.rec["sampler"] = type(trainer.train_dataloader.sampler).__name__
        self.rec["train_index"] += index.tolist()
        self.rec["targets_ok"] = bool(torch.equal(target, torch.as_tensor(trainer.datamodule.datasets["train"].targets)[index]))
        self.rec["view_sums"].append(float(views[0].sum()))

    def on_validation_end(self, trainer, pl_module):
        self.rec["num_samples"] = pl_module.last_eval["val"]["num_samples"]
        self.rec["seed"] = trainer.datamodule._generator(torch.device("cpu")).initial_seed()
        with open(os.path.join(self.out_dir, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump(self.rec, f)


def test_device_resident_under_ddp(tmp_path):
    dm = DigitsLTDataModule(batch_size=16, seed=5, device_resident=True)
    trainer = spawn_trainer(tmp_path, [_Record(str(tmp_path))])
    trainer.fit(SimCLR(10, backbone="tiny", proj_hidden_dim=32, proj_dim=16), datamodule=dm)
    recs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    n = len(dm.train_targets())
    for r, rec in enumerate(recs):
        assert rec["sampler"] == "InstanceSampler" and rec["targets_ok"]
        assert rec["train_index"] == list(InstanceSampler(n, num_replicas=2, rank=r, seed=5))[:32]
        assert rec["num_samples"] == 300  # the 300 test images, each counted once
    assert not set(recs[0]["train_index"]) & set(recs[1]["train_index"])
    assert recs[0]["seed"] != recs[1]["seed"]  # each rank its own augmentation stream
