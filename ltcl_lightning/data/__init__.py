from ltcl_lightning.data.base import IndexedDataset, LongTailDataModule
from ltcl_lightning.data.cifar import CIFAR10LTDataModule, CIFAR100LTDataModule
from ltcl_lightning.data.digits import DigitsLTDataModule

__all__ = ["LongTailDataModule", "IndexedDataset", "CIFAR10LTDataModule", "CIFAR100LTDataModule", "DigitsLTDataModule"]
