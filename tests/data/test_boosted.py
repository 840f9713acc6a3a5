"""Boosted augmentation (BoostedCL, spec boosted_cl.md section b): the per-item RandAugment
parameters are the spec's functions of the weight, w = 0 is plain SimCLR, the op table matches the
official value ranges, and loader workers see new weights (persistent workers included)."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader
from torchvision.transforms import InterpolationMode

from ltcl_lightning.data.base import IndexedDataset
from ltcl_lightning.data.boosted import (
    RANDAUG_OPS,
    BoostedCIFAR100LTDataModule,
    BoostedIndexedDataset,
    BoostedViews,
    ProbRandAugment,
    op_value,
)
from ltcl_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, simclr_augmentation


def _img(seed: int = 0, size: int = 32) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


class Recorder:
    """Replaces the op table: records (item, view, op name, value) and returns the image unchanged."""

    def __init__(self):
        self.calls: list[tuple[int, int, str, float]] = []
        self.item = self.view = 0

    def ops(self):
        def make(name):
            def op(img, v, sign, r):
                self.calls.append((self.item, self.view, name, v))
                return img

            return op

        return [(name, make(name), lo, hi) for name, _, lo, hi in RANDAUG_OPS]


def _run(views: BoostedViews, weights, rec: Recorder, n_views: int = 2):
    """Apply ``views`` to one image per weight, counting the ops each view drew (applied or not)."""
    drawn = []
    orig_call = views.randaug.__class__.__call__

    def counting(self, img, m, p):
        drawn.append((rec.item, rec.view, m, p))
        out = orig_call(self, img, m, p)
        rec.view += 1
        return out

    views.randaug.__class__.__call__ = counting
    views.base = views.finish = lambda x: x  # the parameters do not depend on the SimCLR stage; keep it fast
    try:
        img = _img()
        for i, w in enumerate(weights):
            rec.item, rec.view = i, 0
            views(img, w)
    finally:
        views.randaug.__class__.__call__ = orig_call
    return drawn


def test_op_table_matches_the_official_ranges():
    table = {name: (lo, hi) for name, _, lo, hi in RANDAUG_OPS}
    assert len(RANDAUG_OPS) == 15 and "Identity" not in table and "SamplePairing" not in table
    # spec table: value at m = 10 -> 30
    expect = {
        "ShearX": (0.2, 0.6),
        "ShearY": (0.2, 0.6),
        "TranslateX": (0.22, 0.66),
        "TranslateY": (0.22, 0.66),
        "Rotate": (20.0, 60.0),
        "Solarize": (110 / 3, 110.0),
        "Posterize": (4 + 4 / 3, 8.0),
        "Contrast": (0.7, 1.9),
        "Color": (0.7, 1.9),
        "Brightness": (0.7, 1.9),
        "Sharpness": (0.7, 1.9),
        "Cutout": (0.4 / 3, 0.4),
    }
    for name, (v10, v30) in expect.items():
        lo, hi = table[name]
        assert op_value(10, lo, hi) == pytest.approx(v10, abs=1e-12), name
        assert op_value(30, lo, hi) == pytest.approx(v30, abs=1e-12), name
    assert op_value(15, *table["Contrast"]) == pytest.approx(1.0)  # enhance ops: identity at m = 15


@pytest.mark.parametrize("w", [0.05, 0.3, 0.5, 0.77, 1.0])
def test_bcl_i_magnitude_probability_and_op_count(w):
    torch.manual_seed(0)
    views = BoostedViews(rand_k=1)
    rec = Recorder()
    views.randaug.ops = rec.ops()
    n_items = 600
    drawn = _run(views, [w] * n_items, rec)
    assert len(drawn) == 2 * n_items  # both views get the RandAugment stage
    assert all(m == pytest.approx(10 + 20 * w, abs=1e-12) and p == w for _, _, m, p in drawn)
    table = {name: (lo, hi) for name, _, lo, hi in RANDAUG_OPS}
    for _, _, name, v in rec.calls:
        assert v == pytest.approx(op_value(10 + 20 * w, *table[name]), abs=1e-12)
    # k = 1 op per view, applied with probability w: <= 1 op per view, frequency ~ w
    per_view = np.bincount([2 * i + j for i, j, _, _ in rec.calls], minlength=2 * n_items)
    assert per_view.max() <= 1
    rate = per_view.mean()
    assert abs(rate - w) < 4 * np.sqrt(w * (1 - w) / (2 * n_items)) + 1e-9, (rate, w)
    # ops are drawn uniformly from the 15 (with replacement)
    if w == 1.0:
        counts = np.unique([name for *_, name, _ in rec.calls], return_counts=True)[1]
        assert len(counts) == 15 and stats.chisquare(counts).pvalue > 1e-3


def test_bcl_d_magnitude_uses_one_uniform_per_item_shared_by_both_views():
    torch.manual_seed(1)
    views = BoostedViews(rand_k=2)
    rec = Recorder()
    views.randaug.ops = rec.ops()
    weights = np.linspace(0.1, 1.0, 400)
    drawn = _run(views, weights, rec)
    by_item: dict[int, list[float]] = {}
    for item, _, m, p in drawn:
        assert p == weights[item]
        by_item.setdefault(item, []).append(m)
    us = []
    for item, ms in by_item.items():
        assert len(ms) == 2 and ms[0] == ms[1]  # one u per item, both views
        u = (ms[0] - 5) / (25 * weights[item])
        assert 0 <= u < 1
        us.append(u)
    assert stats.kstest(us, "uniform").pvalue > 1e-3
    # w = 1 and p = 1: exactly k = 2 ops per view
    rec.calls.clear()
    _run(views, [1.0] * 50, rec)
    per_view = np.bincount([2 * i + j for i, j, _, _ in rec.calls], minlength=100)
    assert (per_view == 2).all()


def test_bcl_d_magnitude_function():
    views = BoostedViews(rand_k=2)
    for w, u in [(0.0, 0.3), (0.5, 0.5), (1.0, 0.999), (0.2, 0.0)]:
        assert views.magnitude(w, u) == pytest.approx(5 + 25 * w * u)
    assert BoostedViews(rand_k=1).magnitude(0.25) == pytest.approx(15.0)


def test_weight_zero_is_exactly_the_simclr_augmentation():
    img = _img(3)
    plain = simclr_augmentation(32, IMAGENET_MEAN, IMAGENET_STD, scale=(0.1, 1.0), interpolation=InterpolationMode.BICUBIC)
    for k in (1, 2):
        torch.manual_seed(5)
        boosted = BoostedViews(rand_k=k)(img, 0.0)
        torch.manual_seed(5)
        ref = [plain(img), plain(img)]
        for a, b in zip(boosted, ref):
            assert a.shape == (3, 32, 32)
            assert torch.equal(a, b)


def test_weight_one_changes_views_and_rejects_bad_weights():
    img = _img(4)
    torch.manual_seed(0)
    a = BoostedViews(rand_k=2)(img, 0.0)
    torch.manual_seed(0)
    b = BoostedViews(rand_k=2)(img, 1.0)
    assert not torch.equal(a[0], b[0])
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="sample weight"):
            BoostedViews()(img, bad)
    with pytest.raises(ValueError, match="rand_k"):
        BoostedViews(rand_k=0)


def test_ops_do_what_their_names_say():
    img = _img(7)
    arr = np.asarray(img).astype(int)
    ops = {name: op for name, op, _, _ in RANDAUG_OPS}
    assert (np.asarray(ops["Invert"](img, 0, 1, (0, 0))) == 255 - arr).all()
    sol = np.asarray(ops["Solarize"](img, 100.0, 1, (0, 0))).astype(int)
    assert (sol == np.where(arr >= 100, 255 - arr, arr)).all()
    post = np.asarray(ops["Posterize"](img, 5.9, 1, (0, 0))).astype(int)  # int(5.9) = 5 bits
    assert (post == (arr & 0b11111000)).all()
    cut = np.asarray(ops["Cutout"](img, 0.25, 1, (0.5, 0.5)))  # 8 px square centred at (16, 16)
    assert (cut[12:20, 12:20] == np.array([125, 123, 114])).all()
    assert (cut[:11] == np.asarray(img)[:11]).all()
    # geometric ops: the sign is random (both directions happen)
    torch.manual_seed(0)
    ra = ProbRandAugment(1, [("ShearX", lambda im, v, s, r: s, 0.0, 0.6)])
    signs = {ra(img, 30, 1.0) for _ in range(50)}
    assert signs == {1.0, -1.0}


class _WeightProbe:
    """Transform stub: each view is the weight the worker saw."""

    def __call__(self, img, w):
        return [torch.tensor([w]), torch.tensor([w])]


def _tiny_boosted(n: int) -> BoostedIndexedDataset:
    base = [(_img(0, 8), 0)] * n
    return BoostedIndexedDataset.from_indexed(IndexedDataset(base, np.zeros(n, dtype=np.int64), _WeightProbe()))


@pytest.mark.parametrize("persistent", [True, False])
def test_workers_see_new_weights_next_epoch(persistent):
    n = 12
    ds = _tiny_boosted(n)
    loader = DataLoader(ds, batch_size=4, shuffle=True, num_workers=1, persistent_workers=persistent)
    seen = torch.full((n,), -1.0)
    for index, views, _ in loader:
        seen[index] = views[0][:, 0]
    assert torch.equal(seen, torch.zeros(n))  # epoch 1: w = 0
    for epoch in range(2):
        new = torch.rand(n)
        ds.set_sample_weights(new)  # what MomentumWeightUpdate does at the end of an epoch
        for index, views, _ in loader:
            seen[index] = views[0][:, 0]
            assert torch.equal(views[0], views[1])
        assert torch.equal(seen, new), f"workers did not see the weights of epoch {epoch + 1}"


def test_set_sample_weights_validates():
    ds = _tiny_boosted(5)
    with pytest.raises(ValueError, match="5 samples"):
        ds.set_sample_weights(torch.zeros(6))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ds.set_sample_weights(torch.full((5,), float("nan")))
    assert ds.sample_weights.is_shared()


def test_boosted_datamodule_on_cifar100(cifar100_dir, splits_dir):
    dm = BoostedCIFAR100LTDataModule(
        data_dir=str(cifar100_dir), split_file=str(splits_dir / "cifar100" / "split1_D_i.npy"), rand_k=2, batch_size=4, num_workers=0
    )
    dm.setup("fit")
    train = dm.datasets["train"]
    assert isinstance(train, BoostedIndexedDataset) and len(train) == 9754
    assert isinstance(train.transform, BoostedViews) and train.transform.rand_k == 2
    labels = np.load(splits_dir / "cifar100" / "train_labels.npy")
    idx = np.load(splits_dir / "cifar100" / "split1_D_i.npy")
    assert (train.targets == labels[idx]).all()
    dm.set_sample_weights(torch.linspace(0, 1, 9754))
    i, views, y = train[9753]
    assert i == 9753 and len(views) == 2 and views[0].shape == (3, 32, 32) and y == labels[idx[9753]]
    assert train.weight(9753) == 1.0
    assert not isinstance(dm.datasets["val"], BoostedIndexedDataset)
    with pytest.raises(ValueError, match="train_views"):
        BoostedCIFAR100LTDataModule(data_dir=str(cifar100_dir), train_views=["crop_flip", "crop_flip"])
    with pytest.raises(ValueError, match="rand_strength"):
        BoostedCIFAR100LTDataModule(data_dir=str(cifar100_dir), rand_strength=40)


def test_each_worker_draws_its_own_random_stream():
    """Identical images at w = 1 served by two workers: no two items may get the same views (a
    generator created once and copied into every worker would repeat worker 0's stream)."""
    n = 8
    img = _img(9)
    base = [(img, 0)] * n
    ds = BoostedIndexedDataset.from_indexed(IndexedDataset(base, np.zeros(n, dtype=np.int64), BoostedViews(rand_k=2)))
    ds.set_sample_weights(torch.ones(n))
    torch.manual_seed(0)
    views = [v[0] for _, v, _ in DataLoader(ds, batch_size=1, num_workers=2)]  # items alternate workers
    flat = torch.stack(views).flatten(1)
    assert len(torch.unique(flat, dim=0)) == n


# ----- the batched (device) backend ---------------------------------------------------------------
from ltcl_lightning.data.augment import SimCLRAugment  # noqa: E402
from ltcl_lightning.data.boosted import boosted_op, draw_boosted_ops  # noqa: E402


def _batch(n: int = 6):
    imgs = [_img(s) for s in range(n)]
    x = torch.stack([torch.from_numpy(np.array(i)).permute(2, 0, 1) for i in imgs]).float()
    return imgs, x


@pytest.mark.parametrize("k", range(len(RANDAUG_OPS)))
def test_each_batched_op_equals_the_pil_op(k):
    """For fixed parameters each of the 15 ops equals its PIL version bit for bit."""
    imgs, x = _batch()
    name, op, lo, hi = RANDAUG_OPS[k]
    v = torch.tensor([op_value(m, lo, hi) for m in (5.0, 10.0, 17.5, 22.0, 29.0, 30.0)], dtype=torch.float64)
    sign = torch.tensor([1.0, -1.0, 1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    rx = torch.tensor([0.1, 0.5, 0.93, 0.0, 0.31, 0.77], dtype=torch.float64)
    ry = torch.tensor([0.6, 0.05, 0.42, 0.99, 0.5, 0.2], dtype=torch.float64)
    got = boosted_op(x, torch.full((6,), k), v, sign, rx, ry, {})
    ref = torch.stack(
        [
            torch.from_numpy(np.array(op(img, float(v[i]), float(sign[i]), (float(rx[i]), float(ry[i]))))).permute(2, 0, 1).float()
            for i, img in enumerate(imgs)
        ]
    )
    assert torch.equal(got, ref), name


def test_batched_w0_is_exactly_the_simclr_recipe():
    _, x = _batch(8)
    views = BoostedViews(32, rand_k=2)
    got = views.batched(x, torch.zeros(8), torch.Generator().manual_seed(5), 32)
    g = torch.Generator().manual_seed(5)
    base = SimCLRAugment(scale=(0.1, 1.0), interpolation="bicubic")
    ref = [base.batched(x, g, 32), base.batched(x, g, 32)]
    assert all(torch.equal(a, b) for a, b in zip(got, ref))


@pytest.mark.parametrize("rand_k", [1, 2])
@pytest.mark.parametrize("w", [0.0, 0.5, 1.0])
def test_batched_op_frequencies_and_magnitudes(rand_k, w):
    n = 6000
    views = BoostedViews(32, rand_k=rand_k)
    weights = torch.full((n,), w, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    u = torch.rand(n, dtype=torch.float64)
    m = 5.0 + 25.0 * weights * u if views.diverse else 10.0 + 20.0 * weights
    draws = draw_boosted_ops(n, m, weights, rand_k, g, {})
    assert len(draws) == rand_k
    for d in draws:
        applied = d["apply"].double().mean()
        assert abs(float(applied) - w) < 0.02  # each drawn op applied with probability p = w
        freq = torch.bincount(d["k"], minlength=15).double() / n
        assert stats.chisquare(freq.numpy() * n).pvalue > 1e-3  # uniform over the 15 ops
        lo = torch.tensor([r[2] for r in RANDAUG_OPS], dtype=torch.float64)[d["k"]]
        hi = torch.tensor([r[3] for r in RANDAUG_OPS], dtype=torch.float64)[d["k"]]
        assert torch.allclose(d["value"], m / 30.0 * (hi - lo) + lo)
    if w == 0.0:
        assert not any(d["apply"].any() for d in draws)


def test_batched_views_read_each_samples_weight():
    _, x = _batch(6)
    views = BoostedViews(32, rand_k=1)
    w = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    got = views.batched(x, w, g1, 32)
    base = views.batched(x, torch.zeros(6), g2, 32)
    for v_got, v_base in zip(got, base):
        assert torch.equal(v_got[0::2], v_base[0::2])  # w = 0: untouched
        assert not torch.equal(v_got[1::2], v_base[1::2])  # w = 1: one op, always applied


def test_device_resident_boosted_datamodule_uses_published_weights(cifar10_dir, splits_dir):
    from ltcl_lightning.data.boosted import BoostedCIFAR10LTDataModule

    split = str(splits_dir / "cifar10" / "split1_D_i.npy")
    dm = BoostedCIFAR10LTDataModule(
        data_dir=str(cifar10_dir), split_file=split, batch_size=16, num_workers=0, device_resident=True, rand_k=1
    )
    dm.setup("fit")
    n = len(dm.datasets["train"])
    dm.set_sample_weights(torch.linspace(0, 1, n))
    assert torch.equal(dm.weights_on(torch.device("cpu")), torch.linspace(0, 1, n))
    index, views, target = dm.on_after_batch_transfer(next(iter(dm.train_dataloader())), 0)
    assert len(views) == 2 and views[0].shape == (16, 3, 32, 32)
    assert torch.equal(target, torch.as_tensor(dm.datasets["train"].targets)[index])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        dm.set_sample_weights(torch.full((n,), 2.0))
