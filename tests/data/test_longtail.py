"""Long-tail toolkit against the spec's exact count table and the published split files."""

import numpy as np
import pytest

from ltcl_lightning.data.longtail import class_counts_from_profile, load_index_file, select_longtail_indices
from ltcl_lightning.longtail import class_groups


@pytest.mark.parametrize(
    "c, n_max, imb, total, mx, mn, groups",
    [
        (10, 5000, 100, 12406, 5000, 50, (8, 2, 0)),
        (10, 5000, 50, 13996, 5000, 100, (9, 1, 0)),
        (10, 5000, 10, 20431, 5000, 500, (10, 0, 0)),
        (100, 500, 100, 10847, 500, 5, (35, 35, 30)),
        (100, 500, 50, 12608, 500, 10, (41, 41, 18)),
        (100, 500, 10, 19573, 500, 50, (69, 31, 0)),
    ],
)
def test_cifar_lt_count_table(c, n_max, imb, total, mx, mn, groups):
    counts = class_counts_from_profile(c, n_max, imb)
    assert sum(counts) == total and max(counts) == mx and min(counts) == mn
    g = class_groups(counts, "threshold")
    assert tuple(int((g == i).sum()) for i in range(3)) == groups


def test_exp_profile_of_published_subsets():
    # spec: the D_i subsets follow floor(450 * 0.01^(r/99)) (9,754) and floor(4500 * 0.01^(r/9)) (11,165)
    assert sum(class_counts_from_profile(100, 450, 100)) == 9754
    assert class_counts_from_profile(10, 4500, 100) == [4500, 2697, 1617, 969, 581, 348, 208, 125, 75, 45]


def test_step_profile_and_balanced():
    assert class_counts_from_profile(4, 100, 10, "step") == [100, 100, 10, 10]
    assert class_counts_from_profile(5, 7, 1) == [7] * 5


@pytest.mark.parametrize("bad", [0.5, 0, -3])
def test_imbalance_factor_below_one_is_an_error(bad):
    with pytest.raises(ValueError, match="imbalance_factor must be >= 1"):
        class_counts_from_profile(10, 100, bad)


def test_selection_matches_reference_construction_index_for_index(splits_dir):
    labels = np.load(splits_dir / "cifar100" / "train_labels.npy")
    counts = class_counts_from_profile(100, 500, 100)
    state = np.random.get_state()
    ours = select_longtail_indices(labels, counts, seed=0)
    assert all(a == b for a, b in zip(np.random.get_state()[1][:5], state[1][:5])), "global RNG must be untouched"
    # the LDAM-DRW construction, literally
    np.random.seed(0)
    ref = []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        ref.append(idx[:n])
    np.random.set_state(state)
    ref = np.concatenate(ref)
    assert len(ours) == 10847
    np.testing.assert_array_equal(ours, ref)
    np.testing.assert_array_equal(np.bincount(labels[ours]), counts)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_published_cifar100_subsets_follow_exp_profile(splits_dir, k):
    labels = np.load(splits_dir / "cifar100" / "train_labels.npy")
    idx = load_index_file(str(splits_dir / "cifar100" / f"split{k}_D_i.npy"), 50000)
    hist = np.bincount(labels[idx], minlength=100)
    assert sorted(hist.tolist(), reverse=True) == class_counts_from_profile(100, 450, 100)
    # thirds: 34 / 33 / 33 classes, holding 7,847 / 1,580 / 327 images (spec boosted_cl.md (f))
    g = class_groups(hist, "thirds")
    assert [int((g == i).sum()) for i in range(3)] == [34, 33, 33]
    assert [int(hist[(g == i).numpy()].sum()) for i in range(3)] == [7847, 1580, 327]


def test_published_cifar10_subset_histogram(splits_dir):
    labels = np.load(splits_dir / "cifar10" / "train_labels.npy")
    idx = load_index_file(str(splits_dir / "cifar10" / "split1_D_i.npy"), 50000)
    assert sorted(np.bincount(labels[idx]).tolist(), reverse=True) == [4500, 2697, 1617, 969, 581, 348, 208, 125, 75, 45]
    g = class_groups(np.bincount(labels[idx]), "thirds")
    assert [int((g == i).sum()) for i in range(3)] == [4, 3, 3]


def test_thirds_ties_broken_by_class_index():
    g = class_groups([5, 5, 5, 5, 5, 5], "thirds")
    assert g.tolist() == [2, 2, 1, 1, 0, 0]


def test_threshold_boundaries():
    g = class_groups([101, 100, 20, 19], "threshold")
    assert g.tolist() == [0, 1, 1, 2]


def test_index_file_validation(tmp_path):
    np.save(tmp_path / "2d.npy", np.zeros((2, 2), dtype=np.int64))
    np.save(tmp_path / "float.npy", np.zeros(3, dtype=np.float32))
    np.save(tmp_path / "range.npy", np.array([0, 5, 50000]))
    np.save(tmp_path / "dup.npy", np.array([1, 2, 2]))
    (tmp_path / "corrupt.npy").write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="1-D integer array"):
        load_index_file(str(tmp_path / "2d.npy"), 50000)
    with pytest.raises(ValueError, match="1-D integer array"):
        load_index_file(str(tmp_path / "float.npy"), 50000)
    with pytest.raises(ValueError, match=r"outside \[0, 50000\).*50000"):
        load_index_file(str(tmp_path / "range.npy"), 50000)
    with pytest.raises(ValueError, match="repeats 1 indices"):
        load_index_file(str(tmp_path / "dup.npy"), 50000)
    with pytest.raises(ValueError, match="could not be read"):
        load_index_file(str(tmp_path / "corrupt.npy"), 50000)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_index_file(str(tmp_path / "missing.npy"), 50000)
