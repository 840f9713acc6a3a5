"""PaCo / GPaCo modules: the step's loss is paco_loss of the module's own encodings (PaCo: key
encoder updated by the EMA first, then the keys), the queue receives the keys after the loss,
evaluation is the plain classifier, and a resume (epoch boundary and mid-epoch) continues with
the checkpointed queue, pointer and key encoder (``weights_only=True``)."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from ltcl_lightning.callbacks.report import ScalarState
from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.losses.paco import paco_loss
from ltcl_lightning.methods.paco import GPaCo, PaCo

SMALL = dict(backbone="tiny", proj_dim=8, queue_size=10, class_counts=[5, 3, 2, 1])


def _batch(b=6):
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(b, 3, 8, 8, generator=g) for _ in range(2)]
    return torch.arange(b), views, torch.randint(0, 4, (b,), generator=g)


def test_paco_step_is_the_paco_loss_of_its_encodings():
    torch.manual_seed(0)
    model = PaCo(4, temperature=0.2, alpha=0.05, ema_momentum=0.9, **SMALL)
    index, views, target = _batch()
    # keys go into the queue across steps; give it some content first
    model.queue.enqueue(F.normalize(torch.randn(4, 8), dim=1), torch.tensor([0, 1, 2, 3]))
    key_before = [p.clone() for p in model.key_encoder.parameters()]
    with torch.no_grad():  # the online weights moved since the copy
        for p in model.projector.parameters():
            p.add_(0.1)
    online = [p.detach().clone() for m in (model.backbone, model.projector) for p in m.parameters()]
    qk, ql = [t.clone() for t in model.queue.contents()]
    out = model.training_loss(index, views, target)
    for k0, q, k in zip(key_before, online, model.key_encoder.parameters()):
        torch.testing.assert_close(k, 0.9 * k0 + 0.1 * q, rtol=0, atol=1e-6)
    h = model.backbone(views[0])
    q = F.normalize(model.projector(h), dim=1)
    k = F.normalize(model.key_encoder(views[1])[-1], dim=1)
    prior = torch.tensor([5, 3, 2, 1], dtype=torch.float64) / 11
    expected = paco_loss(q, k, target, model.classifier(h), qk, ql, 0.2, 0.05, log_prior=torch.log(prior + 1e-9))
    torch.testing.assert_close(out["loss"], expected, rtol=1e-5, atol=1e-6)
    # the batch's keys were enqueued after the loss: 4 + 6 = 10 entries, pointer wrapped to 0
    assert int(model.queue.filled) == 10 and int(model.queue.ptr) == 0
    torch.testing.assert_close(model.queue.keys[4:10], k, rtol=1e-5, atol=1e-6)
    assert torch.equal(model.queue.labels[4:10], target)
    # evaluation: the classifier, no prior
    torch.testing.assert_close(model.classify(views[0]), model.classifier(model.backbone(views[0])))


def test_gpaco_step_has_both_views_as_anchors_and_no_key_encoder():
    torch.manual_seed(0)
    model = GPaCo(4, temperature=0.2, alpha=0.045, **SMALL)
    assert not hasattr(model, "key_encoder")
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in model.projector.modules())
    index, views, target = _batch()
    out = model.training_loss(index, views, target)
    h = model.backbone(torch.cat(views))
    z = F.normalize(model.projector(h), dim=1)
    prior = torch.tensor([5, 3, 2, 1], dtype=torch.float64) / 11
    empty = torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)
    expected = paco_loss(z[:6], z[6:], target, model.classifier(h), *empty, 0.2, 0.045, log_prior=torch.log(prior + 1e-9), anchors="both")
    torch.testing.assert_close(out["loss"], expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.queue.keys[:6], z[6:].detach(), rtol=1e-5, atol=1e-6)


def test_refuses_wrong_view_count_and_weights():
    model = PaCo(4, **SMALL)
    index, views, target = _batch()
    with pytest.raises(ValueError, match="2 views"):
        model.training_step((index, views[:1], target), 0)
    with pytest.raises(ValueError, match="alpha"):
        PaCo(4, alpha=0.0, beta=0.0, **SMALL)


class Spy(pl.Callback):
    def __init__(self):
        self.start = None
        self.steps = []

    def on_train_start(self, trainer, pl_module):
        self.start = {k: v.clone() for k, v in pl_module.state_dict().items() if k.startswith(("queue.", "key_encoder."))}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((trainer.global_step, int(pl_module.queue.ptr), batch[2].clone()))


def _fit(tmp_path, callbacks, ckpt_path=None, epochs=2):
    pl.seed_everything(0)
    model = PaCo(10, backbone="tiny", proj_dim=8, queue_size=40, temperature=0.2, alpha=0.05)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=epochs,
        limit_train_batches=3,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
    )
    trainer.fit(model, DigitsLTDataModule(batch_size=16, train_views=["digits", "digits"]), ckpt_path=ckpt_path)
    return model


def test_resume_continues_with_the_checkpointed_queue_and_key_encoder(tmp_path):
    spy = Spy()
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=2, save_top_k=-1, filename="{step}")
    full = _fit(tmp_path / "a", [spy, ck])
    assert [p for _, p, _ in spy.steps] == [16, 32, 8, 24, 0, 16]  # 16 keys per step, queue of 40
    for name in ("step=2", "step=4"):  # mid epoch 0, mid epoch 1 (epoch boundary is step 3)
        path = tmp_path / "ck" / f"{name}.ckpt"
        saved = torch.load(path, weights_only=True)["state_dict"]
        spy2 = Spy()
        resumed = _fit(tmp_path / name, [spy2], ckpt_path=str(path))
        for k, v in spy2.start.items():
            assert torch.equal(v, saved[k]), k
        step0 = int(name.split("=")[1])
        assert spy2.steps[0][0] == step0 + 1
        assert spy2.steps[0][1] == (int(saved["queue.ptr"]) + 16) % 40  # continues from the saved pointer
        assert int(resumed.queue.filled) == 40
        assert resumed.report_state()["queue_filled"] == ScalarState(40)  # a record LongTailReport logs
        # the same number of keys went in: the pointer ends where the uninterrupted run's does
        assert int(resumed.queue.ptr) == int(full.queue.ptr)
