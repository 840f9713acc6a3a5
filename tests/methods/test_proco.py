"""ProCo method: the step against an independent recomputation, the estimator window across
(mid-epoch) resumes, and every ProCo config for one step on real-format generated data."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from ltcl_lightning.losses.proco import proco_logits
from ltcl_lightning.methods.proco import ProCo

REPO = Path(__file__).resolve().parents[2]


def _model(**kw):
    kw = {"backbone": "tiny", "proj_dim": 8, "proj_hidden_dim": 16, "class_counts": [20, 9, 5, 2], **kw}
    return ProCo(4, **kw)


def test_step_is_la_ce_plus_alpha_mean_of_view_losses():
    torch.manual_seed(0)
    m = _model(contrastive_weight=0.7)
    m.estimator.start_epoch(0)
    ref_est = {k: v.clone() for k, v in m.estimator.state_dict().items()}
    views = [torch.randn(6, 3, 8, 8) for _ in range(3)]
    y = torch.tensor([0, 0, 1, 2, 3, 0])
    out = m.training_loss(torch.arange(6), views, y)
    # independent recomputation: same forward, estimator by hand (cumulative mean, count 0 at start)
    m2 = _model(contrastive_weight=0.7)
    m2.load_state_dict(m.state_dict())
    m2.estimator.load_state_dict(ref_est)
    m.eval(), m2.train()
    h = m2.backbone(torch.cat(views))
    z = F.normalize(m2.projector(h), dim=1)
    z2, z3 = z[6:12], z[12:]
    log_prior = torch.log(torch.tensor([20, 9, 5, 2], dtype=torch.float64) / 36)
    mean = ref_est["mean_old"].clone()
    count = torch.zeros(4)
    losses = []
    for zv in (z2, z3):
        for c in range(4):
            sel = zv.detach()[y == c]
            if len(sel):
                mean[c] = (mean[c] * count[c] + sel.sum(0)) / (count[c] + len(sel))
                count[c] += len(sel)
        r = mean.norm(dim=1)
        kappa = torch.clamp(8 * r / (1 - r * r), max=1e5)
        kappa[kappa < 0] = 1e5
        losses.append(F.cross_entropy(proco_logits(zv, kappa, F.normalize(mean, dim=1), 0.1) + log_prior, y))
    ce = F.cross_entropy(m2.classifier(h[:6]).double() + log_prior, y)
    expected = ce + 0.7 * (losses[0] + losses[1]) / 2
    assert float(out["loss"]) == pytest.approx(float(expected), rel=1e-5)
    assert float(out["ce_loss"]) == pytest.approx(float(ce), rel=1e-5)
    # both contrastive views entered both estimators: 2 features per sample
    assert m.estimator.count_old.tolist() == [6.0, 2.0, 2.0, 2.0] == m.estimator.count_new.tolist()
    torch.testing.assert_close(m.estimator.mean_old, mean, rtol=1e-5, atol=1e-6)
    assert m.report_state()["kappa"].values.shape == (4,)


def test_three_views_are_required():
    m = _model()
    with pytest.raises(ValueError, match="3 views"):
        m.training_step((torch.arange(2), [torch.randn(2, 3, 8, 8)] * 2, torch.tensor([0, 1])), 0)
    with pytest.raises(ValueError, match="proj_dim >= 2"):
        _model(proj_dim=1)


# ----- resume -----------------------------------------------------------------------------------
class _Capture(pl.Callback):
    """Estimator state as training (re)starts: after on_train_start / on_train_epoch_start, before
    the first update."""

    def __init__(self):
        self.state = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.state is None:
            self.state = {k: v.clone() for k, v in pl_module.estimator.state_dict().items()}


def _trainer(tmp_path, max_steps, callbacks):
    return pl.Trainer(
        max_steps=max_steps,
        limit_train_batches=4,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=callbacks,
        num_sanity_val_steps=0,
    )


def _digits():
    from ltcl_lightning.data.digits import DigitsLTDataModule

    return DigitsLTDataModule(batch_size=16, num_workers=0, train_views=["digits"] * 3)


def _proco_digits():
    return ProCo(10, backbone="tiny", proj_dim=8, proj_hidden_dim=16)


@pytest.mark.parametrize("stop_step, mid_epoch", [(6, True), (4, False)])
def test_resume_restores_the_estimator_window(tmp_path, stop_step, mid_epoch):
    torch.manual_seed(0)
    model = _proco_digits()
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_train_steps=stop_step, save_on_train_epoch_end=False)
    _trainer(tmp_path, stop_step, [ckpt]).fit(model, datamodule=_digits())
    saved = {k: v.clone() for k, v in model.estimator.state_dict().items()}
    assert int(saved["window_epoch"]) == (1 if mid_epoch else 0)
    # old window = all of epoch 0 (+ epoch 1 so far), 2 contrastive features per image
    assert float(saved["count_old"].sum()) == ((4 + 2) * 16 * 2 if mid_epoch else 4 * 16 * 2)

    cap = _Capture()
    resumed = _proco_digits()
    _trainer(tmp_path, stop_step + 1, [cap]).fit(resumed, datamodule=_digits(), ckpt_path=str(tmp_path / "last.ckpt"))
    if mid_epoch:  # same epoch: the restored window is used as it was, no second swap
        for k, v in saved.items():
            assert torch.equal(cap.state[k], v), k
    else:  # next epoch: old <- the saved new, new <- the next seeded reset, count 0
        assert torch.equal(cap.state["mean_old"], saved["mean_new"])
        assert torch.equal(cap.state["count_old"], saved["count_new"])
        assert float(cap.state["count_new"].sum()) == 0
        fresh = _proco_digits().estimator
        fresh.load_state_dict(saved)
        fresh.start_epoch(1)
        assert torch.equal(cap.state["mean_new"], fresh.mean_new)
        assert int(cap.state["window_epoch"]) == 1


# the recipes: tests/test_cli.py::test_config_runs_one_step runs each once (tiny backbone, batch 8)


# ----- the VMFEstimation callback -------------------------------------------------------------------
def test_vmf_callback_is_added_once_swaps_each_epoch_and_logs_kappa_by_group(tmp_path):
    from ltcl_lightning.callbacks.vmf import VMFEstimation

    torch.manual_seed(0)
    model = _proco_digits()
    trainer = pl.Trainer(
        max_epochs=2,
        limit_train_batches=2,
        limit_val_batches=0,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=_digits())
    assert sum(isinstance(c, VMFEstimation) for c in trainer.callbacks) == 1
    assert int(model.estimator.window_epoch) == 1 and int(model.estimator.num_resets) >= 2
    # old = epoch 0 (2 steps) + epoch 1 (2 steps), 2 contrastive views of 16 images per step
    assert float(model.estimator.count_old.sum()) == 4 * 16 * 2
    kappa = model.estimator.kappa().double()
    from ltcl_lightning.longtail import class_groups

    groups = class_groups(model.class_counts, model.grouping)
    for g, name in enumerate(("many", "medium", "few")):
        if (groups == g).any():
            assert float(trainer.callback_metrics[f"vmf/kappa_{name}"]) == pytest.approx(float(kappa[groups == g].mean()), rel=1e-5)

    # listed explicitly, the method does not add a second one
    model2 = _proco_digits()
    trainer2 = pl.Trainer(
        max_steps=1,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        callbacks=[VMFEstimation()],
        default_root_dir=tmp_path,
        limit_val_batches=0,
        num_sanity_val_steps=0,
    )
    trainer2.fit(model2, datamodule=_digits())
    assert sum(isinstance(c, VMFEstimation) for c in trainer2.callbacks) == 1


def test_vmf_callback_refuses_methods_without_estimator():
    from ltcl_lightning.callbacks.vmf import VMFEstimation
    from ltcl_lightning.methods.simclr import SimCLR

    with pytest.raises(TypeError, match="needs a method with a VMFEstimator"):
        VMFEstimation().on_train_epoch_start(None, SimCLR(10, backbone="tiny"))
