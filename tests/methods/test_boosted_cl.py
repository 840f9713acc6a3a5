"""BoostedCL (BCL-I) and BoostedSDCLR (BCL-D): the tracked per-sample loss, both configs for one
step, the state after save -> resume (epoch boundary and mid-epoch) against a replay of the
recorded per-sample losses, and weights reaching persistent loader workers inside a real fit."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import SMALL_COUNTS
from lightning.pytorch.callbacks import ModelCheckpoint

from ltcl_lightning.data.boosted import BoostedCIFAR10LTDataModule
from ltcl_lightning.data.cifar import CIFAR10LTDataModule
from ltcl_lightning.losses.contrastive import nt_xent_loss
from ltcl_lightning.methods.boosted_cl import BoostedCL, BoostedSDCLR
from ltcl_lightning.modules.momentum import momentum_weights

REPO = Path(__file__).resolve().parents[2]
BETA = 0.97
COUNTS = SMALL_COUNTS  # 40 training images, 3 steps of 16 / 16 / 8 (the conftest's small_split)


def _dm(cifar10_dir, split, **kw) -> BoostedCIFAR10LTDataModule:
    args = dict(data_dir=str(cifar10_dir), split_file=split, batch_size=16, num_workers=0, rand_k=1)
    return BoostedCIFAR10LTDataModule(**{**args, **kw})


def _model(**kw) -> BoostedCL:
    args = dict(num_classes=10, backbone="tiny", class_counts=COUNTS, proj_hidden_dim=32, proj_dim=16)
    return BoostedCL(**{**args, **kw})


def _trainer(root, max_epochs, callbacks=(), **kw) -> pl.Trainer:
    return pl.Trainer(
        max_epochs=max_epochs,
        accelerator="cpu",
        devices=1,
        default_root_dir=str(root),
        limit_val_batches=0,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=False,
        callbacks=list(callbacks),
        num_sanity_val_steps=0,
        **kw,
    )


class Record(pl.Callback):
    """Every step's (epoch, index, per_sample_loss); the state the module had at on_train_start."""

    def __init__(self):
        self.steps, self.start = [], None

    def on_train_start(self, trainer, pl_module):
        self.start = {k: v.clone() for k, v in pl_module.momentum.state_dict(prefix="momentum.").items()}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if "published" not in self.start:  # after every callback's on_train_start
            self.start["published"] = trainer.datamodule.datasets["train"].sample_weights.clone()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.steps.append((trainer.current_epoch, outputs["index"].clone(), outputs["per_sample_loss"].clone()))


def replay(mem: np.ndarray, last: np.ndarray, steps) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loop of the momentum rule (once per sample per epoch; first update raw)."""
    mem, last = mem.astype(np.float32).copy(), last.copy()
    for epoch, idx, loss in steps:
        for i, l in zip(idx.tolist(), loss.numpy()):
            if last[i] == epoch:
                continue
            mem[i] = l if last[i] < 0 else np.float32(1 - BETA) * l + np.float32(BETA) * mem[i]
            last[i] = epoch
    return mem, last


def test_per_sample_loss_is_the_tracked_nt_xent():
    torch.manual_seed(0)
    model = _model()
    views = [torch.rand(6, 3, 32, 32), torch.rand(6, 3, 32, 32)]
    out = model.training_loss(torch.arange(6), views, torch.zeros(6, dtype=torch.long))
    h = model.backbone(torch.cat(views))
    z = F.normalize(model.projector(h), dim=1)
    ref = nt_xent_loss(z[:6].double(), z[6:].double(), 0.2, reduction="none")
    torch.testing.assert_close(out["per_sample_loss"].double(), ref, rtol=1e-5, atol=1e-6)
    assert not out["per_sample_loss"].requires_grad
    torch.testing.assert_close(out["loss"], out["per_sample_loss"].mean())
    assert model.momentum.loss.shape == (40,) and model.momentum.weight.dtype == torch.float32
    with pytest.raises(ValueError, match="class_counts"):
        BoostedCL(num_classes=10, backbone="tiny")


def test_bcl_d_tracks_the_dense_view1_vs_pruned_view2_loss():
    torch.manual_seed(0)
    model = BoostedSDCLR(num_classes=10, backbone="tiny", class_counts=COUNTS, proj_hidden_dim=32, proj_dim=16)
    model.backbone.recompute_masks(0)
    views = [torch.rand(6, 3, 32, 32), torch.rand(6, 3, 32, 32)]
    out = model.training_loss(torch.arange(6), views, torch.zeros(6, dtype=torch.long))
    z1 = F.normalize(model.projector(model.backbone(views[0])), dim=1)
    z2 = F.normalize(model.projector(model.backbone(views[1], pruned=True), pruned=True), dim=1)
    ref = nt_xent_loss(z1.double(), z2.double(), 0.2, reduction="none")
    torch.testing.assert_close(out["per_sample_loss"].double(), ref, rtol=1e-5, atol=1e-6)
    z2_dense = F.normalize(model.projector(model.backbone(views[1])), dim=1)
    assert not torch.allclose(ref, nt_xent_loss(z1.double(), z2_dense.double(), 0.2, reduction="none"))
    assert model.momentum.loss.shape == (40,)
    assert model.hparams.head_layers == 2  # the BoostedCL repository's SDCLR head


@pytest.mark.parametrize("variant", ["i", "d"])
def test_config_runs_one_step(variant, splits_dir, run_recipe):
    cli = run_recipe(f"experiments/cifar100_lt/boosted_cl_{variant}.yaml")  # the run tests/test_cli.py checks too
    model, dm = cli.model, cli.datamodule
    assert type(model) is (BoostedCL if variant == "i" else BoostedSDCLR)
    assert dm.rand_k == (1 if variant == "i" else 2)
    updated = torch.nonzero(model.momentum.last_epoch >= 0).flatten()
    assert len(updated) == 8 and (model.momentum.loss[updated] > 0).all()
    labels = np.load(splits_dir / "cifar100" / "train_labels.npy")[np.load(splits_dir / "cifar100" / "split1_D_i.npy")]
    assert (model.report_state()["sample_weight"].target.numpy() == labels).all()  # taken at setup from the data
    assert torch.equal(dm.datasets["train"].sample_weights, model.momentum.weight)  # published at epoch end
    state = model.report_state()
    assert state["sample_weight"].values.shape == (9754,) and state["sample_weight"].target.shape == (9754,)
    if variant == "d":
        assert "mask_density" in state


def test_resume_at_epoch_boundary_and_mid_epoch(cifar10_dir, small_split, tmp_path):
    pl.seed_everything(0)
    rec = Record()
    ckpt_epoch = ModelCheckpoint(dirpath=tmp_path / "ep", every_n_epochs=1, save_top_k=-1, filename="{epoch}")
    ckpt_step = ModelCheckpoint(dirpath=tmp_path / "st", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    model = _model()
    _trainer(tmp_path, 2, [rec, ckpt_epoch, ckpt_step]).fit(model, _dm(cifar10_dir, small_split))
    assert [s[0] for s in rec.steps] == [0, 0, 0, 1, 1, 1]
    mem, last = replay(np.zeros(40), np.full(40, -1), rec.steps)
    np.testing.assert_allclose(model.momentum.loss.numpy(), mem, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model.momentum.weight, momentum_weights(torch.from_numpy(mem)), rtol=0, atol=1e-6)

    # --- resume at the boundary (after epoch 0) and run epoch 1 again
    path = tmp_path / "ep" / "epoch=0.ckpt"
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert (saved["momentum.weight"] > 0).any() and (saved["momentum.last_epoch"] == 0).all()
    rec2, model2 = Record(), _model()
    _trainer(tmp_path / "r1", 2, [rec2]).fit(model2, _dm(cifar10_dir, small_split), ckpt_path=str(path))
    for k in ("momentum.loss", "momentum.last_epoch", "momentum.weight"):
        assert torch.equal(rec2.start[k], saved[k]), k
    assert torch.equal(rec2.start["published"], saved["momentum.weight"])  # the workers augment with it
    assert [s[0] for s in rec2.steps] == [1, 1, 1]
    mem2, _ = replay(saved["momentum.loss"].numpy(), saved["momentum.last_epoch"].numpy(), rec2.steps)
    np.testing.assert_allclose(model2.momentum.loss.numpy(), mem2, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(model2.momentum.weight, momentum_weights(torch.from_numpy(mem2)), rtol=0, atol=1e-6)

    # --- resume in the middle of epoch 1 (after its first step)
    path = tmp_path / "st" / "step=4.ckpt"
    saved = torch.load(path, weights_only=True)["state_dict"]
    assert int((saved["momentum.last_epoch"] == 1).sum()) == 16  # one step of epoch 1 already in the memory
    rec3, model3 = Record(), _model()
    _trainer(tmp_path / "r2", 2, [rec3]).fit(model3, _dm(cifar10_dir, small_split), ckpt_path=str(path))
    # the weights in use are the checkpointed ones (end of epoch 0), not recomputed from the partial memory
    assert torch.equal(rec3.start["momentum.weight"], saved["momentum.weight"])
    assert torch.equal(rec3.start["published"], saved["momentum.weight"])
    assert not torch.allclose(saved["momentum.weight"], momentum_weights(saved["momentum.loss"]))
    assert rec3.steps and all(s[0] == 1 for s in rec3.steps)
    mem3, last3 = replay(saved["momentum.loss"].numpy(), saved["momentum.last_epoch"].numpy(), rec3.steps)
    np.testing.assert_allclose(model3.momentum.loss.numpy(), mem3, rtol=1e-6, atol=1e-7)
    assert (model3.momentum.last_epoch.numpy() == last3).all()
    torch.testing.assert_close(model3.momentum.weight, momentum_weights(torch.from_numpy(mem3)), rtol=0, atol=1e-6)


class _WeightAsImage:
    """Transform stub: both views are constant images whose value is the weight the worker saw."""

    def __call__(self, img, w):
        return [torch.full((3, 32, 32), float(w)), torch.full((3, 32, 32), float(w))]


class _CheckWorkersSeeWeights(pl.Callback):
    def __init__(self):
        self.checked = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        index, views, _ = batch
        expected = pl_module.momentum.weight[index]
        if trainer.current_epoch >= 1:
            assert float(expected.std()) > 0  # real, non-trivial weights from epoch 0
        assert torch.equal(views[0][:, 0, 0, 0], expected), f"epoch {trainer.current_epoch}: workers used stale weights"
        self.checked += 1


def test_persistent_workers_get_the_weights_in_a_real_fit(cifar10_dir, small_split, tmp_path):
    pl.seed_everything(0)
    dm = _dm(cifar10_dir, small_split, num_workers=1, persistent_workers=True)
    dm.setup("fit")
    dm.datasets["train"].transform = _WeightAsImage()
    check = _CheckWorkersSeeWeights()
    _trainer(tmp_path, 3, [check]).fit(_model(), dm)
    assert check.checked == 9


def test_plain_datamodule_is_refused(cifar10_dir, small_split, tmp_path):
    dm = CIFAR10LTDataModule(data_dir=str(cifar10_dir), split_file=small_split, batch_size=16, num_workers=0)
    with pytest.raises(TypeError, match="set_sample_weights"):
        _trainer(tmp_path, 1).fit(_model(), dm)
    with pytest.raises(ValueError, match="training set has 40"):
        _trainer(tmp_path, 1).fit(_model(num_samples=41, class_counts=None), _dm(cifar10_dir, small_split))


def _v010_checkpoint(model, path, weight):
    """A checkpoint as ltcl_lightning 0.1.0 wrote it: the state in the method's own buffers."""
    import lightning

    sd = dict(model.state_dict())
    for new in ("momentum.loss", "momentum.last_epoch", "momentum.weight", "momentum.weight_epoch"):
        sd.pop(new)
    sd.update(
        momentum_loss=model.momentum.loss.clone(),
        momentum_epoch=model.momentum.last_epoch.clone(),
        sample_weight=weight,
        sample_target=torch.zeros(40, dtype=torch.long),
    )
    torch.save({"state_dict": sd, "hyper_parameters": dict(model.hparams), "pytorch-lightning_version": lightning.__version__}, path)
    return path


def test_v010_checkpoint_with_the_old_buffer_names_loads(tmp_path):
    """Old keys are renamed; the epoch of the weights it holds is inferred (epoch end: from the
    memory; mid-epoch / last batch: the epoch before; all zero: none), so start_epoch then
    trains with the right weights."""
    model = _model()
    model.momentum.update(torch.arange(40), torch.linspace(1, 3, 40), 0)
    model.momentum.update(torch.arange(16), torch.linspace(5, 2, 16), 1)  # epoch 1 under way
    mem = model.momentum.loss.clone()
    old_w = momentum_weights(torch.linspace(1, 3, 40))  # end of epoch 0
    cases = {"epoch end": (momentum_weights(mem), 1), "mid-epoch": (old_w, 0), "none yet": (torch.zeros(40), -1)}
    for name, (w, weight_epoch) in cases.items():
        loaded = BoostedCL.load_from_checkpoint(_v010_checkpoint(model, tmp_path / f"{name}.ckpt", w))
        assert torch.equal(loaded.momentum.loss, mem) and torch.equal(loaded.momentum.last_epoch, model.momentum.last_epoch)
        assert torch.equal(loaded.momentum.weight, w) and int(loaded.momentum.weight_epoch) == weight_epoch, name
    # a last-batch checkpoint of epoch 1 resumed in epoch 2: the skipped end of epoch 1 is made up for
    loaded = BoostedCL.load_from_checkpoint(tmp_path / "mid-epoch.ckpt")
    assert torch.equal(loaded.momentum.start_epoch(2), momentum_weights(mem))
