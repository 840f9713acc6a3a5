"""bf16 paths of the issue-14 methods, on the CPU and (marked ``gpu``, skipped without CUDA) on
the GPU: the log-space hard-negative NT-Xent in bf16 at a temperature where the official exp()
loses the positive, and bf16-mixed PaCo / KCL fit steps (queue in float32, keys enqueued from
bf16)."""

import lightning.pytorch as pl
import pytest
import torch

from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.losses.hard_negative import hard_negative_nt_xent_loss
from ltcl_lightning.methods.kcl import KCL
from ltcl_lightning.methods.paco import PaCo

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]),
]


@pytest.mark.parametrize("device", DEVICES)
def test_hard_negative_bf16_close_to_float64(device):
    g = torch.Generator(device=device).manual_seed(0)
    z1 = torch.nn.functional.normalize(torch.randn(256, 128, device=device, generator=g, dtype=torch.float64), dim=1)
    z2 = torch.nn.functional.normalize(z1 + 0.3 * torch.randn(256, 128, device=device, generator=g, dtype=torch.float64), dim=1)
    ref = hard_negative_nt_xent_loss(z1, z2, 0.05, 0.1, 1.0)
    low = hard_negative_nt_xent_loss(z1.bfloat16(), z2.bfloat16(), 0.05, 0.1, 1.0)
    assert torch.isfinite(low) and abs(float(low) - float(ref)) < 0.05 * float(ref)


@pytest.mark.parametrize(
    "make",
    [
        lambda: PaCo(10, backbone="tiny", proj_dim=16, queue_size=64, temperature=0.1, alpha=0.05),
        lambda: KCL(10, backbone="tiny", proj_dim=16, queue_size=64, temperature=0.1),
    ],
)
@pytest.mark.parametrize("device", DEVICES)
def test_bf16_fit_steps(make, device, tmp_path):
    model = make()
    trainer = pl.Trainer(
        accelerator="gpu" if device == "cuda" else "cpu",
        devices=1,
        precision="bf16-mixed",
        max_steps=3,
        limit_val_batches=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, DigitsLTDataModule(batch_size=16, train_views=["digits", "digits"]))
    assert int(model.queue.filled) == 48 and model.queue.keys.dtype == torch.float32
    assert torch.isfinite(model.queue.keys).all()
