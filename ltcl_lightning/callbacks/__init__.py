from ltcl_lightning.callbacks.summary import LongTailSummary

__all__ = ["LongTailSummary"]
