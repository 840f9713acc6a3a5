"""ImageNet-LT (Liu et al., "Large-Scale Long-Tailed Recognition in an Open World", CVPR 2019)
and ImageNet-100-LT (Jiang et al., "Self-Damaging Contrastive Learning", ICML 2021).

Both are list files over the ImageNet-2012 image folders (``train/<wnid>/...`` and
``val/<wnid>/...``); pass the folder holding ``train/`` and ``val/`` as ``data_dir`` and the
published lists (shipped with the package, by name: ``imagenet_lt/ImageNet_LT_test``,
``imagenet100_lt/imageNet_100_LT_train``, ...; see :mod:`ltcl_lightning.splits`). Class names are
the wnids (the folder of each class's first training image). Nothing is downloaded.
"""

from __future__ import annotations

from ltcl_lightning.data.listfile import ListFileDataModule


class ImageNetLTDataModule(ListFileDataModule):
    """ImageNet-LT: 1,000 classes, 115,846 training images (1,280 ... 5 per class), 20,000 val
    (``ImageNet_LT_val.txt``, drawn from the ImageNet train folder), 50,000 test
    (``ImageNet_LT_test.txt``, the ImageNet val images, 50 per class). Groups: ``threshold``.
    """

    default_num_classes = 1000

    def __init__(self, *args, num_classes: int = 1000, **kwargs):
        """See :class:`~ltcl_lightning.data.listfile.ListFileDataModule` for the arguments
        (``data_dir``, ``train_list``, ...; the loader ones are
        :class:`~ltcl_lightning.data.base.LongTailDataModule`'s); ``fewshot_list``: e.g.
        ``imageNet_sub_balance_train_0.01.txt`` (12 per class)."""
        super().__init__(*args, num_classes=num_classes, **kwargs)  # type: ignore[misc]


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

    def __init__(self, *args, num_classes: int = 100, **kwargs):
        """See :class:`~ltcl_lightning.data.listfile.ListFileDataModule` for the arguments
        (the loader ones are :class:`~ltcl_lightning.data.base.LongTailDataModule`'s)."""
        super().__init__(*args, num_classes=num_classes, **kwargs)  # type: ignore[misc]
