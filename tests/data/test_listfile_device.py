"""The device-decode path of list-file data: workers read bytes, decode and views on the device.

On the CPU: the bytes read are the file's; decoding with torchvision (libjpeg-turbo, as PIL)
gives PIL's pixels within 1 grey level (PIL and torchvision may pick different IDCT / upsampling
settings) and the crops for the same box equal PIL's ``resized_crop`` within 2 levels; crop
boxes of variable-size images follow torchvision's distribution and stay inside each image.
GPU-marked: nvJPEG decode equals the CPU decode within 2 levels (JPEG decoders may differ in
rounding), and a device-decode batch arrives on the GPU.
"""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.v2 import functional as F

from ltcl_lightning.data import batched as B
from ltcl_lightning.data.augment import SimCLRAugment, crop_each
from ltcl_lightning.data.imagenet import ImageNetLTDataModule
from ltcl_lightning.data.listfile import EncodedBatch, decode_images, pil_loader, read_bytes


def _jpeg(tmp_path, h: int, w: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    base = np.cumsum(rng.integers(0, 16, (h, w, 3)), axis=1) % 256  # smooth-ish, JPEG-friendly
    path = tmp_path / f"img_{h}x{w}_{seed}.jpg"
    PIL.Image.fromarray(base.astype(np.uint8)).save(path, quality=90)
    return str(path)


def test_read_bytes_are_the_files_bytes(tmp_path):
    path = _jpeg(tmp_path, 20, 30)
    data = read_bytes(path)
    assert data.dtype == torch.uint8 and data.ndim == 1
    assert bytes(data.numpy()) == open(path, "rb").read()


def test_cpu_decode_and_crop_match_pil(tmp_path):
    paths = [_jpeg(tmp_path, h, w, s) for s, (h, w) in enumerate([(40, 56), (64, 48), (33, 33)])]
    images = decode_images([read_bytes(p) for p in paths], torch.device("cpu"))
    pils = [PIL.Image.open(p).convert("RGB") for p in paths]
    for im, pil in zip(images, pils):
        ref = torch.from_numpy(np.array(pil)).permute(2, 0, 1)
        assert im.shape == ref.shape and (im.int() - ref.int()).abs().max() <= 1
    boxes = [(3, 5, 30, 40), (0, 0, 64, 48), (10, 2, 12, 20)]
    got = crop_each(images, boxes, 24, "bicubic")
    ref = torch.stack(
        [
            torch.from_numpy(
                np.array(F.resized_crop(pil, *box, [24, 24], interpolation=InterpolationMode.BICUBIC, antialias=True))
            ).permute(2, 0, 1)
            for pil, box in zip(pils, boxes)
        ]
    ).float()
    assert (got - ref).abs().max() <= 2


def _png16_rgb(x: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (PIL writes none): signature, IHDR, one zlib IDAT of unfiltered rows, IEND."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    h, w, _ = x.shape
    rows = b"".join(b"\x00" + x[i].astype(">u2").tobytes() for i in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_png_and_16_bit_png_decode_on_the_host_path(tmp_path):
    rng = np.random.default_rng(0)
    arr = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500).astype(np.uint16)
    files = {
        "grey16": arr,
        "la": rng.integers(0, 256, (12, 10, 2), dtype=np.uint8),
        "rgba": rng.integers(0, 256, (12, 10, 4), dtype=np.uint8),
    }
    for name, a in files.items():
        buf = io.BytesIO()
        PIL.Image.fromarray(a, mode={"la": "LA", "rgba": "RGBA"}.get(name)).save(buf, format="PNG")
        (tmp_path / f"{name}.png").write_bytes(buf.getvalue())
    rgb16 = (np.arange(12 * 10 * 3) * 37 % 65536).astype(np.uint16).reshape(12, 10, 3)
    (tmp_path / "rgb16.png").write_bytes(_png16_rgb(rgb16))
    for name in [*files, "rgb16"]:
        path = str(tmp_path / f"{name}.png")
        (im,) = decode_images([read_bytes(path)], torch.device("cpu"))
        assert im.shape == (3, 12, 10) and im.dtype == torch.uint8, name
        # the worker path's values: before, 16-bit images were floored (v // 257), which differs
        # from pil_loader's round(v / 257) on half the grey values and from PIL's high byte on colour
        assert torch.equal(im, torch.from_numpy(np.array(pil_loader(path))).permute(2, 0, 1)), name
    assert torch.equal(im[0], torch.from_numpy((rgb16[..., 0] >> 8).astype(np.uint8)))


def test_crop_boxes_of_variable_size_images():
    g = torch.Generator().manual_seed(0)
    for h, w in [(50, 80), (300, 200), (17, 17)]:
        top, left, ch, cw = B.random_resized_crop_params(g, 4000, h, w, (0.08, 1.0), (3 / 4, 4 / 3))
        assert (top >= 0).all() and (left >= 0).all() and (top + ch <= h).all() and (left + cw <= w).all()
        area = (ch * cw).double() / (h * w)
        torch.manual_seed(0)
        ref = torch.tensor(
            [float(np.prod(v2.RandomResizedCrop.get_params(torch.empty(3, h, w), [0.08, 1.0], [3 / 4, 4 / 3])[2:])) for _ in range(4000)]
        ) / (h * w)
        assert abs(float(area.mean()) - float(ref.mean())) < 0.02  # the same rejection of boxes that do not fit
    views = SimCLRAugment().batched_list(
        [torch.zeros(3, 50, 80, dtype=torch.uint8), torch.zeros(3, 30, 20, dtype=torch.uint8)],
        torch.Generator(),
        torch.Generator().manual_seed(1),
        16,
    )
    assert views.shape == (2, 3, 16, 16)


def test_device_decode_datamodule_batches(imagenet_lt_folder):
    args = {k: v for k, v in imagenet_lt_folder.items()}
    dm = ImageNetLTDataModule(**args, batch_size=4, num_workers=0, decode="device", train_views=["simclr", "randaugment", "simclr_blur"])
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert isinstance(batch, EncodedBatch) and all(d.dtype == torch.uint8 and d.ndim == 1 for d in batch.data)
    index, views, target = dm.on_after_batch_transfer(batch, 0)
    s = imagenet_lt_folder["image_size"]
    assert [v.shape for v in views] == [(4, 3, s, s)] * 3  # simclr_blur too (SDCLR ImageNet-100)
    assert torch.equal(target, torch.as_tensor(dm.datasets["train"].targets)[index])
    vi, vv, vt = dm.on_after_batch_transfer(next(iter(dm.val_dataloader())), 0)
    worker = ImageNetLTDataModule(**args, batch_size=4, num_workers=0)
    worker.setup("fit")
    wi, wv, wt = next(iter(worker.val_dataloader()))
    assert torch.equal(vi, wi) and torch.equal(vt, wt)
    assert (vv[0] - wv[0][0 : len(vi)]).abs().max() < 0.05  # same eval view, PIL vs torchvision decode


def test_device_decode_keeps_its_views_datasets_and_resumable_loader(imagenet_lt_folder):
    from ltcl_lightning.data.base import ResumableDataLoader

    args = {k: v for k, v in imagenet_lt_folder.items()}
    dm = ImageNetLTDataModule(**args, batch_size=4, num_workers=0, decode="device", train_views=["simclr", "randaugment"])
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader, ResumableDataLoader)  # before: a plain DataLoader (Lightning warns on a mid-epoch resume)
    batch = next(iter(loader))
    # the same view objects every step (before: rebuilt per batch, their device tables with them)
    calls = []
    for aug in dm.train_augmentations:
        aug.batched_list = (lambda f: lambda *a, **k: calls.append(f) or f(*a, **k))(aug.batched_list)
    dm.on_after_batch_transfer(batch, 0)
    dm.on_after_batch_transfer(batch, 0)
    assert len(calls) == 4
    # the datasets still decode images (kNN and the probes read them without the hook)
    s = imagenet_lt_folder["image_size"]
    assert dm.datasets["val"][0][1][0].shape == (3, s, s) and dm.train_eval_dataset()[0][1][0].shape == (3, s, s)
    # the host stream of crop boxes is not the views' stream, on the CPU too
    assert dm._generator(torch.device("cpu")) is not dm._generator(torch.device("cpu"), stream="boxes")
    with pytest.raises(ValueError, match="set device_resident=false"):
        ImageNetLTDataModule(**args, device_resident=True)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_decode_matches_cpu(tmp_path, imagenet_lt_folder):
    paths = [_jpeg(tmp_path, h, w, s) for s, (h, w) in enumerate([(40, 56), (64, 48), (120, 90)])]
    data = [read_bytes(p) for p in paths]
    cpu = decode_images(data, torch.device("cpu"))
    gpu = decode_images(data, torch.device("cuda"))
    for a, b in zip(cpu, gpu):
        assert b.is_cuda and a.shape == b.shape and (a.int() - b.cpu().int()).abs().max() <= 2
    dm = ImageNetLTDataModule(**imagenet_lt_folder, batch_size=4, num_workers=0, decode="device")
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader())).to(torch.device("cuda"))
    index, views, target = dm.on_after_batch_transfer(batch, 0)
    assert views[0].is_cuda and index.is_cuda and target.is_cuda
