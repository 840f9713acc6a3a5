"""iNaturalist 2018 (Van Horn et al., "The iNaturalist Species Classification and Detection
Dataset", CVPR 2018): 8,142 species, 437,513 training images (1,000 ... 2 per class), 24,426
validation images (3 per class). The long-tailed papers (Balanced CL, ProCo) report on val.

Two ways to name the images, both relative to ``data_dir`` (the folder holding
``train_val2018/``):

- the txt lists the long-tail repositories ship (``iNaturalist18_train.txt``,
  ``iNaturalist18_val.txt``: ``train_val2018/<supercategory>/<id>/<hash>.jpg <id>``), or
- the official COCO-style annotations of the raw download (``train2018.json``,
  ``val2018.json``: ``images`` with ``id``/``file_name``, ``annotations`` with
  ``image_id``/``category_id``, ``categories`` with ``id``/``name``), so no third-party list is
  needed. The label of an image is its ``category_id`` (the txt lists use the same ids).

Class names are the category names when a JSON file is given, else ``<supercategory>/<id>``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from ltcl_lightning.data.listfile import ListFile, ListFileDataModule
from ltcl_lightning.data.transforms import INAT_MEAN, INAT_STD


def read_coco_annotations(path: str, what: str = "annotation file") -> tuple[ListFile, dict[int, str]]:
    """Images, labels and category names of an iNat-style COCO JSON file, in ``images`` order."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{what} {path!r} does not exist. Pass the path to the iNat 2018 annotation file "
            "(train2018.json / val2018.json from the official download)."
        ) from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{what} {path!r} is not valid JSON ({err}); expected iNat 2018 train2018.json/val2018.json") from None
    except OSError as err:
        raise OSError(f"{what} {path!r} could not be read: {err}") from None
    if not isinstance(data, dict) or not all(k in data for k in ("images", "annotations", "categories")):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(
            f"{what} {path!r} is not a COCO-style annotation file: expected the keys 'images', "
            f"'annotations' and 'categories', found {keys}."
        )
    try:
        files = [im["file_name"] for im in data["images"]]
        image_ids = np.fromiter((im["id"] for im in data["images"]), dtype=np.int64, count=len(files))
        ann_image = np.fromiter((a["image_id"] for a in data["annotations"]), dtype=np.int64, count=len(data["annotations"]))
        ann_label = np.fromiter((a["category_id"] for a in data["annotations"]), dtype=np.int64, count=len(data["annotations"]))
        names = {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]}
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(
            f"{what} {path!r}: an entry lacks a field ({err!r}); images need 'id' and 'file_name', "
            "annotations 'image_id' and 'category_id', categories 'id' and 'name'."
        ) from None
    if len(files) == 0:
        raise ValueError(f"{what} {path!r} lists no images")
    order = np.argsort(image_ids, kind="stable")
    sorted_ids = image_ids[order]
    if (sorted_ids[1:] == sorted_ids[:-1]).any():
        dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
        raise ValueError(f"{what} {path!r} repeats image ids (first: {dup[:5].tolist()})")
    pos = np.searchsorted(sorted_ids, ann_image)
    unknown = (pos >= len(sorted_ids)) | (sorted_ids[np.minimum(pos, len(sorted_ids) - 1)] != ann_image)
    if unknown.any():
        raise ValueError(
            f"{what} {path!r}: {int(unknown.sum())} annotations name an image id that is not in 'images' "
            f"(first: {ann_image[unknown][:5].tolist()})"
        )
    per_image = np.bincount(order[pos], minlength=len(files))
    if (per_image != 1).any():
        i = int(np.flatnonzero(per_image != 1)[0])
        raise ValueError(
            f"{what} {path!r}: every image needs exactly one annotation (its species), but "
            f"{int((per_image == 0).sum())} images have none and {int((per_image > 1).sum())} have several "
            f"(first: image id {int(image_ids[i])}, {files[i]!r}). The test2018.json of the "
            "challenge carries no labels and cannot be used for evaluation."
        )
    labels = np.empty(len(files), dtype=np.int64)
    labels[order[pos]] = ann_label
    return ListFile.from_pairs(path, files, labels, unit="image"), names  # type: ignore[arg-type]  # an int64 array


class INaturalist2018DataModule(ListFileDataModule):
    """iNaturalist 2018 from txt lists or the official JSON annotations (see the module doc).

    ``train_list`` or ``train_json`` (one of them), ``val_list`` or ``val_json``; ``test_list``
    defaults to the validation images. Normalisation: the iNat mean / std.
    """

    default_num_classes = 8142
    class_name_depth = 2

    def __init__(
        self,
        data_dir: str,
        train_list: str | None = None,
        val_list: str | None = None,
        test_list: str | None = None,
        train_json: str | None = None,
        val_json: str | None = None,
        fewshot_list: str | None = None,
        num_classes: int = 8142,
        *,
        mean: Sequence[float] | None = INAT_MEAN,
        std: Sequence[float] | None = INAT_STD,
        **kwargs,
    ):
        """
        Args:
            train_list / train_json: the training images as a txt list or as the official
                ``train2018.json`` (exactly one).
            val_list / val_json: the validation images likewise (at most one; the test stage
                uses them too unless ``test_list`` is given).
            mean, std: normalisation, the iNat 2018 statistics.
            See :class:`~ltcl_lightning.data.listfile.ListFileDataModule` for the rest
            (``image_size``, ``verify``, ...; forwarded through ``**kwargs`` with its defaults,
            the loader ones being :class:`~ltcl_lightning.data.base.LongTailDataModule`'s).
        """
        if (train_list is None) == (train_json is None):
            raise ValueError(
                "pass exactly one of train_list (a 'path label' txt list) and train_json (train2018.json); "
                f"got train_list={train_list!r}, train_json={train_json!r}"
            )
        if val_list is not None and val_json is not None:
            raise ValueError(f"pass val_list or val_json, not both (got {val_list!r} and {val_json!r})")
        self.train_json = train_json
        self.val_json = val_json
        self._category_names: dict[int, str] = {}
        super().__init__(
            data_dir=data_dir,
            train_list=train_list or train_json,  # type: ignore[arg-type]  # one of them is given (checked above)
            val_list=val_list or val_json,
            test_list=test_list,
            fewshot_list=fewshot_list,
            num_classes=num_classes,
            mean=mean,
            std=std,
            **kwargs,
        )

    def read_list(self, path: str, what: str) -> ListFile:
        if os.fspath(path).lower().endswith(".json"):
            lf, names = read_coco_annotations(path, what)
            if os.fspath(path) == os.fspath(self.train_list):
                self._category_names = names
            return lf
        return super().read_list(path, what)

    def class_names_list(self) -> list[str]:
        names = super().class_names_list()
        for c, name in self._category_names.items():
            if 0 <= c < self.num_classes:
                names[c] = name
        return names
