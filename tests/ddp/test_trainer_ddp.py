"""A whole Lightning run under 2-process DDP (gloo, CPU): training with gathered losses works
and the evaluation counts each test image exactly once despite DistributedSampler padding."""

import json

import lightning.pytorch as pl
import pytest
from ddp_helpers import spawn_trainer

from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.methods.simclr import SimCLR

pytestmark = pytest.mark.ddp


class _Record(pl.Callback):
    def __init__(self, path):
        self.path = path

    def on_validation_end(self, trainer, pl_module):  # after the module's epoch-end hook
        if trainer.sanity_checking:
            return
        res = pl_module.last_eval["val"]
        with open(f"{self.path}.rank{trainer.global_rank}", "w") as f:
            json.dump(
                {
                    "n": res["num_samples"],
                    "acc": res["acc"],
                    "per_class": res["per_class"].tolist(),
                    "ece": res["ece"],
                    "top5": res["top5"],
                },
                f,
            )


def test_ddp_fit_counts_each_test_image_once(tmp_path):
    # 10 classes x 31 test images = 310: not divisible by 2 ranks x 16 per batch, so the
    # DistributedSampler pads; the metric must still count 310 images.
    dm = DigitsLTDataModule(test_per_class=31, batch_size=32, eval_batch_size=16)
    model = SimCLR(10, backbone="tiny", proj_hidden_dim=32, proj_dim=16)
    # with the sanity check (Lightning's default 2 batches), which the recorder skips
    trainer = spawn_trainer(tmp_path, [_Record(str(tmp_path / "val"))], num_sanity_val_steps=2)
    trainer.fit(model, dm)
    r0 = json.loads((tmp_path / "val.rank0").read_text())
    r1 = json.loads((tmp_path / "val.rank1").read_text())
    assert r0["n"] == 310 and r1["n"] == 310
    assert r0 == r1  # every rank reports the same, complete evaluation
