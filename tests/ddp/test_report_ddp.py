"""LongTailReport under 2-process DDP (gloo, CPU): the confused pairs come from the predictions
of all ranks (the metric is synced, a collective on every rank, without deadlock), padding
images count once, and the per-class CSV is written once (rank 0)."""

import csv

import lightning.pytorch as pl
import pytest
import torch
from ddp_helpers import spawn_trainer
from lightning.pytorch.loggers import CSVLogger

from ltcl_lightning.callbacks.report import LongTailReport
from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.methods.ce import CrossEntropy
from ltcl_lightning.metrics import most_confused_pairs

pytestmark = pytest.mark.ddp


def _dm():
    # 10 x 11 = 110 evaluation images, batches of 16 on 2 ranks: the sampler pads
    return DigitsLTDataModule(imbalance_factor=10, batch_size=32, test_per_class=11, train_views=("eval",), eval_batch_size=16)


def test_ddp_confused_pairs_equal_single_process(tmp_path):
    pl.seed_everything(0)
    model = CrossEntropy(10, backbone="tiny", grouping="thirds")
    logger = CSVLogger(tmp_path, name="ddp")
    trainer = spawn_trainer(tmp_path, [LongTailReport(top_confused=100)], logger=logger)
    trainer.fit(model, _dm())
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    log_dir = tmp_path / "ddp" / "version_0"
    assert len(list(csv.DictReader(open(log_dir / "per_class_val.csv")))) == 10  # once, not once per rank

    # the same weights evaluated in this process, without the metric
    final = CrossEntropy.load_from_checkpoint(tmp_path / "m.ckpt").eval()
    dm = _dm()
    dm.setup("fit")
    preds, targets = [], []
    with torch.no_grad():
        for _, views, target in dm.val_dataloader():
            preds.append(final.classify(views[0]).argmax(1))
            targets.append(target)
    preds, targets = torch.cat(preds), torch.cat(targets)
    ref = sorted((t, p, n) for t, p, n, _ in most_confused_pairs(preds, targets, 10, 100))
    got = sorted(
        (int(r["true_index"]), int(r["pred_index"]), int(r["count"])) for r in csv.DictReader(open(log_dir / "confused_pairs_val.csv"))
    )
    assert sum(n for *_, n in got) == int((preds != targets).sum())  # all 110 images, not one rank's half
    assert got == ref
