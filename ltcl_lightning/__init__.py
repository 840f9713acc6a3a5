"""ltcl_lightning: long-tailed contrastive learning in PyTorch Lightning."""

__version__ = "0.1.0"
