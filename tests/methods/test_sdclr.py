"""SDCLR method: joint one-backward step vs the reference two-pass step, gradient masking,
per-sample loss, dual BN, dense evaluation, mask re-pruning and save -> resume -> compare."""

from __future__ import annotations

import copy
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ltcl_lightning.callbacks.pruning import MaskRepruning
from ltcl_lightning.data.base import IndexedDataset, LongTailDataModule
from ltcl_lightning.losses.contrastive import nt_xent_loss
from ltcl_lightning.methods.sdclr import SDCLR
from ltcl_lightning.modules.backbones import build_backbone
from ltcl_lightning.modules.heads import ProjectionHead
from ltcl_lightning.modules.pruning import DualBatchNorm, MaskedConv2d, mask_densities

REPO = Path(__file__).resolve().parents[2]


def _model(ratio=0.5, seed=0, dtype=torch.float64, **kw) -> SDCLR:
    torch.manual_seed(seed)
    m = SDCLR(num_classes=3, backbone="tiny", class_counts=[6, 3, 1], prune_ratio=ratio, proj_hidden_dim=16, proj_dim=8, **kw).to(dtype)
    m.backbone.recompute_masks(0)
    return m


def _batch(b=6, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    x1 = torch.randn(b, 3, 8, 8, generator=g, dtype=dtype)
    x2 = torch.randn(b, 3, 8, 8, generator=g, dtype=dtype) * 1.5 + 0.5
    return torch.arange(b), [x1, x2], torch.randint(0, 3, (b,), generator=g)


def _grads(m: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in m.named_parameters()}


def test_joint_gradient_equals_reference_two_pass():
    """Spec (d): the reference runs a no-grad pruned pass, backward through the dense branch
    against the detached pruned features, then backward through the pruned branch against the
    detached dense features. One loss with both branches gives the same summed gradient."""
    joint = _model()
    ref = copy.deepcopy(joint)
    index, views, target = _batch()
    out = joint.training_loss(index, views, target)
    out["loss"].backward()

    T = ref.temperature
    with torch.no_grad():
        f2 = ref.project(ref.backbone(views[1], pruned=True), pruned=True)
    f1 = ref.project(ref.backbone(views[0]))
    loss1 = nt_xent_loss(f1, f2.detach(), T)
    loss1.backward()
    f2 = ref.project(ref.backbone(views[1], pruned=True), pruned=True)
    loss2 = nt_xent_loss(f1.detach(), f2, T)
    loss2.backward()

    torch.testing.assert_close(out["loss"].detach(), loss1.detach(), rtol=0, atol=1e-12)
    g_joint, g_ref = _grads(joint), _grads(ref)
    assert g_joint.keys() == g_ref.keys()
    for name in g_joint:
        torch.testing.assert_close(g_joint[name], g_ref[name], rtol=0, atol=1e-12, msg=name)
    # both BN copies and the shared convs received gradient
    assert any("bn_list.1" in n and g.abs().sum() > 0 for n, g in g_joint.items())
    assert any("bn_list.0" in n and g.abs().sum() > 0 for n, g in g_joint.items())


def test_masked_weights_get_no_gradient_from_pruned_branch():
    m = _model(ratio=0.5)
    index, views, target = _batch()
    with torch.no_grad():
        f1 = m.project(m.backbone(views[0]))
    f2 = m.project(m.backbone(views[1], pruned=True), pruned=True)
    nt_xent_loss(f1, f2, m.temperature).backward()
    convs = [mod for mod in m.backbone.modules() if isinstance(mod, MaskedConv2d)]
    assert any(not bool(c.prune_mask.all()) for c in convs)
    for c in convs:
        assert bool((c.weight.grad[~c.prune_mask] == 0).all())
    assert any(bool((c.weight.grad[c.prune_mask] != 0).any()) for c in convs)
    # the dense branch does reach the masked weights (so the check above can fail)
    m.zero_grad()
    m.training_loss(index, views, target)["loss"].backward()
    assert any(bool((c.weight.grad[~c.prune_mask] != 0).any()) for c in convs)


def _nt_xent_per_sample_reference(z1: np.ndarray, z2: np.ndarray, t: float) -> np.ndarray:
    """Float64 NT-Xent, spec (d): 2B anchors, positive at a +- B, self excluded; per sample the
    mean of its two anchors."""
    u = np.concatenate([z1, z2])
    b = len(z1)
    s = u @ u.T / t
    losses = np.empty(2 * b)
    for a in range(2 * b):
        p = (a + b) % (2 * b)
        others = [j for j in range(2 * b) if j != a]
        losses[a] = -(s[a, p] - np.log(np.exp(s[a, others]).sum()))
    return (losses[:b] + losses[b:]) / 2


def test_per_sample_loss_is_dense_v1_vs_pruned_v2_nt_xent():
    m = _model(ratio=0.9)
    index, views, target = _batch(b=5)
    out = m.training_loss(index, views, target)
    ref_m = copy.deepcopy(m)
    with torch.no_grad():
        z1 = F.normalize(ref_m.projector(ref_m.backbone(views[0])), dim=1).numpy()
        z2 = F.normalize(ref_m.projector(ref_m.backbone(views[1], pruned=True), pruned=True), dim=1).numpy()
    ref = _nt_xent_per_sample_reference(z1, z2, m.temperature)
    assert out["per_sample_loss"].shape == (5,) and not out["per_sample_loss"].requires_grad
    np.testing.assert_allclose(out["per_sample_loss"].numpy(), ref, rtol=0, atol=1e-10)
    assert float(out["loss"].detach()) == pytest.approx(ref.mean(), abs=1e-10)
    # the probe features are the dense backbone features of view 1
    torch.testing.assert_close(out["features"].detach(), ref_m.backbone(views[0]).detach())


def test_dual_bn_statistics_separate_and_dense_equal_plain_model():
    m = _model(ratio=0.9)
    torch.manual_seed(0)
    plain_bb = build_backbone("tiny").double()
    plain_bb.load_state_dict({k: v for k, v in _to_plain_state(m.backbone.net.state_dict()).items()})
    plain_head = ProjectionHead(m.feat_dim, 16, 8, num_layers=3).double()
    plain_head.load_state_dict(_to_plain_state(m.projector.net.state_dict()))
    index, views, target = _batch()
    m.training_loss(index, views, target)
    plain_head(plain_bb(views[0]))
    for root, plain in ((m.backbone.net, plain_bb), (m.projector.net, plain_head)):
        duals = [d for d in root.modules() if isinstance(d, DualBatchNorm)]
        bns = [b for b in plain.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
        assert len(duals) == len(bns) > 0
        for d, b in zip(duals, bns):
            torch.testing.assert_close(d.dense.running_mean, b.running_mean, rtol=0, atol=1e-14)
            torch.testing.assert_close(d.dense.running_var, b.running_var, rtol=0, atol=1e-14)
            assert not torch.allclose(d.pruned_bn.running_mean, d.dense.running_mean)
            assert int(d.dense.num_batches_tracked) == int(d.pruned_bn.num_batches_tracked) == 1


def _to_plain_state(sd: dict) -> dict:
    """SDCLR naming -> plain naming: keep BN copy 0, drop copy 1 and the masks (what the
    reference's probe conversion ``--bnNameCnt 0`` does)."""
    out = {}
    for k, v in sd.items():
        if k.endswith("prune_mask") or ".bn_list.1." in k:
            continue
        out[k.replace(".bn_list.0.", ".")] = v
    return out


def test_evaluation_uses_dense_branch_with_dense_bn():
    m = _model(ratio=0.9)
    index, views, target = _batch()
    m.training_loss(index, views, target)  # both BN copies get different running statistics
    m.eval()
    x = _batch(b=4, seed=7)[1][0]
    plain = m.backbone.to_dense()
    assert not any(getattr(mod, "pruned", False) for mod in m.modules())
    torch.testing.assert_close(m(x), plain(x), rtol=0, atol=0)
    torch.testing.assert_close(m.backbone(x), plain(x), rtol=0, atol=0)
    torch.testing.assert_close(m.classify(x), m.probe(plain(x)), rtol=0, atol=0)
    assert not torch.allclose(m.backbone(x, pruned=True), m(x))


def test_report_state_and_recompute_bookkeeping():
    m = _model(ratio=0.9)
    assert int(m.backbone.mask_epoch) == 0
    state = m.report_state()["mask_density"].values
    convs = {n: c for n, c in m.backbone.net.named_modules() if isinstance(c, MaskedConv2d)}
    assert set(state) == set(convs) | {"overall"}
    n = sum(c.prune_mask.numel() for c in convs.values())
    assert state["overall"] == sum(int(c.prune_mask.sum()) for c in convs.values()) / n
    assert state["overall"] == pytest.approx(0.1, abs=1.0 / n + 1e-12)
    for name, c in convs.items():
        assert state[name] == c.prune_mask.double().mean().item()


def test_constructor_validates():
    with pytest.raises(ValueError, match="prune_ratio"):
        SDCLR(num_classes=3, backbone="tiny", prune_ratio=1.5)
    with pytest.raises(ValueError, match="random_prune_ratio"):
        SDCLR(num_classes=3, backbone="tiny", prune_ratio=0.5, random_prune_ratio=0.7)
    m = SDCLR(num_classes=3, backbone="tiny", head_layers=2)
    assert sum(isinstance(d, DualBatchNorm) for d in m.projector.modules()) == 2
    with pytest.raises(ValueError, match="2 views"):
        m.training_step((torch.arange(2), [torch.randn(2, 3, 8, 8)], torch.zeros(2, dtype=torch.long)), 0)


# ----- Lightning: callback, resume -------------------------------------------------------------


class _FixedViewsLT(LongTailDataModule):
    """24 fixed 8x8 images, 3 classes (12/8/4), deterministic views, no shuffling: two runs see
    the same batches in the same order, so a resumed run can be compared step for step."""

    num_classes = 3
    image_size = 8

    def __init__(self):
        super().__init__(batch_size=8, num_workers=0)
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(24, 3, 8, 8, generator=g)
        self.noise = torch.randn(24, 3, 8, 8, generator=g) * 0.3
        self.targets = np.array([0] * 12 + [1] * 8 + [2] * 4)

    def train_targets(self):
        return self.targets

    def build_datasets(self, stage):
        base = [(i, int(t)) for i, t in enumerate(self.targets)]
        views = lambda i: [self.images[i], self.images[i].flip(-1) + self.noise[i]]  # noqa: E731
        return {"train": IndexedDataset(base, self.targets, views), "val": IndexedDataset(base, self.targets, lambda i: [self.images[i]])}

    def train_dataloader(self):
        self.loader = _ResumableLoader(self.datasets["train"], batch_size=8, shuffle=False, skip=self._skip)
        self._skip = 0
        return self.loader

    # The datamodule, not the loader, carries the position: Lightning restores loader states
    # only if the train loader is built after the loops are restored, but the base's
    # configure_optimizers (estimated_stepping_batches) builds it before.
    _skip = 0

    def state_dict(self):
        return {"consumed": self.loader.served if getattr(self, "loader", None) is not None else 0}

    def load_state_dict(self, state):
        self._skip = state["consumed"]


class _ResumableLoader(DataLoader):
    """Skips the first ``skip`` batches of its next epoch (the ones a mid-epoch checkpoint has
    seen), so that a resumed run sees the same batches as an uninterrupted one."""

    def __init__(self, *args, skip: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.served, self._skip = 0, skip

    def __iter__(self):
        self.served = 0
        skip, self._skip = (self._skip if self._skip < len(self) else 0), 0
        for i, batch in enumerate(super().__iter__()):
            if i < skip:
                continue
            self.served = i + 1
            yield batch


class _Recorder(pl.Callback):
    def __init__(self):
        self.states: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        sd = pl_module.state_dict()
        self.states[trainer.global_step] = {
            k: v.clone() for k, v in sd.items() if "prune_mask" in k or "bn_list" in k or k.endswith("mask_epoch")
        }


def _fit(tmp_path, max_epochs=3, ckpt_path=None, callbacks=(), seed=0):
    pl.seed_everything(seed)
    model = SDCLR(
        num_classes=3,
        backbone="tiny",
        prune_ratio=0.7,
        proj_hidden_dim=16,
        proj_dim=8,
        optimizer=lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9),
    )
    rec = _Recorder()
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
        callbacks=[rec, *callbacks],
        enable_checkpointing=bool(callbacks),
    )
    trainer.fit(model, datamodule=_FixedViewsLT(), ckpt_path=ckpt_path)
    return model, trainer, rec


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """3 epochs x 3 steps, saving a checkpoint after step 4 (mid-epoch 1) and at every epoch end.

    The resumed runs must restart from checkpoints of this very run: a shorter first run would
    have a different learning-rate schedule (it depends on max_epochs)."""
    root = tmp_path_factory.mktemp("full")
    cbs = [
        pl.callbacks.ModelCheckpoint(dirpath=root / "steps", save_top_k=-1, every_n_train_steps=4),
        pl.callbacks.ModelCheckpoint(dirpath=root / "epochs", save_top_k=-1, every_n_epochs=1, save_on_train_epoch_end=True),
    ]
    model, trainer, rec = _fit(root, callbacks=cbs)
    return model, trainer, rec, root


def test_callback_added_once_and_masks_change_every_epoch(uninterrupted):
    model, trainer, rec, _ = uninterrupted
    assert sum(isinstance(c, MaskRepruning) for c in trainer.callbacks) == 1
    assert trainer.global_step == 9 and int(model.backbone.mask_epoch) == 2
    # masks are fixed within an epoch and recomputed at each epoch start
    keys = [k for k in rec.states[1] if "prune_mask" in k]
    for a, b in ((1, 2), (2, 3), (4, 5), (7, 9)):
        assert all(torch.equal(rec.states[a][k], rec.states[b][k]) for k in keys)
    for a, b in ((3, 4), (6, 7)):
        assert not all(torch.equal(rec.states[a][k], rec.states[b][k]) for k in keys)
    assert trainer.callback_metrics["prune/density"] == pytest.approx(0.3, abs=1e-3)
    assert any(k.startswith("prune/density/") for k in trainer.callback_metrics)
    # the model adds no second callback when one is configured
    model._trainer = trainer
    assert model.configure_callbacks() == []


@pytest.mark.parametrize("resume_step", [4, 3], ids=["mid_epoch", "epoch_end"])
def test_save_resume_compare(tmp_path, uninterrupted, resume_step):
    """Resume from the checkpoint at ``resume_step`` (4 = after the first batch of epoch 1,
    3 = end of epoch 0) and compare masks and both BN copies' buffers and parameters with the
    uninterrupted run at every later step. A mid-epoch resume must keep the epoch's mask."""
    _, _, full, root = uninterrupted
    folder = root / ("steps" if resume_step == 4 else "epochs")
    ckpts = sorted(folder.glob(f"*step={resume_step}.ckpt"))
    assert len(ckpts) == 1, list(folder.glob("*"))
    ck = torch.load(ckpts[0], weights_only=True)
    assert any(k.endswith("prune_mask") for k in ck["state_dict"]) and "backbone.mask_epoch" in ck["state_dict"]
    _, trainer, resumed = _fit(tmp_path, ckpt_path=str(ckpts[0]))
    assert trainer.global_step == 9
    assert sorted(resumed.states) == list(range(resume_step + 1, 10))
    for step, state in resumed.states.items():
        for k, v in state.items():
            torch.testing.assert_close(v, full.states[step][k], rtol=0, atol=1e-6, msg=f"step {step} {k}")


def test_mid_epoch_recompute_would_give_a_different_mask(uninterrupted):
    """Guards the resume test: re-pruning from the step-4 weights is not the epoch-1 mask."""
    model, _, rec, root = uninterrupted
    model = copy.deepcopy(model)
    ck = torch.load(next((root / "steps").glob("*step=4.ckpt")), weights_only=True)
    model.load_state_dict(ck["state_dict"])
    model.backbone.recompute_masks(1)
    keys = [k for k in rec.states[4] if "prune_mask" in k]
    sd = model.state_dict()
    assert not all(torch.equal(sd[k], rec.states[4][k]) for k in keys)


def test_checkpoint_backbone_is_dense_for_the_linear_probe(uninterrupted):
    """The probe stage loads the module from a checkpoint and uses ``model.backbone``."""
    model, _, _, root = uninterrupted
    ck = sorted((root / "epochs").glob("*step=9.ckpt"))[0]
    loaded = SDCLR.load_from_checkpoint(ck, map_location="cpu", weights_only=True).eval()
    assert loaded.backbone.ratio == 0.7 and int(loaded.backbone.mask_epoch) == 2
    x = torch.randn(4, 3, 8, 8)
    plain = copy.deepcopy(model).eval().backbone.to_dense()
    torch.testing.assert_close(loaded.backbone(x), plain(x), rtol=0, atol=1e-6)


# ----- configs --------------------------------------------------------------------------------


def _one_step(run_recipe, rel: str) -> SDCLR:
    cli = run_recipe(rel)  # the run that tests/test_cli.py checks too: every recipe runs once
    model = cli.model
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert isinstance(model, SDCLR) and int(model.backbone.mask_epoch) == 0
    assert mask_densities(model.backbone)["overall"] < 1 - model.backbone.ratio + 0.01
    assert sum(isinstance(c, MaskRepruning) for c in cli.trainer.callbacks) == 1
    return model


@pytest.mark.parametrize("name", ["cifar10_lt", "cifar100_lt"])
def test_cifar_config_runs_one_step(name, run_recipe):
    model = _one_step(run_recipe, f"experiments/{name}/sdclr.yaml")
    assert model.backbone.ratio == 0.9 and model.temperature == 0.2 and model.hparams.head_layers == 3


def test_imagenet100_config_runs_one_step(run_recipe):
    model = _one_step(run_recipe, "experiments/imagenet100_lt/sdclr.yaml")
    assert model.backbone.ratio == 0.3 and model.temperature == 0.3


def test_v010_checkpoint_with_the_method_level_mask_epoch_loads(uninterrupted, tmp_path):
    """ltcl_lightning 0.1.0 kept ``mask_epoch`` on the method; the backbone owns it now."""
    _, _, _, root = uninterrupted
    ck = torch.load(sorted((root / "epochs").glob("*step=9.ckpt"))[0], map_location="cpu", weights_only=True)
    ck["state_dict"]["mask_epoch"] = ck["state_dict"].pop("backbone.mask_epoch")
    torch.save(ck, tmp_path / "old.ckpt")
    loaded = SDCLR.load_from_checkpoint(tmp_path / "old.ckpt", map_location="cpu", weights_only=True)
    assert int(loaded.backbone.mask_epoch) == 2 and loaded.backbone.start_epoch(2) is None  # epoch 2's masks, kept
    # also outside Lightning's loading: before, load_pretrained (probe, export) refused the file
    # ("first mismatched keys: ['backbone.mask_epoch']"), since only on_load_checkpoint renamed
    from ltcl_lightning.methods.linear_probe import load_pretrained

    backbone = load_pretrained(str(tmp_path / "old.ckpt"))[0]
    assert int(backbone.mask_epoch) == 2 and torch.equal(backbone.state_dict()["mask_epoch"], loaded.backbone.mask_epoch)
    plain = SDCLR(**{k: v for k, v in loaded.hparams.items() if not k.startswith("_")})
    plain.load_state_dict(ck["state_dict"])  # a plain load_state_dict of the old names, strict
    assert int(plain.backbone.mask_epoch) == 2


def test_mask_repruning_refuses_a_method_without_a_pruned_backbone():
    from ltcl_lightning.callbacks.pruning import MaskRepruning
    from ltcl_lightning.methods.simclr import SimCLR

    with pytest.raises(TypeError, match="MaskRepruning needs a method with a PrunableNetwork"):
        MaskRepruning().setup(None, SimCLR(3, backbone="tiny"), "fit")
