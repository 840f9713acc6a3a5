"""KNNMonitor under 2-process DDP (gloo, CPU): every rank logs the same kNN numbers, and they
equal the kNN accuracy one process computes with the same weights on the whole training and
validation sets (no rank's shard only, no padded repeats)."""

import json

import lightning.pytorch as pl
import pytest
import torch
from ddp_helpers import spawn_trainer

from ltcl_lightning.callbacks.knn import KNNMonitor, embed
from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.knn import knn_predict
from ltcl_lightning.methods.ce import CrossEntropy
from ltcl_lightning.metrics import LongTailAccuracy

pytestmark = pytest.mark.ddp
KEYS = ("acc", "mean_class_acc", "many", "medium", "few", "group_std")


def _dm():
    # 10 x 11 = 110 validation images in batches of 16 on 2 ranks: the distributed sampler would pad
    return DigitsLTDataModule(imbalance_factor=10, batch_size=32, test_per_class=11, train_views=("eval",), eval_batch_size=16)


class _Record(pl.Callback):
    """Each rank writes the kNN numbers KNNMonitor just computed (it runs before this callback)."""

    def __init__(self, folder: str):
        self.folder = folder

    def on_validation_epoch_end(self, trainer, pl_module):
        knn = pl_module.last_eval["knn"]
        with open(f"{self.folder}/knn_rank{trainer.global_rank}.json", "w") as f:
            json.dump({k: float(knn[k]) for k in KEYS}, f)


def test_knn_monitor_is_the_same_on_every_rank_and_equals_one_process(tmp_path):
    pl.seed_everything(0)
    trainer = spawn_trainer(tmp_path, [KNNMonitor(every_n_epochs=1, k=20, temperature=0.1), _Record(str(tmp_path))])
    trainer.fit(CrossEntropy(10, backbone="tiny", grouping="thirds"), _dm())
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    ranks = [json.loads((tmp_path / f"knn_rank{r}.json").read_text()) for r in range(2)]
    assert ranks[0] == ranks[1]

    final = CrossEntropy.load_from_checkpoint(tmp_path / "m.ckpt").eval()
    dm = _dm()
    dm.setup("fit")
    loader = lambda ds: torch.utils.data.DataLoader(ds, batch_size=16)  # noqa: E731
    x_train, y_train = embed(final.backbone, loader(dm.train_eval_dataset()), torch.device("cpu"))
    x_val, y_val = embed(final.backbone, loader(dm.datasets["val"]), torch.device("cpu"))
    assert len(y_train) == sum(dm.class_counts) and len(y_val) == 110
    preds = knn_predict(x_train, y_train, x_val, 10, 20, 0.1)
    metric = LongTailAccuracy(10, final.class_group)
    metric.update(torch.arange(len(y_val)), preds, y_val)
    ref = metric.compute()
    assert ranks[0]["acc"] == pytest.approx(float((preds == y_val).double().mean()), abs=1e-6)
    for k in KEYS:
        assert ranks[0][k] == pytest.approx(float(ref[k]), abs=1e-6), k
