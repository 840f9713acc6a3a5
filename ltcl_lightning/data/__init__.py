"""Long-tailed datamodules; every batch is ``(index, views, target)``."""

from ltcl_lightning.data.base import IndexedDataset, LongTailDataModule
from ltcl_lightning.data.boosted import BoostedCIFAR10LTDataModule, BoostedCIFAR100LTDataModule
from ltcl_lightning.data.cifar import CIFAR10LTDataModule, CIFAR100LTDataModule
from ltcl_lightning.data.digits import DigitsLTDataModule
from ltcl_lightning.data.imagenet import ImageNet100LTDataModule, ImageNetLTDataModule
from ltcl_lightning.data.inaturalist import INaturalist2018DataModule

__all__ = [
    "LongTailDataModule",
    "IndexedDataset",
    "CIFAR10LTDataModule",
    "CIFAR100LTDataModule",
    "BoostedCIFAR10LTDataModule",
    "BoostedCIFAR100LTDataModule",
    "DigitsLTDataModule",
    "ImageNetLTDataModule",
    "ImageNet100LTDataModule",
    "INaturalist2018DataModule",
]
