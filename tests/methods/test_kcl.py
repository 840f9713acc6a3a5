"""KCL / TSC modules: the step's loss is kcl_loss of the module's own encodings with positives
drawn from the step-seeded scores (a resume draws the same), the keys are enqueued after the
loss, TSC's targets enter with weight tw, and stage 2 (a class-balanced linear classifier on the
frozen backbone) runs on a KCL checkpoint."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
import torch.nn.functional as F

from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.losses.kcl import kcl_loss
from ltcl_lightning.methods.kcl import KCL, TSC
from ltcl_lightning.methods.linear_probe import LinearProbe

SMALL = dict(backbone="tiny", proj_dim=8, queue_size=12, class_counts=[5, 3, 2, 1], num_positives=2)


def _batch(b=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.arange(b), [torch.randn(b, 3, 8, 8, generator=g) for _ in range(2)], torch.tensor([0, 1, 2, 3, 0, 1])


def test_kcl_step_is_the_kcl_loss_of_its_encodings():
    torch.manual_seed(0)
    model = KCL(4, temperature=0.2, **SMALL)
    model.training_loss(*_batch(seed=1))  # fill the queue with one batch
    qk, ql = [t.clone() for t in model.queue.contents()]
    scores = model._scores(6)
    assert torch.equal(scores, model._scores(6))  # a function of (seed, step, rank)
    index, views, target = _batch()
    out = model.training_loss(index, views, target)
    h = model.backbone(views[0])
    q = F.normalize(model.projector(h), dim=1)
    k = F.normalize(model.key_encoder(views[1])[-1], dim=1)
    expected, _ = kcl_loss(q, k, target, qk, ql, 0.2, 2, scores)
    torch.testing.assert_close(out["loss"], expected, rtol=1e-5, atol=1e-6)
    assert int(model.queue.filled) == 12 and int(model.queue.ptr) == 0
    torch.testing.assert_close(model.queue.keys[6:], k, rtol=1e-5, atol=1e-6)


def test_tsc_step_adds_the_weighted_target_term():
    torch.manual_seed(0)
    model = TSC(4, temperature=0.2, target_weight=0.3, target_steps=20, **SMALL)
    index, views, target = _batch()
    out = model.training_loss(index, views, target)
    h = model.backbone(views[0])
    q = F.normalize(model.projector(h), dim=1)
    k = F.normalize(model.key_encoder(views[1])[-1], dim=1)
    empty = torch.zeros(0, 8), torch.zeros(0, dtype=torch.long)
    cls, tgt = kcl_loss(q, k, target, *empty, 0.2, 2, torch.zeros(6, 0), model.assigner.targets, model.assigner.positive_mask(target), 0.3)
    torch.testing.assert_close(out["loss"], cls + tgt, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss_target"], tgt.detach(), rtol=1e-5, atol=1e-6)
    assert out["loss_target"] > 0


def test_stage_two_class_balanced_linear_classifier_on_a_kcl_checkpoint(tmp_path):
    pl.seed_everything(0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=2,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    model = KCL(10, backbone="tiny", proj_dim=8, queue_size=64, num_positives=6)
    trainer.fit(model, DigitsLTDataModule(batch_size=16, train_views=["digits", "digits"]))
    ckpt = tmp_path / "kcl.ckpt"
    trainer.save_checkpoint(ckpt)
    saved = torch.load(ckpt, weights_only=True)["state_dict"]
    assert int(saved["queue.filled"]) == 32 and "key_encoder.stages.0.net.0.weight" in saved
    probe = LinearProbe(10, checkpoint=str(ckpt), method="ltcl_lightning.methods.kcl.KCL")
    torch.testing.assert_close(probe.backbone.state_dict()["net.0.weight"], saved["backbone.net.0.weight"])
    dm = DigitsLTDataModule(batch_size=16, train_views=["eval"], sampler="class_balanced")
    head = {k: v.clone() for k, v in probe.state_dict().items() if not k.startswith("backbone.")}
    stage2 = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path / "probe",
    )
    stage2.fit(probe, dm)
    # the classifier trained, the KCL backbone stayed frozen, the batches were class-balanced
    assert any(not torch.equal(v, probe.state_dict()[k]) for k, v in head.items() if v.is_floating_point())
    torch.testing.assert_close(probe.backbone.state_dict()["net.0.weight"], saved["backbone.net.0.weight"], rtol=0, atol=0)
    assert type(stage2.train_dataloader.sampler).__name__ == "ClassAwareSampler"
    assert stage2.global_step == 1
