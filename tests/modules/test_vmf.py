"""VMFEstimator against a float64 numpy computation of the official update (spec proco.md (a))."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ltcl_lightning.modules.vmf import VMFEstimator


class NumpyEstimator:
    """The official EstimatorCV pair in float64 numpy, written from the spec's formulas:
    a plain cumulative mean of every feature seen since the last reset."""

    def __init__(self, mean_old, mean_new):
        self.old = [mean_old.astype(np.float64), np.zeros(len(mean_old))]
        self.new = [mean_new.astype(np.float64), np.zeros(len(mean_new))]

    def swap(self, fresh_mean):
        self.old = self.new
        self.new = [fresh_mean.astype(np.float64), np.zeros(len(fresh_mean))]

    def update(self, z, y):
        for est in (self.old, self.new):
            mean, count = est
            for c in np.unique(y):
                feats = z[y == c]
                total = count[c] + len(feats)
                mean[c] = (mean[c] * count[c] + feats.sum(0)) / total
                count[c] = total


def _batch(rng, n, p, c):
    z = rng.standard_normal((n, p))
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return z.astype(np.float32), rng.integers(0, c, n)


def test_running_means_and_counts_match_numpy_across_an_epoch_boundary():
    c, p = 6, 5
    est = VMFEstimator(c, p, seed=3)
    ref = NumpyEstimator(est.mean_old.numpy(), est.mean_new.numpy())
    rng = np.random.default_rng(0)
    for epoch in range(3):
        new_before = est.mean_new.clone()
        assert est.start_epoch(epoch)
        ref.swap(est.mean_new.numpy())
        # old <- new exactly; the fresh "new" is random with norm 0.9 and count 0
        assert torch.equal(est.mean_old, new_before)
        np.testing.assert_allclose(est.mean_new.norm(dim=1).numpy(), 0.9, rtol=1e-6)
        assert float(est.count_new.sum()) == 0
        for _ in range(4):
            z, y = _batch(rng, 7, p, c)
            est.update(torch.from_numpy(z), torch.from_numpy(y))
            ref.update(z.astype(np.float64), y)
            for got, want in ((est.mean_old, ref.old[0]), (est.mean_new, ref.new[0])):
                np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(est.count_old.numpy(), ref.old[1])
            np.testing.assert_array_equal(est.count_new.numpy(), ref.new[1])
    # classes not seen since the reset keep the random initial mean (counts 0)
    assert float(est.count_old.sum()) == 2 * 4 * 7


def test_first_batch_of_a_class_replaces_the_random_init():
    est = VMFEstimator(3, 4, seed=0)
    est.start_epoch(0)
    z = F.normalize(torch.randn(2, 4), dim=1)
    est.update(z, torch.tensor([1, 1]))
    torch.testing.assert_close(est.mean_old[1], z.mean(0))
    torch.testing.assert_close(est.mean_new[1], z.mean(0))


def test_kappa_formula_and_clamps():
    p = 128
    est = VMFEstimator(5, p, seed=0)
    u = F.normalize(torch.randn(5, p), dim=1)
    r = torch.tensor([0.3, 0.5, 0.9, 1.0, 1.0 + 1e-6])
    est.mean_old.copy_(u * r[:, None])
    kappa = est.kappa()
    r32 = est.mean_old.norm(dim=1).double()
    for i in range(3):  # R = 0.3, 0.5, 0.9
        expected = p * float(r32[i]) / (1 - float(r32[i]) ** 2)
        assert float(kappa[i]) == pytest.approx(expected, rel=1e-5)
    assert float(kappa[2]) == pytest.approx(606.316, rel=1e-4)  # spec table: p 128, R 0.9
    # R >= 1 (rounded): kappa -> kappa_max, whether the formula gives +inf, a huge or a negative value
    assert float(kappa[3]) == 1e5 and float(kappa[4]) == 1e5
    # a single feature per class: R = ||z|| ~ 1 -> clamp, as the official code
    est2 = VMFEstimator(2, p, seed=0, kappa_max=5e4)
    est2.start_epoch(0)
    est2.update(F.normalize(torch.randn(1, p), dim=1), torch.tensor([0]))
    assert float(est2.kappa()[0]) == 5e4
    # untouched classes: R = 0.9 -> p * 90 / 19
    assert float(est2.kappa()[1]) == pytest.approx(p * 90 / 19, rel=1e-5)
    torch.testing.assert_close(est.mean_direction().norm(dim=1), torch.ones(5))


def test_initial_state_is_seeded_and_start_epoch_is_idempotent():
    a, b = VMFEstimator(4, 8, seed=7), VMFEstimator(4, 8, seed=7)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.mean_old, VMFEstimator(4, 8, seed=8).mean_old)
    assert a.start_epoch(0) and b.start_epoch(0)
    state = {k: v.clone() for k, v in a.state_dict().items()}
    assert not a.start_epoch(0)  # same epoch again: nothing changes
    for k, v in a.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert a.start_epoch(1) and b.start_epoch(1)
    assert torch.equal(a.mean_new, b.mean_new)  # the reset draws are seeded as well


def test_save_and_load_round_trip_with_weights_only():
    est = VMFEstimator(5, 6, seed=1)
    est.start_epoch(0)
    z, y = _batch(np.random.default_rng(1), 9, 6, 5)
    est.update(torch.from_numpy(z), torch.from_numpy(y))
    est.start_epoch(1)
    est.update(torch.from_numpy(z), torch.from_numpy(y))
    import io

    buf = io.BytesIO()
    torch.save(est.state_dict(), buf)
    buf.seek(0)
    other = VMFEstimator(5, 6, seed=99)
    other.load_state_dict(torch.load(buf, weights_only=True))
    for k, v in est.state_dict().items():
        assert torch.equal(v, other.state_dict()[k]), k
    # the restored window is not swapped again for the same epoch, and the next reset matches
    assert not other.start_epoch(1)
    est.start_epoch(2), other.start_epoch(2)
    assert torch.equal(est.mean_new, other.mean_new) and torch.equal(est.mean_old, other.mean_old)


def test_update_never_materialises_n_c_p(monkeypatch):
    # memory: per-class sums through index_add_ (O(N p)), checked by the size of every
    # tensor created inside update
    est = VMFEstimator(500, 64, seed=0)
    est.start_epoch(0)
    z, y = _batch(np.random.default_rng(2), 32, 64, 500)
    sizes = []
    from torch.overrides import TorchFunctionMode

    class Spy(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if torch.is_tensor(out):
                sizes.append(out.numel())
            return out

    with Spy():
        est.update(torch.from_numpy(z), torch.from_numpy(y))
    assert max(sizes) <= 500 * 64  # (C, p); (N, C, p) would be 32 x larger


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="dim"):
        VMFEstimator(3, 1)
    est = VMFEstimator(3, 4)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        est.update(torch.randn(2, 5), torch.tensor([0, 1]))
