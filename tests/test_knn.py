"""Weighted kNN against an independent float64 numpy computation, a hand example, and the
online KNNMonitor's logged numbers against a recomputation from the trained backbone."""

from __future__ import annotations

import lightning.pytorch as pl
import numpy as np
import pytest
import torch

from ltcl_lightning.callbacks.knn import KNNMonitor
from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.knn import knn_predict, knn_scores
from ltcl_lightning.longtail import GROUP_NAMES, class_groups
from ltcl_lightning.methods.simclr import SimCLR


def numpy_knn(train, labels, query, num_classes, k, t):
    """InstDisc Eq. 6 written out: cosine similarities, top-k, exp(s/T) votes per class."""
    train = train.astype(np.float64)
    query = query.astype(np.float64)
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    query = query / np.linalg.norm(query, axis=1, keepdims=True)
    scores = np.zeros((len(query), num_classes))
    for q in range(len(query)):
        sim = train @ query[q]
        top = np.argsort(-sim, kind="stable")[: min(k, len(train))]
        for i in top:
            scores[q, labels[i]] += np.exp(sim[i] / t)
    return scores


@pytest.mark.parametrize("k,t,chunk", [(5, 0.1, 7), (200, 0.1, 1024), (1, 0.5, 3), (40, 0.07, 16)])
def test_knn_matches_numpy(k, t, chunk):
    g = torch.Generator().manual_seed(k)
    train = torch.randn(60, 8, generator=g) * (torch.rand(60, 1, generator=g) + 0.5)  # norms differ: must not matter
    labels = torch.randint(0, 4, (60,), generator=g)
    query = torch.randn(25, 8, generator=g)
    ref = numpy_knn(train.numpy(), labels.numpy(), query.numpy(), 4, k, t)
    got = knn_scores(train, labels, query, 4, k=k, temperature=t, chunk_size=chunk)
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=2e-5)
    assert torch.equal(knn_predict(train, labels, query, 4, k=k, temperature=t), torch.as_tensor(ref.argmax(1)))


def test_knn_hand_example_weights_beat_counts():
    # the query sits on class 1's single neighbour; two class-0 neighbours are further away:
    # a plain majority vote says 0, the exp(s/T) vote says 1 (e^10 > 2 e^0)
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    labels = torch.tensor([1, 0, 0])
    query = torch.tensor([[1.0, 0.0]])
    assert int(knn_predict(train, labels, query, 2, k=3, temperature=0.1)) == 1
    assert int(knn_predict(train, labels, query, 2, k=3, temperature=100.0)) == 0
    scores = knn_scores(train, labels, query, 2, k=3, temperature=0.1)
    assert scores[0, 1] == pytest.approx(np.exp(10.0), rel=1e-5) and scores[0, 0] == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ValueError, match="same D"):
        knn_scores(train, labels, torch.ones(1, 3), 2)


def test_knn_monitor_logs_the_independent_numbers(tmp_path):
    dm = DigitsLTDataModule(imbalance_factor=10, batch_size=64, num_workers=0)
    model = SimCLR(num_classes=10, backbone="tiny", proj_hidden_dim=32, proj_dim=16, grouping="thirds")
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[KNNMonitor(every_n_epochs=2, k=20, temperature=0.1)],
        num_sanity_val_steps=0,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(model, dm)
    assert model.last_eval["knn"]["epoch"] == 1  # every 2nd epoch: epoch index 1 only

    model.eval()
    with torch.no_grad():

        def feats(ds):
            xs, ys = zip(*[(ds[i][1][0], ds[i][2]) for i in range(len(ds))])
            return model.backbone(torch.stack(xs)).numpy(), np.array(ys)

        x_tr, y_tr = feats(dm.train_eval_dataset())
        x_va, y_va = feats(dm.datasets["val"])
    assert len(x_tr) == sum(dm.class_counts)
    pred = numpy_knn(x_tr, y_tr, x_va, 10, 20, 0.1).argmax(1)
    per_class = np.array([(pred[y_va == c] == c).mean() for c in range(10)])
    groups = class_groups(dm.class_counts, "thirds").numpy()
    logged = trainer.callback_metrics
    assert float(logged["knn/acc"]) == pytest.approx((pred == y_va).mean(), abs=1e-6)
    for g, name in enumerate(GROUP_NAMES):
        assert float(logged[f"knn/{name}"]) == pytest.approx(per_class[groups == g].mean(), abs=1e-6)
