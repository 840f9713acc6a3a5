"""Cosine temperature schedule (Kukleva et al. 2023): the official formula, the value every
training step of a real fit sees (SimCLR and SDCLR), and the same temperatures after a resume
at an epoch boundary and in the middle of an epoch."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
from lightning.pytorch.callbacks import ModelCheckpoint

from ltcl_lightning.callbacks.temperature import TemperatureSchedule, cosine_temperature
from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.methods import SDCLR, SimCLR, SupCon
from ltcl_lightning.methods.ce import CrossEntropy


def test_official_formula():
    # train_simCLR.py: tau = min + 0.5 (max - min) (1 + cos(pi epoch / t_max)), epoch from 1
    for e in (1, 37, 200, 301, 400, 1999):
        assert cosine_temperature(e, 0.1, 1.0, 200) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * e / 200)), abs=1e-15)
    ts = TemperatureSchedule(0.1, 1.0, 200)
    assert ts.temperature(0) == cosine_temperature(1, 0.1, 1.0, 200)  # Lightning epoch 0 = official epoch 1
    assert ts.temperature(199) == pytest.approx(0.1, abs=1e-15)  # official epoch 200: the minimum
    assert ts.temperature(399) == pytest.approx(1.0, abs=1e-15)  # period 2 t_max
    with pytest.raises(ValueError, match="tau_min"):
        TemperatureSchedule(0.5, 0.1)


class Spy(pl.Callback):
    """Records (global step, epoch, temperature the loss used) after every batch."""

    def __init__(self):
        self.seen: list[tuple[int, int, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append((trainer.global_step, trainer.current_epoch, pl_module.temperature))


def _fit(model, tmp_path, epochs, callbacks, ckpt_path=None):
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
    trainer.fit(model, DigitsLTDataModule(batch_size=16), ckpt_path=ckpt_path)
    return trainer


def _simclr():
    return SimCLR(10, backbone="tiny", proj_hidden_dim=16, proj_dim=8, temperature=0.2)


@pytest.mark.parametrize("make", [_simclr, lambda: SDCLR(10, backbone="tiny", proj_hidden_dim=16, proj_dim=8)])
def test_fit_uses_the_scheduled_temperature_and_resumes_exactly(make, tmp_path):
    pl.seed_everything(0)
    ts = TemperatureSchedule(0.1, 0.5, t_max=2)
    spy = Spy()
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=4, save_top_k=-1, filename="{step}")
    ckpt_ep = ModelCheckpoint(dirpath=tmp_path / "ep", every_n_epochs=1, save_top_k=-1, filename="{epoch}")
    _fit(make(), tmp_path / "a", 4, [ts, spy, ckpt, ckpt_ep])
    assert [e for _, e, _ in spy.seen] == [0] * 3 + [1] * 3 + [2] * 3 + [3] * 3
    for _, e, tau in spy.seen:
        assert tau == cosine_temperature(e + 1, 0.1, 0.5, 2)
    assert len({round(tau, 12) for _, _, tau in spy.seen}) == 3  # official epochs 1 and 3 share the value (period 4)
    for path in (tmp_path / "ck" / "step=4.ckpt", tmp_path / "ep" / "epoch=1.ckpt"):  # mid epoch 1, end of epoch 1
        spy2 = Spy()
        _fit(make(), tmp_path / path.stem, 4, [TemperatureSchedule(0.1, 0.5, t_max=2), spy2], ckpt_path=str(path))
        resumed_from = spy2.seen[0][0]
        assert resumed_from > 1
        assert spy2.seen == [s for s in spy.seen if s[0] >= resumed_from]


def test_loss_receives_the_scheduled_temperature(tmp_path, monkeypatch):
    import ltcl_lightning.methods.simclr as simclr

    used = []
    original = simclr.nt_xent_loss

    def spy(z1, z2, temperature, *args, **kwargs):
        used.append(temperature)
        return original(z1, z2, temperature, *args, **kwargs)

    monkeypatch.setattr(simclr, "nt_xent_loss", spy)
    _fit(_simclr(), tmp_path, 2, [TemperatureSchedule(0.1, 1.0, 200)])
    assert used == [cosine_temperature(1, 0.1, 1.0, 200)] * 3 + [cosine_temperature(2, 0.1, 1.0, 200)] * 3


def test_refuses_a_model_without_temperature(tmp_path):
    model = CrossEntropy(10, backbone="tiny")
    with pytest.raises(TypeError, match="no float attribute 'temperature'"):
        _fit(model, tmp_path, 1, [TemperatureSchedule()])


def test_supcon_is_scheduled_too(tmp_path):
    spy = Spy()
    _fit(SupCon(10, backbone="tiny", proj_hidden_dim=16, proj_dim=8), tmp_path, 1, [TemperatureSchedule(0.05, 0.2, 3), spy])
    assert all(tau == cosine_temperature(1, 0.05, 0.2, 3) for _, _, tau in spy.seen)
