"""Masked conv, dual batch-norm, conversion and global magnitude pruning (spec sdclr.md (a), (c))."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from ltcl_lightning.modules.backbones import CifarResNet, build_backbone
from ltcl_lightning.modules.heads import ProjectionHead
from ltcl_lightning.modules.pruning import (
    DualBatchNorm,
    MaskedConv2d,
    PrunableNetwork,
    convert_to_prunable,
    global_magnitude_masks,
    mask_densities,
    masked_convs,
    prune_global,
)


def _small_resnet(seed: int = 0) -> PrunableNetwork:
    """Stem, BasicBlocks and 1x1 downsample convs, a few thousand weights."""
    torch.manual_seed(seed)
    return PrunableNetwork(CifarResNet([4, 8, 16], [1, 1, 1], [1, 2, 2], shortcut="B"))


def _numpy_reference(weights: list[np.ndarray], ratio: float):
    """The reference's procedure: host copy, concatenate, full ascending sort, v[min(k, N-1)]."""
    flat = np.concatenate([np.abs(w).ravel() for w in weights])
    n = flat.size
    k = math.ceil(ratio * n)
    thr = np.sort(flat)[min(k, n - 1)]
    masks = [np.abs(w) >= thr for w in weights]
    return thr, masks, k


@pytest.mark.parametrize("ratio", [0.9, 0.5])
def test_threshold_and_counts_match_numpy_sort_with_ties(ratio):
    net = _small_resnet()
    layers = net.masked_convs()
    # stem, 2 convs per block, 1x1 downsample convs of stages 2 and 3
    assert len(layers) == 1 + 2 * 3 + 2
    ws = [m.weight.detach().numpy() for m in layers.values()]
    flat = np.concatenate([np.abs(w).ravel() for w in ws])
    n = flat.size
    k = math.ceil(ratio * n)
    order = np.argsort(flat, kind="stable")
    v = flat[order[k]]
    # two ties below position k and one above: all four weights get |w| = v
    sizes = np.cumsum([0] + [w.size for w in ws])
    with torch.no_grad():
        for pos in (order[k - 2], order[k - 1], order[k + 1]):
            li = int(np.searchsorted(sizes, pos, side="right") - 1)
            w = list(layers.values())[li].weight.view(-1)
            w[pos - sizes[li]] = float(np.copysign(v, w[pos - sizes[li]].item()))
    ws = [m.weight.detach().numpy().copy() for m in layers.values()]
    thr_ref, masks_ref, k_ref = _numpy_reference(ws, ratio)
    assert thr_ref == v

    stats = prune_global(net, ratio)
    assert stats["threshold"] == pytest.approx(float(thr_ref), rel=0, abs=0)
    # ties survive: two fewer than k are pruned
    assert stats["num_pruned"] == k_ref - 2
    assert stats["num_weights"] == n
    dens = mask_densities(net.net)
    for (name, layer), m_ref in zip(layers.items(), masks_ref):
        np.testing.assert_array_equal(layer.prune_mask.numpy(), m_ref)
        assert dens[name] == m_ref.sum() / m_ref.size
    assert dens["overall"] == (n - (k_ref - 2)) / n
    # the global rule is not layer-wise: densities differ across layers
    per_layer = [dens[name] for name in layers]
    assert max(per_layer) - min(per_layer) > 0.1


def test_threshold_uses_kthvalue_without_sort_or_host_copy(monkeypatch):
    net = _small_resnet(1)
    weights = [m.weight for m in masked_convs(net).values()]
    thr_ref, masks_ref, _ = _numpy_reference([w.detach().numpy().copy() for w in weights], 0.9)

    def forbidden(*a, **k):
        raise AssertionError("full sort / host copy used in the threshold search")

    for name in ("sort", "argsort", "msort"):
        monkeypatch.setattr(torch, name, forbidden)
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    monkeypatch.setattr(torch.Tensor, "numpy", forbidden)
    monkeypatch.setattr(torch.Tensor, "cpu", forbidden)
    thr, masks = global_magnitude_masks(weights, 0.9)
    monkeypatch.undo()
    assert float(thr) == float(thr_ref)
    for m, r in zip(masks, masks_ref):
        np.testing.assert_array_equal(m.numpy(), r)


def test_ratio_limits_and_errors():
    net = _small_resnet(2)
    assert prune_global(net, 0.0)["overall"] == 1.0
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_global(net, 1.0)
    with pytest.raises(ValueError, match="random_ratio"):
        prune_global(net, 0.5, random_ratio=0.6)
    with pytest.raises(ValueError, match="convert_to_prunable"):
        prune_global(nn.Sequential(nn.Conv2d(3, 3, 3)), 0.5)


def test_masks_are_recomputed_from_scratch_not_cumulative():
    net = _small_resnet(3)
    prune_global(net, 0.9)
    prune_global(net, 0.5)
    assert mask_densities(net.net)["overall"] == pytest.approx(0.5, abs=1e-3)


def test_random_pruning_is_seeded_and_drops_the_right_fraction():
    torch.manual_seed(0)
    net = PrunableNetwork(build_backbone("tiny"))
    n = sum(m.weight.numel() for m in masked_convs(net).values())

    def run(seed):
        g = torch.Generator().manual_seed(seed)
        prune_global(net, 0.6, random_ratio=0.3, generator=g)
        return [m.prune_mask.clone() for m in masked_convs(net).values()]

    rng_state = torch.get_rng_state()
    a, b, c = run(1), run(1), run(2)
    assert torch.equal(torch.get_rng_state(), rng_state), "the global RNG must not advance"
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(not torch.equal(x, y) for x, y in zip(a, c))
    _, mag = global_magnitude_masks([m.weight for m in masked_convs(net).values()], 0.3)
    # random drops only remove weights the magnitude part kept
    assert all(bool((x & ~m).sum() == 0) for x, m in zip(a, mag))
    kept = sum(int(x.sum()) for x in a)
    n_mag_kept = sum(int(m.sum()) for m in mag)
    p = math.ceil(0.3 * n) / (n - math.ceil(0.3 * n))
    expected = n_mag_kept * (1 - p)
    sd = math.sqrt(n_mag_kept * p * (1 - p))
    assert abs(kept - expected) < 5 * sd
    assert kept / n == pytest.approx(0.4, abs=0.01)


def test_resnet18_and_resnet50_prunable_layers():
    """Spec (a): ResNet-18 CIFAR 20 layers / 11,159,232 weights (stem and 1x1 downsample convs
    included); ResNet-50 53 / 23,454,912. No Linear is masked, every BN is dual."""
    r18 = PrunableNetwork(build_backbone("resnet18_cifar"))
    convs = masked_convs(r18)
    assert len(convs) == 20 and sum(m.weight.numel() for m in convs.values()) == 11_159_232
    assert sum(1 for n in convs if "downsample" in n) == 3
    assert sum(isinstance(m, DualBatchNorm) for m in r18.modules()) == 20
    assert not any(
        type(m) is nn.Conv2d or isinstance(m, nn.modules.batchnorm._BatchNorm) and not _inside_dual(r18, m) for m in r18.modules()
    )
    r50 = PrunableNetwork(build_backbone("resnet50"))
    convs = masked_convs(r50)
    assert len(convs) == 53 and sum(m.weight.numel() for m in convs.values()) == 23_454_912
    head = PrunableNetwork(ProjectionHead(512, 512, 128, num_layers=3))
    assert not masked_convs(head)
    assert sum(isinstance(m, DualBatchNorm) for m in head.modules()) == 3
    assert sum(type(m) is nn.Linear for m in head.modules()) == 3


def _inside_dual(root: nn.Module, bn: nn.Module) -> bool:
    return any(isinstance(m, DualBatchNorm) and any(b is bn for b in m.bn_list) for m in root.modules())


def test_masked_conv_branches_and_conversion_keeps_weights():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 3, padding=1, bias=True)
    mc = MaskedConv2d.from_conv(conv)
    assert mc.weight is conv.weight and mc.bias is conv.bias
    mc.prune_mask.copy_(torch.rand_like(conv.weight) > 0.5)
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(mc(x), conv(x), rtol=0, atol=0)
    mc.pruned = True
    torch.testing.assert_close(mc(x), F.conv2d(x, conv.weight * mc.prune_mask, conv.bias, padding=1), rtol=0, atol=0)
    assert not torch.equal(mc(x), conv(x))


def test_masks_are_persistent_buffers_that_move_and_load_weights_only():
    net = _small_resnet(4)
    prune_global(net, 0.7)
    sd = net.state_dict()
    mask_keys = [k for k in sd if k.endswith("prune_mask")]
    assert len(mask_keys) == len(masked_convs(net)) and all(sd[k].dtype == torch.bool for k in mask_keys)
    assert any(".bn_list.1.running_mean" in k for k in sd)
    net.double()  # dtype moves leave the bool masks alone
    assert all(m.prune_mask.dtype == torch.bool for m in masked_convs(net).values())
    buf = io.BytesIO()
    torch.save(sd, buf)
    buf.seek(0)
    fresh = _small_resnet(5)
    assert all(bool(m.prune_mask.all()) for m in masked_convs(fresh).values())
    assert not all(bool(sd[k].all()) for k in mask_keys)
    fresh.load_state_dict(torch.load(buf, weights_only=True))
    assert all(torch.equal(sd[k], fresh.state_dict()[k]) for k in mask_keys)


def test_dual_bn_statistics_are_separate_and_dense_equals_plain_model():
    torch.manual_seed(0)
    plain = build_backbone("tiny")
    net = PrunableNetwork(copy.deepcopy(plain))
    prune_global(net, 0.5)
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g) * 2 + 1
    out = net(x1)
    net(x2, pruned=True)
    ref = plain(x1)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    plain_bns = [m for m in plain.modules() if isinstance(m, nn.BatchNorm2d)]
    duals = [m for m in net.modules() if isinstance(m, DualBatchNorm)]
    assert len(plain_bns) == len(duals) == 3
    for p, d in zip(plain_bns, duals):
        torch.testing.assert_close(d.dense.running_mean, p.running_mean, rtol=0, atol=0)
        torch.testing.assert_close(d.dense.running_var, p.running_var, rtol=0, atol=0)
        assert not torch.allclose(d.pruned_bn.running_mean, d.dense.running_mean)
    # after the pruned call every layer is back on the dense branch
    assert not any(getattr(m, "pruned", False) for m in net.modules())


def test_to_dense_equals_dense_branch_in_eval():
    net = _small_resnet(6)
    prune_global(net, 0.9)
    net.train()
    net(torch.randn(4, 3, 8, 8))
    net(torch.randn(4, 3, 8, 8) + 3, pruned=True)
    net.eval()
    plain = net.to_dense()
    assert not any(isinstance(m, (MaskedConv2d, DualBatchNorm)) for m in plain.modules())
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(plain(x), net(x), rtol=0, atol=0)
    assert not torch.allclose(net(x, pruned=True), net(x))


def test_convert_rejects_unsupported_convolutions():
    with pytest.raises(TypeError, match="nn.Conv2d only"):
        convert_to_prunable(nn.Sequential(nn.Conv1d(3, 3, 3)))
