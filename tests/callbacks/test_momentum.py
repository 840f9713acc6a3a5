"""BoostedCL momentum loss and weights (spec boosted_cl.md sections a, b) against an independent
numpy computation of the official rule, over several epochs of seeded per-sample losses: the
state module (modules/momentum.py) and its driver callback."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ltcl_lightning.callbacks.momentum import MomentumWeightUpdate
from ltcl_lightning.modules.momentum import MomentumLoss, momentum_weights

BETA = 0.97


def official_weights(m: np.ndarray) -> np.ndarray:
    """memoboosted_cifar100.calculate_momentum_weight: z-score (unbiased std), / max|z|, /2 + 1/2."""
    m = m.astype(np.float64)
    z = (m - m.mean()) / m.std(ddof=1)
    return z / np.abs(z).max() / 2 + 0.5


def official_epochs(losses: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """losses: (E, N) float32, loss of sample i in epoch e. Returns the memory and weights per epoch."""
    m = np.zeros(losses.shape[1], dtype=np.float32)
    mems, ws = [], []
    for e, l in enumerate(losses):
        if e == 0:
            m = l.copy()
        else:
            m = (np.float32(1 - BETA) * l + np.float32(BETA) * m).astype(np.float32)
        mems.append(m.copy())
        ws.append(official_weights(m))
    return mems, ws


class Module(torch.nn.Module):
    def __init__(self, n: int, beta: float = BETA):
        super().__init__()
        self.memory = MomentumLoss(n, beta)  # found by type, whatever its name


class Sink:
    def __init__(self):
        self.published: list[torch.Tensor] = []

    def set_sample_weights(self, w):
        self.published.append(w.clone())


def drive_epoch(cb, trainer, module, losses_e: np.ndarray, batch: int, rng, targets=None):
    n = len(losses_e)
    perm = torch.as_tensor(rng.permutation(n))
    for s in range(0, n, batch):
        idx = perm[s : s + batch]
        out = {"index": idx, "per_sample_loss": torch.as_tensor(losses_e)[idx], "loss": torch.tensor(0.0)}
        if targets is not None:
            out["target"] = torch.as_tensor(targets)[idx]
        cb.on_train_batch_end(trainer, module, out, None, s // batch)
    cb.on_train_epoch_end(trainer, module)


def test_callback_matches_numpy_over_epochs():
    n, epochs = 203, 5
    rng = np.random.default_rng(0)
    losses = rng.gamma(2.0, 2.0, size=(epochs, n)).astype(np.float32)
    targets = rng.integers(0, 10, n)
    mems, ws = official_epochs(losses)
    module, sink = Module(n), Sink()
    trainer = SimpleNamespace(current_epoch=0, datamodule=sink)
    cb = MomentumWeightUpdate()
    cb.setup(trainer, module, "fit")
    for e in range(epochs):
        trainer.current_epoch = e
        drive_epoch(cb, trainer, module, losses[e], batch=32, rng=rng, targets=targets)  # last batch: 11
        np.testing.assert_allclose(module.memory.loss.numpy(), mems[e], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(module.memory.weight.numpy(), ws[e], rtol=0, atol=1e-6)
        assert module.memory.weight.dtype == torch.float32
        assert torch.equal(sink.published[-1], module.memory.weight)
    assert (module.memory.last_epoch == epochs - 1).all()


def test_weight_properties():
    m = torch.tensor([1.0, 2.0, 3.0, 10.0])
    w = momentum_weights(m)
    assert float(w.mean()) == pytest.approx(0.5, abs=1e-7)
    assert float(w.max()) == 1.0 and float(w.min()) > 0  # only the most extreme sample reaches an end
    np.testing.assert_allclose(w.numpy(), official_weights(m.numpy()), atol=1e-7)
    # scale and shift invariant
    np.testing.assert_allclose(momentum_weights(3 * m + 7).numpy(), w.numpy(), atol=1e-6)


def test_all_equal_losses_give_one_half_not_nan():
    for m in (torch.zeros(7), torch.full((7,), 2.5), torch.ones(1)):
        w = momentum_weights(m)
        assert torch.equal(w, torch.full_like(m, 0.5))
    with np.errstate(invalid="ignore", divide="ignore"):
        assert np.isnan(official_weights(np.full(7, 2.5))).all()  # the reference would give NaN


def test_each_sample_updated_once_per_epoch_first_occurrence_wins():
    m = MomentumLoss(5, BETA)
    mem, last = m.loss, m.last_epoch
    # epoch 0: duplicates in one step and across steps (distributed-sampler padding)
    assert int(m.update(torch.tensor([0, 1, 1, 2]), torch.tensor([1.0, 2.0, 9.0, 3.0]), 0).sum()) == 3
    assert int(m.update(torch.tensor([3, 4, 0]), torch.tensor([4.0, 5.0, 9.0]), 0).sum()) == 2
    assert torch.equal(mem, torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    # epoch 1: EMA, again once
    m.update(torch.tensor([2, 2]), torch.tensor([13.0, 100.0]), 1)
    assert float(mem[2]) == pytest.approx((1 - BETA) * 13.0 + BETA * 3.0, rel=1e-6)
    assert torch.equal(last, torch.tensor([0, 0, 1, 0, 0]))
    # a sample first seen after epoch 0 stores its raw loss (no decay from 0)
    m2 = MomentumLoss(2, BETA)
    m2.update(torch.tensor([1]), torch.tensor([4.0]), 3)
    assert float(m2.loss[1]) == 4.0
    assert int(m2.update(torch.tensor([], dtype=torch.long), torch.tensor([]), 3).sum()) == 0


def test_start_epoch_brings_skipped_epoch_end_weights_up_to_date():
    """A resume from a checkpoint written at an epoch's last batch skips that epoch's end:
    start_epoch computes the weights from the memory then, and is idempotent."""
    m = MomentumLoss(4, BETA)
    assert torch.equal(m.start_epoch(0), torch.zeros(4)) and int(m.weight_epoch) == -1  # epoch 0: w = 0
    m.update(torch.arange(4), torch.tensor([1.0, 2.0, 3.0, 10.0]), 0)
    w = m.start_epoch(1)  # end of epoch 0 never ran
    assert torch.equal(w, momentum_weights(m.loss)) and int(m.weight_epoch) == 0
    m.update(torch.arange(2), torch.tensor([50.0, 0.0]), 1)  # mid-epoch 1: weights stay those of epoch 0
    assert torch.equal(m.start_epoch(1), w) and int(m.weight_epoch) == 0
    assert torch.equal(m.end_epoch(1), momentum_weights(m.loss)) and int(m.weight_epoch) == 1
    assert torch.equal(m.start_epoch(2), m.weight) and int(m.weight_epoch) == 1


def test_callback_errors_are_explicit():
    cb = MomentumWeightUpdate()
    with pytest.raises(TypeError, match="MomentumLoss"):
        cb.setup(SimpleNamespace(), torch.nn.Linear(2, 2), "fit")
    trainer = SimpleNamespace(current_epoch=0, datamodule=object(), train_dataloader=None)
    with pytest.raises(TypeError, match="set_sample_weights"):
        cb.on_train_start(trainer, Module(3))
    with pytest.raises(KeyError, match="per_sample_loss"):
        cb.on_train_batch_end(trainer, Module(3), {"loss": torch.tensor(0.0), "index": torch.tensor([0])}, None, 0)
    # an asynchronous device assert (no host sync per step): RuntimeError, raised at once on the CPU
    with pytest.raises(RuntimeError, match="outside the momentum buffer"):
        cb.on_train_batch_end(trainer, Module(3), {"index": torch.tensor([5]), "per_sample_loss": torch.tensor([1.0])}, None, 0)
    with pytest.raises(ValueError, match="beta"):
        MomentumLoss(3, 1.0)


def test_beta_lives_in_the_module():
    """One source for beta: the callback has none, the module's is used."""
    module, cb = Module(2, beta=0.9), MomentumWeightUpdate()
    trainer = SimpleNamespace(current_epoch=0, datamodule=Sink())
    for epoch, loss in enumerate((1.0, 3.0)):
        trainer.current_epoch = epoch
        cb.on_train_batch_end(trainer, module, {"index": torch.tensor([0]), "per_sample_loss": torch.tensor([loss])}, None, 0)
    assert float(module.memory.loss[0]) == pytest.approx(0.1 * 3.0 + 0.9 * 1.0, rel=1e-6)
