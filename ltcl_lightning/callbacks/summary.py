"""Prints the long-tail table (overall / Many / Medium / Few / spread) at the end of fit and test."""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.utilities import rank_zero_only

from ltcl_lightning.longtail import format_table


class LongTailSummary(pl.Callback):
    """At the end of ``fit`` prints last- and best-epoch validation numbers; at the end of
    ``test`` the test numbers (accuracies in %)."""

    @rank_zero_only
    def on_fit_end(self, trainer, pl_module) -> None:
        ev = getattr(pl_module, "last_eval", {})
        rows = {}
        if "val" in ev:
            rows[f"val last (epoch {ev['val']['epoch']})"] = ev["val"]
        if "val_best" in ev:
            rows[f"val best (epoch {ev['val_best']['epoch']})"] = ev["val_best"]
        if rows:
            print("\nLong-tail accuracy (%), grouping=" + str(getattr(pl_module, "grouping", "?")))
            print(format_table(rows), flush=True)

    @rank_zero_only
    def on_test_end(self, trainer, pl_module) -> None:
        ev = getattr(pl_module, "last_eval", {})
        if "test" in ev:
            print("\nLong-tail test accuracy (%), grouping=" + str(getattr(pl_module, "grouping", "?")))
            print(format_table({"test": ev["test"]}), flush=True)
