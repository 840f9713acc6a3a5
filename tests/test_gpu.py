"""GPU-only paths, marked ``gpu``: skipped (with the reason shown by ``pytest -ra``) where no
CUDA device exists, run as they are where one does (``pytest -m gpu``)."""

import lightning.pytorch as pl
import pytest
import torch

from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.losses.contrastive import nt_xent_loss
from ltcl_lightning.losses.proco import proco_logits
from ltcl_lightning.methods.proco import ProCo
from ltcl_lightning.methods.sdclr import SDCLR
from ltcl_lightning.methods.simclr import SimCLR

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_bf16_autocast_loss_close_to_float32():
    g = torch.Generator(device="cuda").manual_seed(0)
    z1 = torch.nn.functional.normalize(torch.randn(256, 128, device="cuda", generator=g), dim=1)
    z2 = torch.nn.functional.normalize(z1 + 0.3 * torch.randn(256, 128, device="cuda", generator=g), dim=1)
    ref = nt_xent_loss(z1, z2, 0.2)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        low = nt_xent_loss(z1.bfloat16(), z2.bfloat16(), 0.2)
    assert torch.isfinite(low)
    assert abs(float(low) - float(ref)) < 0.05 * float(ref)


def test_proco_logits_on_cuda_match_cpu():
    g = torch.Generator().manual_seed(0)
    z = torch.nn.functional.normalize(torch.randn(32, 128, generator=g), dim=1)
    mu = torch.nn.functional.normalize(torch.randn(100, 128, generator=g), dim=1)
    kappa = torch.rand(100, generator=g) * 1000 + 10
    cpu = proco_logits(z, kappa, mu, 0.1)
    gpu = proco_logits(z.cuda(), kappa.cuda(), mu.cuda(), 0.1).cpu()
    torch.testing.assert_close(gpu, cpu, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "make",
    [
        lambda: SimCLR(10, backbone="tiny"),
        lambda: SDCLR(10, backbone="tiny"),
        lambda: ProCo(10, backbone="tiny", proj_dim=32, proj_hidden_dim=32),
    ],
)
def test_bf16_mixed_fit_on_gpu(make, tmp_path):
    model = make()
    dm = DigitsLTDataModule(batch_size=32, train_views=["digits"] * (3 if isinstance(model, ProCo) else 2))
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-mixed",
        max_epochs=1,
        limit_train_batches=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, dm)
    assert 0.0 <= model.last_eval["val"]["acc"] <= 1.0
