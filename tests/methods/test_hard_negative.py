"""HCL / DCL on the SimCLR family: the step's loss and the tracked per-sample loss are the
hard-negative NT-Xent of the member's own encodings (SimCLR, SDCLR dense/pruned, BCL-I, BCL-D),
and the tau_plus = beta = 0 model trains exactly like SimCLR."""

from __future__ import annotations

import pytest
import torch

from ltcl_lightning.losses.hard_negative import hard_negative_nt_xent_loss
from ltcl_lightning.methods import SimCLR
from ltcl_lightning.methods.hard_negative import (
    DebiasedSimCLR,
    HardNegativeBoostedCL,
    HardNegativeBoostedSDCLR,
    HardNegativeSDCLR,
    HardNegativeSimCLR,
)

SMALL = dict(backbone="tiny", proj_hidden_dim=16, proj_dim=8)


def _batch(b=6):
    g = torch.Generator().manual_seed(0)
    views = [torch.randn(b, 3, 8, 8, generator=g) for _ in range(2)]
    return torch.arange(b), views, torch.randint(0, 4, (b,), generator=g)


@pytest.mark.parametrize(
    "cls,extra",
    [
        (HardNegativeSimCLR, {}),
        (HardNegativeSDCLR, {}),
        (HardNegativeBoostedCL, {"num_samples": 6}),
        (HardNegativeBoostedSDCLR, {"num_samples": 6}),
    ],
)
def test_step_loss_is_the_hard_negative_loss_of_the_encodings(cls, extra):
    torch.manual_seed(0)
    model = cls(4, temperature=0.3, tau_plus=0.1, beta=1.5, **SMALL, **extra)
    assert model.hparams["tau_plus"] == 0.1 and model.hparams["beta"] == 1.5
    index, views, target = _batch()
    out = model.training_loss(index, views, target)
    z1, z2, _ = model.encode(views)
    expected = hard_negative_nt_xent_loss(z1, z2, 0.3, 0.1, 1.5, reduction="none")
    torch.testing.assert_close(out["per_sample_loss"], expected.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out["loss"], expected.mean(), rtol=1e-6, atol=1e-7)


def test_debiased_is_beta_zero():
    model = DebiasedSimCLR(4, tau_plus=0.05, **SMALL)
    assert model.beta == 0.0 and model.tau_plus == 0.05


def test_no_prior_no_beta_trains_like_simclr():
    index, views, target = _batch()
    views = [v.double() for v in views]
    torch.manual_seed(0)
    a = HardNegativeSimCLR(4, tau_plus=0.0, beta=0.0, temperature=0.2, **SMALL).double()
    torch.manual_seed(0)
    b = SimCLR(4, temperature=0.2, **SMALL).double()
    la, lb = a.training_loss(index, views, target)["loss"], b.training_loss(index, views, target)["loss"]
    torch.testing.assert_close(la, lb, rtol=0, atol=1e-12)
    la.backward()
    lb.backward()
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        if pa.grad is not None:
            torch.testing.assert_close(pa.grad, pb.grad, rtol=0, atol=1e-10, msg=n)


def test_bad_prior_is_refused():
    with pytest.raises(ValueError, match="tau_plus"):
        HardNegativeSimCLR(4, tau_plus=1.0, **SMALL)
