"""ImageNet-LT (Liu et al., "Large-Scale Long-Tailed Recognition in an Open World", CVPR 2019)
and ImageNet-100-LT (Jiang et al., "Self-Damaging Contrastive Learning", ICML 2021).

Both are list files over the ImageNet-2012 image folders (``train/<wnid>/...`` and
``val/<wnid>/...``); pass the folder holding ``train/`` and ``val/`` as ``data_dir`` and the
published lists (``shared/splits/imagenet_lt``, ``shared/splits/imagenet100_lt``). Class names
are the wnids (the folder of each class's first training image). Nothing is downloaded.
"""

from __future__ import annotations

from typing import Literal, Sequence

from ltcl_lightning.data.listfile import ListFileDataModule
from ltcl_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, View


class ImageNetLTDataModule(ListFileDataModule):
    """ImageNet-LT: 1,000 classes, 115,846 training images (1,280 ... 5 per class), 20,000 val
    (``ImageNet_LT_val.txt``, drawn from the ImageNet train folder), 50,000 test
    (``ImageNet_LT_test.txt``, the ImageNet val images, 50 per class). Groups: ``threshold``.
    """

    default_num_classes = 1000

    def __init__(
        self,
        data_dir: str,
        train_list: str,
        val_list: str | None = None,
        test_list: str | None = None,
        fewshot_list: str | None = None,
        num_classes: int = 1000,
        image_size: int = 224,
        verify: bool = False,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        train_views: Sequence[View] = ("simclr", "simclr"),
        eval_view: View = "eval",
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        drop_last: bool = False,
        persistent_workers: bool = False,
        pin_memory: bool = True,
        seed: int = 0,
        sampler: Literal["instance", "class_balanced", "sqrt"] = "instance",
    ):
        """See :class:`~ltcl_lightning.data.listfile.ListFileDataModule` for the arguments;
        ``fewshot_list``: e.g. ``imageNet_sub_balance_train_0.01.txt`` (12 per class)."""
        super().__init__(
            data_dir=data_dir, train_list=train_list, val_list=val_list, test_list=test_list,
            fewshot_list=fewshot_list, num_classes=num_classes, image_size=image_size, verify=verify,
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
            train_views=train_views, eval_view=eval_view, mean=mean, std=std, drop_last=drop_last,
            persistent_workers=persistent_workers, pin_memory=pin_memory, seed=seed, sampler=sampler,
        )


class ImageNet100LTDataModule(ListFileDataModule):
    """ImageNet-100-LT (SDCLR): 100 ImageNet classes; ``imageNet_100_LT_train.txt`` (12,205
    images, 1,280 ... 6; Many/Medium/Few 39/48/13 under ``threshold``) or the balanced
    ``imageNet_100_BL_train.txt`` as ``train_list``; ``ImageNet_100_test.txt`` (5,000) as
    ``test_list``; ``imageNet_100_sub_balance_train_0.01.txt`` (12 per class) as
    ``fewshot_list`` for the few-shot linear probe.

    Labels follow the SDCLR lists (not the wnid order), so class ``c`` is whatever the lists
    call ``c``; the names (wnids) come from the training list's folders.
    """

    default_num_classes = 100

    def __init__(
        self,
        data_dir: str,
        train_list: str,
        val_list: str | None = None,
        test_list: str | None = None,
        fewshot_list: str | None = None,
        num_classes: int = 100,
        image_size: int = 224,
        verify: bool = False,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        train_views: Sequence[View] = ("simclr", "simclr"),
        eval_view: View = "eval",
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        drop_last: bool = False,
        persistent_workers: bool = False,
        pin_memory: bool = True,
        seed: int = 0,
        sampler: Literal["instance", "class_balanced", "sqrt"] = "instance",
    ):
        """See :class:`~ltcl_lightning.data.listfile.ListFileDataModule` for the arguments."""
        super().__init__(
            data_dir=data_dir, train_list=train_list, val_list=val_list, test_list=test_list,
            fewshot_list=fewshot_list, num_classes=num_classes, image_size=image_size, verify=verify,
            batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
            train_views=train_views, eval_view=eval_view, mean=mean, std=std, drop_last=drop_last,
            persistent_workers=persistent_workers, pin_memory=pin_memory, seed=seed, sampler=sampler,
        )
