"""NT-Xent and SupCon against independent float64 loop computations (spec simclr_supcon.md)."""

import math

import pytest
import torch
import torch.nn.functional as F

from ltcl_lightning.losses.classification import logit_adjusted_cross_entropy
from ltcl_lightning.losses.contrastive import nt_xent_loss, supcon_loss


def _unit(b, d, seed):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, d, generator=g, dtype=torch.float64), dim=1)


def nt_xent_reference(z1, z2, t):
    """Literal spec formula: l_a = -log(exp(s_a,p(a)) / sum_{b != a} exp(s_ab)), per-sample mean."""
    u = torch.cat([z1, z2]).tolist()
    n = len(u)
    b = n // 2
    losses = []
    for a in range(n):
        p = a + b if a < b else a - b
        s = [sum(x * y for x, y in zip(u[a], u[k])) / t for k in range(n)]
        den = sum(math.exp(s[k]) for k in range(n) if k != a)
        losses.append(-math.log(math.exp(s[p]) / den))
    return [(losses[i] + losses[i + b]) / 2 for i in range(b)]


def supcon_reference(views, labels, t):
    u = torch.cat(views).tolist()
    y = labels.tolist() * len(views)
    n = len(u)
    per_anchor = []
    for a in range(n):
        s = [sum(x * q for x, q in zip(u[a], u[k])) / t for k in range(n)]
        den = sum(math.exp(s[k]) for k in range(n) if k != a)
        pos = [k for k in range(n) if k != a and y[k] == y[a]]
        per_anchor.append(-sum(s[p] - math.log(den) for p in pos) / len(pos))
    return sum(per_anchor) / n


@pytest.mark.parametrize("t", [0.2, 0.5])
def test_nt_xent_matches_reference(t):
    z1, z2 = _unit(5, 7, 0), _unit(5, 7, 1)
    ref = torch.tensor(nt_xent_reference(z1, z2, t), dtype=torch.float64)
    per = nt_xent_loss(z1, z2, t, reduction="none")
    torch.testing.assert_close(per, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(nt_xent_loss(z1, z2, t), ref.mean(), rtol=0, atol=1e-12)


def test_nt_xent_symmetric_in_views_and_permutation_invariant():
    z1, z2 = _unit(6, 4, 2), _unit(6, 4, 3)
    per = nt_xent_loss(z1, z2, 0.2, reduction="none")
    torch.testing.assert_close(nt_xent_loss(z2, z1, 0.2, reduction="none"), per)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(nt_xent_loss(z1[perm], z2[perm], 0.2, reduction="none"), per[perm])


def test_nt_xent_known_limit_identical_orthogonal_pairs():
    # positives identical, all other embeddings orthogonal: l = -log(e^{1/t} / (e^{1/t} + 2B-2))
    b, t = 3, 0.5
    z = torch.eye(2 * b, dtype=torch.float64)[:b]
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * b - 2))
    torch.testing.assert_close(nt_xent_loss(z, z.clone(), t), torch.tensor(expected, dtype=torch.float64))


def test_supcon_matches_reference():
    views = [_unit(6, 5, 4), _unit(6, 5, 5)]
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    ref = supcon_reference(views, labels, 0.1)
    torch.testing.assert_close(supcon_loss(views, labels, 0.1), torch.tensor(ref, dtype=torch.float64), rtol=0, atol=1e-10)


def test_supcon_three_views():
    views = [_unit(4, 3, 6), _unit(4, 3, 7), _unit(4, 3, 8)]
    labels = torch.tensor([0, 0, 1, 1])
    ref = supcon_reference(views, labels, 0.2)
    torch.testing.assert_close(supcon_loss(views, labels, 0.2), torch.tensor(ref, dtype=torch.float64), rtol=0, atol=1e-10)


def test_supcon_with_unique_labels_is_nt_xent():
    z1, z2 = _unit(7, 6, 9), _unit(7, 6, 10)
    ids = torch.arange(7)
    torch.testing.assert_close(supcon_loss([z1, z2], ids, 0.3), nt_xent_loss(z1, z2, 0.3))


def test_gradient_matches_float64_reference_autograd():
    z1, z2 = _unit(4, 3, 11).requires_grad_(), _unit(4, 3, 12).requires_grad_()
    nt_xent_loss(z1, z2, 0.2).backward()
    # finite differences of the independent reference
    eps = 1e-6
    g = torch.zeros_like(z1)
    for i in range(4):
        for j in range(3):
            zp, zm = z1.detach().clone(), z1.detach().clone()
            zp[i, j] += eps
            zm[i, j] -= eps
            fp = sum(nt_xent_reference(zp, z2.detach(), 0.2)) / 4
            fm = sum(nt_xent_reference(zm, z2.detach(), 0.2)) / 4
            g[i, j] = (fp - fm) / (2 * eps)
    torch.testing.assert_close(z1.grad, g, rtol=1e-5, atol=1e-7)


def test_bad_inputs():
    z = _unit(3, 2, 0)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(z, z, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(z, z[:2])
    with pytest.raises(ValueError, match="at least 2 views"):
        supcon_loss([z], torch.arange(3))


def test_logit_adjusted_ce():
    logits = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]], dtype=torch.float64)
    target = torch.tensor([0, 2])
    prior = torch.tensor([0.7, 0.2, 0.1], dtype=torch.float64)
    adj = logits + torch.log(prior)
    ref = -(adj[0, 0] - torch.logsumexp(adj[0], 0) + adj[1, 2] - torch.logsumexp(adj[1], 0)) / 2
    torch.testing.assert_close(logit_adjusted_cross_entropy(logits, target, prior, 1.0), ref)
    torch.testing.assert_close(logit_adjusted_cross_entropy(logits, target, prior, 0.0), F.cross_entropy(logits, target))


def test_contrastive_logits_masks_and_extra_items():
    """The kernel: view-major anchors and items, self = own column, positives = same label
    (ids for NT-Xent), extra items (prototypes) are items, never anchors."""
    from ltcl_lightning.losses.contrastive import contrastive_logits

    z1, z2, protos = _unit(3, 4, 20), _unit(3, 4, 21), _unit(2, 4, 22)
    c = contrastive_logits([z1, z2], None, 0.5)
    torch.testing.assert_close(c.logits, torch.cat([z1, z2]) @ torch.cat([z1, z2]).T / 0.5)
    assert torch.equal(c.self_mask, torch.eye(6, dtype=torch.bool))
    assert torch.equal(c.pos_mask, torch.eye(6, dtype=torch.bool).roll(3, 1))  # the other view
    labels = torch.tensor([0, 1, 0])
    c = contrastive_logits([z1, z2], labels, 0.5, extra_items=protos, extra_labels=torch.arange(2))
    assert c.logits.shape == (6, 8) and torch.equal(c.item_labels, torch.tensor([0, 1, 0, 0, 1, 0, 0, 1]))
    assert not c.self_mask[:, 6:].any() and torch.equal(c.self_mask[:, :6], torch.eye(6, dtype=torch.bool))
    expected = (torch.tensor([0, 1, 0] * 2)[:, None] == c.item_labels[None, :]) & ~c.self_mask
    assert torch.equal(c.pos_mask, expected) and int(c.pos_mask[0].sum()) == 4  # 3 views + prototype 0
