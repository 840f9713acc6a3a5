"""List-file parsing: the published lists, an independent line-by-line reference, and every bad input."""

from __future__ import annotations

import numpy as np
import pytest

from ltcl_lightning.data.imagenet import ImageNet100LTDataModule, ImageNetLTDataModule
from ltcl_lightning.data.listfile import ListFileDataset, read_list_file


def _reference_parse(path):
    """Line by line with str.rsplit: the slow, obviously-correct parser."""
    paths, labels = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                p, lab = line.strip().rsplit(None, 1)
                paths.append(p)
                labels.append(int(lab))
    return paths, np.asarray(labels)


def test_imagenet_lt_test_list(splits_dir):
    lf = read_list_file(splits_dir / "imagenet_lt" / "ImageNet_LT_test.txt")
    counts = np.bincount(lf.labels)
    assert len(lf) == 50_000 and len(counts) == 1000
    assert (counts == 50).all()
    ref_paths, ref_labels = _reference_parse(splits_dir / "imagenet_lt" / "ImageNet_LT_test.txt")
    np.testing.assert_array_equal(lf.labels, ref_labels)
    assert [lf.path(i) for i in range(len(lf))] == ref_paths


def test_imagenet100_lt_train_list(splits_dir):
    dm = ImageNet100LTDataModule(
        data_dir="unused",
        train_list=str(splits_dir / "imagenet100_lt" / "imageNet_100_LT_train.txt"),
        test_list=str(splits_dir / "imagenet100_lt" / "ImageNet_100_test.txt"),
    )
    counts = np.asarray(dm.class_counts)
    assert counts.sum() == 12_205 and len(counts) == 100
    assert counts.max() == 1280 and counts.min() == 6
    assert dm.group_sizes("threshold") == {"many": 39, "medium": 48, "few": 13}
    # the wnid of each class: the folder of its images, identical for every image of the class
    ref_paths, ref_labels = _reference_parse(dm.train_list)
    first = {}
    for p, c in zip(ref_paths, ref_labels):
        first.setdefault(int(c), p.split("/")[1])
    assert dm.class_names == [first[c] for c in range(100)]
    # the test list (5,000 images, 50 per class) has the same classes
    assert np.bincount(dm.test_file.labels).tolist() == [50] * 100


def test_inat_val_list(splits_dir):
    path = splits_dir / "inaturalist18" / "iNaturalist18_val.txt"
    lf = read_list_file(path)
    counts = np.bincount(lf.labels)
    assert len(lf) == 24_426 and len(counts) == 8142 and (counts == 3).all()
    ref_paths, ref_labels = _reference_parse(path)
    np.testing.assert_array_equal(lf.labels, ref_labels)
    assert lf.path(len(lf) - 1) == ref_paths[-1]


def test_fewshot_and_val_lists(splits_dir):
    """The 1% subsets hold 12 images of every class; the ImageNet-LT val list 20 per class."""
    for folder, name, classes in (
        ("imagenet_lt", "imageNet_sub_balance_train_0.01.txt", 1000),
        ("imagenet100_lt", "imageNet_100_sub_balance_train_0.01.txt", 100),
    ):
        counts = np.bincount(read_list_file(splits_dir / folder / name).labels)
        assert counts.tolist() == [12] * classes
    val = read_list_file(splits_dir / "imagenet_lt" / "ImageNet_LT_val.txt")
    assert np.bincount(val.labels).tolist() == [20] * 1000


def test_line_variants(tmp_path):
    """CRLF, a BOM, blank lines, paths with spaces, tabs, no final newline: same entries."""
    p = tmp_path / "l.txt"
    p.write_bytes(b"\xef\xbb\xbfa/x 1.jpg 3\r\n\r\nb/y.jpg\t12\n  c/z.jpg   0  \n\nd/w.jpg 7")
    lf = read_list_file(p)
    assert [lf.path(i) for i in range(len(lf))] == ["a/x 1.jpg", "b/y.jpg", "c/z.jpg", "d/w.jpg"]
    assert lf.labels.tolist() == [3, 12, 0, 7]
    assert lf.line_numbers.tolist() == [1, 3, 4, 6]
    p.write_text("x/a.jpg 123456789012345678\ny 0\nz.jpg -3\nw.jpg 7 \t 8\n")
    lf = read_list_file(p)
    assert lf.labels.tolist() == [123456789012345678, 0, -3, 8]
    assert [lf.path(i) for i in range(len(lf))] == ["x/a.jpg", "y", "z.jpg", "w.jpg 7"]


# ----- bad input ------------------------------------------------------------------------------------
def test_missing_and_unreadable_list(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_list_file(tmp_path / "nope.txt")
    with pytest.raises(OSError, match="could not be read"):
        read_list_file(tmp_path)  # a directory
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(ValueError, match="no entries"):
        read_list_file(tmp_path / "empty.txt")


@pytest.mark.parametrize(
    "bad_line", ["train/a.jpg", "train/a.jpg x7", "train/a.jpg 3.0", "train/a.jpg 1e3", " 5", "train/a.jpg -", "a.jpg 99999999999999999999"]
)
def test_malformed_line_names_line_and_content(tmp_path, bad_line):
    p = tmp_path / "l.txt"
    p.write_text(f"ok/1.jpg 0\nok/2.jpg 1\n{bad_line}\nok/3.jpg 2\n")
    with pytest.raises(ValueError, match="line 3: malformed line") as err:
        read_list_file(p)
    assert repr(bad_line.strip()) in str(err.value)


def _lists(tmp_path, train, test):
    tr, te = tmp_path / "train.txt", tmp_path / "test.txt"
    tr.write_text("".join(f"train/c{c}/{i}.JPEG {c}\n" for i, c in enumerate(train)))
    te.write_text("".join(f"val/c{c}/{i}.JPEG {c}\n" for i, c in enumerate(test)))
    return str(tr), str(te)


def test_label_outside_range(tmp_path):
    tr, te = _lists(tmp_path, [0, 1, 2, 5], [0, 1, 2])
    dm = ImageNetLTDataModule(data_dir=str(tmp_path), train_list=tr, test_list=te, num_classes=4)
    with pytest.raises(ValueError, match=r"outside \[0, 4\).*label 5 at line 4"):
        _ = dm.class_counts
    tr, te = _lists(tmp_path, [0, -1, 1], [0, 1])
    with pytest.raises(ValueError, match=r"label -1 at line 2"):
        _ = ImageNetLTDataModule(data_dir=str(tmp_path), train_list=tr, test_list=te, num_classes=2).class_counts


def test_class_without_training_image(tmp_path):
    tr, te = _lists(tmp_path, [0, 1, 3], [0, 1, 3])
    with pytest.raises(ValueError, match=r"1 of 4 classes have no training image .*first: \[2\]"):
        ImageNetLTDataModule(data_dir=str(tmp_path), train_list=tr, test_list=te, num_classes=4).setup("test")
    # the published default (1000) on a 3-class list names the right count
    tr, te = _lists(tmp_path, [0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="pass num_classes=3"):
        _ = ImageNetLTDataModule(data_dir=str(tmp_path), train_list=tr, test_list=te).class_counts


def test_train_and_test_class_sets_differ(tmp_path):
    tr, te = _lists(tmp_path, [0, 1, 2, 2], [0, 1])
    dm = ImageNetLTDataModule(data_dir=str(tmp_path), train_list=tr, test_list=te, num_classes=3)
    with pytest.raises(ValueError, match=r"different class sets: 1 classes only in training \(first: \[2\]\)"):
        dm.setup("test")


def test_missing_images_verify_at_setup(imagenet_lt_folder, tmp_path):
    f = imagenet_lt_folder
    lines = open(f["train_list"]).read().splitlines()
    lines[1] = lines[1].replace(".JPEG", "_gone.JPEG")
    lines[4] = "train/n99999999/lost.JPEG " + lines[4].split()[1]
    bad = tmp_path / "train.txt"
    bad.write_text("\n".join(lines) + "\n")
    dm = ImageNetLTDataModule(
        data_dir=f["data_dir"], train_list=str(bad), test_list=f["test_list"], num_classes=f["num_classes"], image_size=32, verify=True
    )
    with pytest.raises(FileNotFoundError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert msg.startswith(f"2 of {len(lines)} images listed in")
    assert "(line 2)" in msg and "train/n99999999/lost.JPEG' (line 5)" in msg


def test_missing_image_at_first_access(imagenet_lt_folder, tmp_path):
    f = imagenet_lt_folder
    lines = open(f["test_list"]).read().splitlines()
    lines[2] = "val/n01440764/absent.JPEG 0"
    bad = tmp_path / "test.txt"
    bad.write_text("\n".join(lines) + "\n")
    dm = ImageNetLTDataModule(
        data_dir=f["data_dir"], train_list=f["train_list"], test_list=str(bad), num_classes=f["num_classes"], image_size=32, verify=False
    )
    dm.setup("test")  # no check at set-up without verify
    ds = dm.datasets["test"]
    ds[0]
    with pytest.raises(FileNotFoundError, match=r"absent\.JPEG' \(listed in .*test\.txt, line 3\)"):
        ds[2]


def test_list_dataset_reads_jpeg(imagenet_lt_folder):
    lf = read_list_file(imagenet_lt_folder["train_list"])
    ds = ListFileDataset(imagenet_lt_folder["data_dir"], lf)
    img, label = ds[len(ds) - 1]
    assert img.mode == "RGB" and img.size == (48, 40) and label == int(lf.labels[-1])


def test_16bit_png_decodes_to_the_right_gray_levels(tmp_path):
    # before: PIL's convert("RGB") clipped the 16-bit values: every pixel 255 (all white)
    from PIL import Image

    from ltcl_lightning.data.listfile import pil_loader

    values = np.array([[0, 257, 25700], [32896, 51400, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    img = np.asarray(pil_loader(str(tmp_path / "deep.png")))
    assert img.shape == (2, 3, 3)
    np.testing.assert_array_equal(img[..., 0], [[0, 1, 100], [128, 200, 255]])
    assert (img == img[..., :1]).all()  # gray in all three channels


def test_truncated_jpeg_names_the_file(imagenet_lt_folder, tmp_path):
    from ltcl_lightning.data.listfile import pil_loader

    lf = read_list_file(imagenet_lt_folder["train_list"])
    src = f"{imagenet_lt_folder['data_dir']}/{lf.path(0)}"
    data = open(src, "rb").read()
    cut = tmp_path / "cut.JPEG"
    cut.write_bytes(data[: len(data) // 2])
    # before: OSError('Truncated File Read') without the file's name
    with pytest.raises(OSError, match=r"cut\.JPEG' cannot be decoded .*truncated or not an image"):
        pil_loader(str(cut))
