"""The image-folder fixtures write real JPEGs that match their list files."""

from pathlib import Path

from fixtures_images import IMAGENET_LT_TRAIN_COUNTS, INAT_TRAIN_COUNTS
from PIL import Image


def _lines(path):
    return [line.rsplit(" ", 1) for line in Path(path).read_text().splitlines()]


def test_imagenet_lt_folder_is_real_jpeg(imagenet_lt_folder):
    rows = _lines(imagenet_lt_folder["train_list"])
    assert len(rows) == sum(IMAGENET_LT_TRAIN_COUNTS)
    with Image.open(Path(imagenet_lt_folder["data_dir"]) / rows[0][0]) as im:
        assert im.format == "JPEG" and im.size == (48, 40)
    test = _lines(imagenet_lt_folder["test_list"])
    assert all(rel.startswith("val/") for rel, _ in test)
    assert len(test) == 3 * imagenet_lt_folder["num_classes"]


def test_inat_folder_json_matches_list(inat_folder):
    import json

    rows = _lines(inat_folder["train_list"])
    ann = json.loads(Path(inat_folder["train_json"]).read_text())
    assert len(ann["images"]) == len(rows) == sum(INAT_TRAIN_COUNTS)
    by_id = {im["id"]: im["file_name"] for im in ann["images"]}
    pairs = sorted((by_id[a["image_id"]], str(a["category_id"])) for a in ann["annotations"])
    assert pairs == sorted((rel, lab) for rel, lab in rows)
    for rel, _ in rows[:3]:
        with Image.open(Path(inat_folder["data_dir"]) / rel) as im:
            assert im.format == "JPEG"
