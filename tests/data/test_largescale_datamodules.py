"""ImageNet-LT, ImageNet-100-LT and iNaturalist 2018 datamodules: one training step on real JPEG
folders, transforms, iNat JSON annotations, and generated stand-ins of the large train lists."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fixtures_images import IMAGENET100_LT_TRAIN_COUNTS, IMAGENET_LT_TRAIN_COUNTS, INAT_TRAIN_COUNTS
from torchvision.transforms import v2

from ltcl_lightning.cli import cli_main
from ltcl_lightning.data.imagenet import ImageNet100LTDataModule, ImageNetLTDataModule
from ltcl_lightning.data.inaturalist import INaturalist2018DataModule, read_coco_annotations
from ltcl_lightning.data.listfile import resize_for
from ltcl_lightning.data.samplers import ClassAwareSampler, InstanceSampler
from ltcl_lightning.data.transforms import IMAGENET_MEAN, INAT_MEAN, INAT_STD


def _fit_one_step(tmp_path, data_class: str, data_args: dict, model: str = "ltcl_lightning.methods.simclr.SimCLR"):
    args = [
        "fit",
        f"--model={model}",
        "--model.init_args.backbone=tiny",
        f"--data={data_class}",
        "--data.init_args.batch_size=4",
        "--data.init_args.num_workers=0",
        "--data.init_args.image_size=32",
        "--trainer.fast_dev_run=true",
        "--trainer.accelerator=cpu",
        "--trainer.devices=1",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
    ]
    args += [f"--data.init_args.{k}={v}" for k, v in data_args.items()]
    return cli_main(args)


def test_imagenet_lt_fit_one_step(imagenet_lt_folder, tmp_path):
    f = imagenet_lt_folder
    cli = _fit_one_step(
        tmp_path,
        "ltcl_lightning.data.imagenet.ImageNetLTDataModule",
        {k: f[k] for k in ("data_dir", "train_list", "val_list", "test_list", "num_classes")},
    )
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert cli.model.class_counts.tolist() == list(IMAGENET_LT_TRAIN_COUNTS)
    dm = cli.datamodule
    assert dm.class_names == [f"n{1440764 + 1000 * c:08d}" for c in range(f["num_classes"])]
    assert cli.model.last_eval["val"]["num_samples"] == 4  # fast_dev_run: one validation batch


def test_imagenet100_lt_fit_one_step_with_sampler(imagenet100_lt_folder, tmp_path):
    f = imagenet100_lt_folder
    cli = _fit_one_step(
        tmp_path,
        "ltcl_lightning.data.imagenet.ImageNet100LTDataModule",
        {
            **{k: f[k] for k in ("data_dir", "train_list", "test_list", "num_classes")},
            "fewshot_list": f["fewshot_list"],
            "sampler": "class_balanced",
            "train_views": "[randaugment, simclr_blur, simclr]",
        },
        model="ltcl_lightning.methods.balanced_cl.BalancedCL",
    )  # three views (SimCLR refuses a third)
    assert cli.trainer.global_step == 1
    dm = cli.datamodule
    assert isinstance(cli.trainer.train_dataloader.sampler, ClassAwareSampler)
    index, views, target = next(iter(dm.train_dataloader()))
    assert len(views) == 3 and all(v.shape == (4, 3, 32, 32) for v in views)
    # the few-shot probe list: one image per class, served in order with the evaluation view
    batches = list(dm.probe_dataloader("fewshot"))
    assert torch.cat([b[2] for b in batches]).tolist() == list(range(f["num_classes"]))
    assert batches[0][1][0].shape[-2:] == (32, 32)


def test_imagenet100_balanced_train_list(imagenet100_lt_folder):
    f = imagenet100_lt_folder
    dm = ImageNet100LTDataModule(
        data_dir=f["data_dir"], train_list=f["balanced_train_list"], test_list=f["test_list"], num_classes=f["num_classes"], image_size=32
    )
    assert dm.class_counts == [5] * f["num_classes"]
    dm = ImageNet100LTDataModule(
        data_dir=f["data_dir"], train_list=f["train_list"], test_list=f["test_list"], num_classes=f["num_classes"], image_size=32
    )
    assert dm.class_counts == list(IMAGENET100_LT_TRAIN_COUNTS)


def test_inat_fit_one_step_from_json(inat_folder, tmp_path):
    f = inat_folder
    cli = _fit_one_step(
        tmp_path,
        "ltcl_lightning.data.inaturalist.INaturalist2018DataModule",
        {k: f[k] for k in ("data_dir", "train_json", "val_json", "num_classes")},
        model="ltcl_lightning.methods.ce.CrossEntropy",
    )
    assert cli.trainer.global_step == 1
    assert cli.model.class_counts.tolist() == list(INAT_TRAIN_COUNTS)
    assert cli.datamodule.class_names == [f"Species {c}" for c in range(f["num_classes"])]


def test_inat_txt_and_json_agree(inat_folder):
    f = inat_folder
    kw = dict(data_dir=f["data_dir"], num_classes=f["num_classes"], image_size=32, num_workers=0)
    txt = INaturalist2018DataModule(train_list=f["train_list"], val_list=f["val_list"], **kw)
    js = INaturalist2018DataModule(train_json=f["train_json"], val_json=f["val_json"], **kw)
    assert txt.class_counts == js.class_counts == list(INAT_TRAIN_COUNTS)
    for a, b in ((txt.train_file, js.train_file), (txt.val_file, js.val_file)):
        assert sorted(zip((a.path(i) for i in range(len(a))), a.labels.tolist())) == sorted(
            zip((b.path(i) for i in range(len(b))), b.labels.tolist())
        )
    assert txt.class_names[1] == "Insecta/1"  # <supercategory>/<id> without the JSON names
    txt.setup("validate")
    index, views, target = next(iter(txt.val_dataloader()))
    assert views[0].shape[-2:] == (32, 32) and index.tolist() == list(range(len(index)))


def test_inat_json_errors(inat_folder, tmp_path):
    ann = json.loads(open(inat_folder["val_json"]).read())
    ann["annotations"] = ann["annotations"][1:]
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(ann))
    with pytest.raises(ValueError, match="exactly one annotation.*1 images have none"):
        read_coco_annotations(str(p))
    p.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not a COCO-style annotation file"):
        read_coco_annotations(str(p))
    p.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_coco_annotations(str(p))
    with pytest.raises(ValueError, match="exactly one of train_list"):
        INaturalist2018DataModule(data_dir="x", train_list="a.txt", train_json="a.json", val_list="v.txt")


# ----- transforms -------------------------------------------------------------------------------------
def _ops(multiview):
    return multiview.transforms[0].transforms


def test_eval_view_resize_centercrop(inat_folder):
    dm = ImageNetLTDataModule(data_dir="x", train_list="t", test_list="t")
    ops = _ops(dm.eval_transform())
    assert isinstance(ops[0], v2.Resize) and ops[0].size == [256]
    assert isinstance(ops[1], v2.CenterCrop) and ops[1].size == (224, 224)
    assert list(ops[-1].mean) == list(IMAGENET_MEAN)
    assert resize_for(224) == 256 and resize_for(32) == 37
    f = inat_folder
    dm = INaturalist2018DataModule(
        data_dir=f["data_dir"], train_list=f["train_list"], val_list=f["val_list"], num_classes=f["num_classes"], image_size=32
    )
    ops = _ops(dm.eval_transform())
    assert ops[0].size == [37] and ops[1].size == (32, 32)
    assert list(ops[-1].mean) == list(INAT_MEAN) and list(ops[-1].std) == list(INAT_STD)
    # the evaluation view equals resize(37) -> centre crop(32) -> normalise, done by hand
    dm.setup("validate")
    _, views, _ = dm.datasets["val"][0]
    img = dm.datasets["val"].base[0][0]  # 48x40 PIL image
    assert img.size == (48, 40)
    # PIL's resize: the shorter side 40 -> 37 (the longer 48 -> 44), then the central 32x32
    ref = v2.functional.pil_to_tensor(v2.functional.center_crop(img.resize((44, 37), resample=2), [32, 32]))
    ref = (ref.float() / 255 - torch.tensor(INAT_MEAN)[:, None, None]) / torch.tensor(INAT_STD)[:, None, None]
    torch.testing.assert_close(views[0], ref, atol=1e-5, rtol=0)


def test_default_sampler_is_rank_aware_instance(imagenet_lt_folder):
    f = imagenet_lt_folder
    dm = ImageNetLTDataModule(
        data_dir=f["data_dir"],
        train_list=f["train_list"],
        test_list=f["test_list"],
        num_classes=f["num_classes"],
        image_size=32,
        num_workers=0,
        batch_size=100,
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, InstanceSampler)
    index, _, target = next(iter(loader))
    assert sorted(index.tolist()) == list(range(sum(IMAGENET_LT_TRAIN_COUNTS)))
    assert torch.equal(target, torch.as_tensor(dm.train_file.labels)[index])


# ----- generated stand-ins of the lists that are too large to ship -------------------------------------
def _zipf_counts(num_classes: int, n_max: int, n_min: int, alpha: float) -> np.ndarray:
    return np.maximum(n_min, np.floor(n_max / np.arange(1, num_classes + 1) ** alpha)).astype(np.int64)


@pytest.mark.parametrize(
    "cls,num_classes,n_max,n_min,alpha", [(ImageNetLTDataModule, 1000, 1280, 5, 0.9), (INaturalist2018DataModule, 8142, 1000, 2, 1.0)]
)
def test_generated_train_list_histogram(tmp_path, cls, num_classes, n_max, n_min, alpha):
    """A shuffled list with the published extremes (ImageNet-LT 1000 classes, 1280..5; iNat 8142,
    1000..2) gives back exactly the generated histogram and the threshold groups computed here."""
    counts = _zipf_counts(num_classes, n_max, n_min, alpha)
    rng = np.random.default_rng(0)
    perm = rng.permutation(num_classes)  # classes not in head-to-tail order
    labels = rng.permutation(np.repeat(perm, counts))
    train = tmp_path / "train.txt"
    train.write_text("".join(f"train/c{c}/img_{i}.jpg {c}\n" for i, c in enumerate(labels)))
    test = tmp_path / "test.txt"
    test.write_text("".join(f"val/c{c}/v.jpg {c}\n" for c in range(num_classes)))
    kw = {"val_list": str(test)} if cls is INaturalist2018DataModule else {"test_list": str(test)}
    dm = cls(data_dir=str(tmp_path), train_list=str(train), **kw)  # the published num_classes default
    got = np.asarray(dm.class_counts)
    assert len(got) == num_classes and got.max() == n_max and got.min() == n_min
    expected = np.zeros(num_classes, dtype=np.int64)
    expected[perm] = counts
    np.testing.assert_array_equal(got, expected)
    many, few = int((expected > 100).sum()), int((expected < 20).sum())
    assert dm.group_sizes("threshold") == {"many": many, "medium": num_classes - many - few, "few": few}
