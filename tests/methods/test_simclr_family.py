"""The SimCLR family's loss hook: a variant overrides ``contrastive_loss`` only, and SimCLR,
SDCLR and BoostedCL train on it (the per-sample loss BoostedCL tracks is the variant's)."""

from __future__ import annotations

import pytest
import torch

from ltcl_lightning.losses.contrastive import nt_xent_loss
from ltcl_lightning.methods.boosted_cl import BoostedCL
from ltcl_lightning.methods.sdclr import SDCLR
from ltcl_lightning.methods.simclr import SimCLR


class DoubledLoss:
    """A toy variant: twice the NT-Xent, with an extra scalar and an extra per-sample value."""

    def contrastive_loss(self, z1, z2):
        per_sample = 2 * nt_xent_loss(z1, z2, self.temperature, reduction="none")
        return per_sample, {"doubled": per_sample.detach().mean(), "z1_norm": z1.detach().norm(dim=1)}


@pytest.mark.parametrize("family", [SimCLR, SDCLR, BoostedCL])
def test_overriding_the_hook_changes_only_the_loss(family):
    kw = dict(num_classes=3, backbone="tiny", proj_hidden_dim=16, proj_dim=8, class_counts=[4, 3, 2])
    torch.manual_seed(0)
    base = family(**kw)
    variant = type("Doubled" + family.__name__, (DoubledLoss, family), {})(**kw)
    variant.load_state_dict(base.state_dict())
    if isinstance(base, SDCLR):
        base.backbone.recompute_masks(0)
        variant.backbone.recompute_masks(0)
    views = [torch.rand(4, 3, 8, 8), torch.rand(4, 3, 8, 8)]
    batch = (torch.arange(4), views, torch.tensor([0, 1, 2, 0]))
    out, out_v = base.training_loss(*batch), variant.training_loss(*batch)
    torch.testing.assert_close(out_v["per_sample_loss"], 2 * out["per_sample_loss"])
    torch.testing.assert_close(out_v["loss"], 2 * out["loss"])
    torch.testing.assert_close(out_v["doubled"], out_v["loss"].detach())
    assert out_v["z1_norm"].shape == (4,) and "doubled" not in out
    torch.testing.assert_close(out_v["features"], out["features"])
