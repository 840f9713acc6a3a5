"""BalancedCL's balanced supervised contrastive loss against independent computations."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from ltcl_lightning.losses.balanced import balanced_contrastive_loss
from ltcl_lightning.losses.contrastive import supcon_loss


def loop_reference(views, labels, prototypes, temperature):
    """The spec's formula with explicit Python loops in float64 (no tensors, no vectorisation)."""
    feats, ys, is_anchor = [], [], []
    for v in views:
        for i, row in enumerate(v.tolist()):
            feats.append(row)
            ys.append(int(labels[i]))
            is_anchor.append(True)
    if prototypes is not None:
        for k, row in enumerate(prototypes.tolist()):
            feats.append(row)
            ys.append(k)
            is_anchor.append(False)
    n = {}
    for y in ys:
        n[y] = n.get(y, 0) + 1
    losses = []
    for a in range(len(feats)):
        if not is_anchor[a]:
            continue
        s = {b: sum(x * y for x, y in zip(feats[a], feats[b])) / temperature for b in range(len(feats)) if b != a}
        denominator = 0.0
        for b, s_ab in s.items():
            w = n[ys[b]] - 1 if ys[b] == ys[a] else n[ys[b]]
            denominator += math.exp(s_ab) / w
        positives = [b for b in s if ys[b] == ys[a]]
        losses.append(-sum(s[p] - math.log(denominator) for p in positives) / len(positives))
    return sum(losses) / len(losses)


def unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def test_spec_case_three_samples_two_classes_matches_loop_reference():
    # labels 0, 0, 1; two views; two prototypes: n_0 = 4 + 1 = 5, n_1 = 2 + 1 = 3
    z1, z2, protos = unit(3, 4, seed=1), unit(3, 4, seed=2), unit(2, 4, seed=3)
    labels = torch.tensor([0, 0, 1])
    for t in (0.07, 0.5):
        got = balanced_contrastive_loss([z1, z2], labels, protos, temperature=t)
        assert got.dtype == torch.float64
        assert got.item() == pytest.approx(loop_reference([z1, z2], labels, protos, t), rel=1e-12)


def test_larger_imbalanced_batch_matches_loop_reference():
    labels = torch.tensor([0, 0, 0, 0, 2, 2, 3, 0, 2, 4])  # class 1 absent: only its prototype
    z1, z2, protos = unit(10, 6, seed=4), unit(10, 6, seed=5), unit(5, 6, seed=6)
    got = balanced_contrastive_loss([z1, z2], labels, protos, temperature=0.1)
    assert got.item() == pytest.approx(loop_reference([z1, z2], labels, protos, 0.1), rel=1e-12)
    # without prototypes and with three views the same formula holds
    z3 = unit(10, 6, seed=7)
    got = balanced_contrastive_loss([z1, z2, z3], labels, None, temperature=0.2)
    assert got.item() == pytest.approx(loop_reference([z1, z2, z3], labels, None, 0.2), rel=1e-12)


def test_per_sample_reduction_averages_to_the_mean():
    labels = torch.tensor([0, 1, 1, 2, 2, 2])
    z1, z2, protos = unit(6, 5, seed=8), unit(6, 5, seed=9), unit(3, 5, seed=10)
    per = balanced_contrastive_loss([z1, z2], labels, protos, 0.1, reduction="none")
    assert per.shape == (6,)
    assert per.mean().item() == pytest.approx(balanced_contrastive_loss([z1, z2], labels, protos, 0.1).item(), rel=1e-12)


def test_identical_embeddings_give_log_of_classes_present_whatever_the_imbalance():
    # s_ab = 1/T for all pairs, so each class contributes exp(1/T) * n/n to D_a ("class-averaging")
    # and the loss is log(number of classes among the items), independent of the class counts;
    # SupCon instead gives log(N - 1) - mean log|P(a)| which depends on the counts.
    z = F.normalize(torch.ones(7, 3, dtype=torch.float64), dim=1)
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 2])
    protos = F.normalize(torch.ones(4, 3, dtype=torch.float64), dim=1)  # class 3: prototype only
    got = balanced_contrastive_loss([z, z], labels, protos, temperature=0.07)
    assert got.item() == pytest.approx(math.log(4), rel=1e-12)
    got = balanced_contrastive_loss([z, z], labels, None, temperature=0.07)
    assert got.item() == pytest.approx(math.log(3), rel=1e-12)


def test_invariant_to_batch_permutation():
    labels = torch.tensor([3, 0, 0, 1, 3, 3, 2, 0])
    z1, z2, protos = unit(8, 5, seed=11), unit(8, 5, seed=12), unit(4, 5, seed=13)
    ref = balanced_contrastive_loss([z1, z2], labels, protos, 0.07, reduction="none")
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    got = balanced_contrastive_loss([z1[perm], z2[perm]], labels[perm], protos, 0.07, reduction="none")
    torch.testing.assert_close(got, ref[perm], rtol=1e-12, atol=1e-12)
    # swapping the two views changes nothing either
    swapped = balanced_contrastive_loss([z2, z1], labels, protos, 0.07, reduction="none")
    torch.testing.assert_close(swapped, ref, rtol=1e-12, atol=1e-12)


def test_one_sample_per_class_without_prototypes_vs_supcon():
    """Every class exactly once per view, no prototypes: n_k = 2 for every class, so the positive
    (the other view) keeps weight 1 = n - 1 as in SupCon, while every negative gets weight 1/n = 1/2
    instead of SupCon's 1. Per anchor: exp(l_bal) = 1 + N_a e^{-s_pos} / 2 and
    exp(l_supcon) = 1 + N_a e^{-s_pos}, i.e. exp(l_bal) = (1 + exp(l_supcon)) / 2.

    (Read literally, "class-averaging changes nothing relative to SupCon" does not hold: the
    negatives are halved. What is unchanged is the positive's weight.) With z2 = H z1 for a
    Householder reflection H (symmetric, orthogonal), both anchors of a sample have the same
    loss, so SupCon's per-sample values are per-anchor values and the identity is exact.
    """
    b, d = 6, 8
    z1 = unit(b, d, seed=14)
    v = unit(1, d, seed=15)[0]
    householder = torch.eye(d, dtype=torch.float64) - 2 * torch.outer(v, v)
    z2 = z1 @ householder
    labels = torch.arange(b)
    bal = balanced_contrastive_loss([z1, z2], labels, None, 0.1, reduction="none")
    sup = supcon_loss([z1, z2], labels, 0.1, reduction="none", gather=False)
    torch.testing.assert_close(torch.exp(bal), (1 + torch.exp(sup)) / 2, rtol=1e-12, atol=0)
    # and the two losses do differ, so the test distinguishes them
    assert (sup - bal).min() > 1e-3
    # a single class (all n equal to 2B, no prototypes) gives a constant weight 1/(2B - 1):
    # balanced = SupCon - log(2B - 1) exactly
    same = torch.zeros(b, dtype=torch.long)
    bal = balanced_contrastive_loss([z1, z2], same, None, 0.1)
    sup = supcon_loss([z1, z2], same, 0.1, gather=False)
    assert bal.item() == pytest.approx(sup.item() - math.log(2 * b - 1), rel=1e-12)


def test_gradient_matches_finite_differences():
    labels = torch.tensor([0, 1, 1, 2, 0])
    z1 = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(16), requires_grad=True)
    z2 = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(17), requires_grad=True)
    c = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(18), requires_grad=True)

    def f(a, b_, p):
        return balanced_contrastive_loss([F.normalize(a, dim=1), F.normalize(b_, dim=1)], labels, F.normalize(p, dim=1), 0.2)

    assert torch.autograd.gradcheck(f, (z1, z2, c), eps=1e-6, atol=1e-8, rtol=1e-6)
    # the prototypes do receive gradient
    f(z1, z2, c).backward()
    assert c.grad.abs().sum() > 0


def test_low_precision_inputs_are_computed_in_float32():
    labels = torch.tensor([0, 1, 1])
    z1, z2, protos = unit(3, 4, seed=19), unit(3, 4, seed=20), unit(2, 4, seed=21)
    ref = loop_reference([z1, z2], labels, protos, 0.07)
    got = balanced_contrastive_loss([z1.bfloat16(), z2.bfloat16()], labels, protos.bfloat16(), 0.07)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(ref, abs=0.1)


def test_errors_name_the_bad_value():
    z = unit(3, 4)
    with pytest.raises(ValueError, match=r"\[0, 2\).*\[0, 2\]"):
        balanced_contrastive_loss([z, z], torch.tensor([0, 1, 2]), unit(2, 4))
    with pytest.raises(ValueError, match="temperature"):
        balanced_contrastive_loss([z, z], torch.tensor([0, 1, 1]), None, temperature=0.0)
    with pytest.raises(ValueError, match=r"shape \(C, 4\)"):
        balanced_contrastive_loss([z, z], torch.tensor([0, 1, 1]), unit(2, 5))
    with pytest.raises(ValueError, match="single view"):
        balanced_contrastive_loss([z], torch.tensor([0, 1, 1]), None)
    with pytest.raises(ValueError, match="labels must have shape"):
        balanced_contrastive_loss([z, z], torch.tensor([0, 1]), None)
