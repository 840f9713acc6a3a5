"""The long-tail vocabulary: Many / Medium / Few groups, how classes fall into them, group means
and the printed summary table. A leaf (torch and numpy only): data, metrics, methods, callbacks
and reports import it, so none of them imports another for the words.

Specification: ``data_and_eval.md`` section 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch

Grouping = Literal["threshold", "thirds"]

#: Group ids used everywhere (metrics, reports): 0 = Many/Major, 1 = Medium/Moderate, 2 = Few/Minor.
GROUP_NAMES: tuple[str, str, str] = ("many", "medium", "few")

#: The evaluation numbers of a long-tail table, in print order.
SUMMARY_KEYS: tuple[str, ...] = ("acc", *GROUP_NAMES, "group_std")


def class_groups(counts: Sequence[int] | torch.Tensor, grouping: Grouping = "threshold") -> torch.Tensor:
    """Group id (0 Many, 1 Medium, 2 Few) of every class from its training count.

    threshold (OLTR): Many > 100, Medium 20..100, Few < 20.
    thirds (SDCLR/BCL): sort by count (ties by class index); Few/Minor = smallest floor(C/3),
    Medium/Moderate = next floor(C/3), Many/Major = the rest (100 classes: 34/33/33).
    """
    counts_t = torch.as_tensor(counts, dtype=torch.long).cpu()
    if grouping == "threshold":
        groups = torch.full_like(counts_t, 1)
        groups[counts_t > 100] = 0
        groups[counts_t < 20] = 2
        return groups
    if grouping == "thirds":
        c = len(counts_t)
        third = c // 3
        # ascending by count, ties by class index (stable sort on the counts)
        order = torch.as_tensor(np.argsort(counts_t.numpy(), kind="stable"))
        groups = torch.zeros_like(counts_t)
        groups[order[:third]] = 2
        groups[order[third : 2 * third]] = 1
        return groups
    raise ValueError(f"unknown grouping {grouping!r}: expected 'threshold' or 'thirds'")


def group_means(values, groups, valid=None) -> dict[str, float]:
    """Mean of a per-class quantity within each group, over the ``valid`` classes (default: all);
    a group without a valid class is left out."""
    values = values.detach().cpu() if torch.is_tensor(values) else torch.as_tensor(np.asarray(values, dtype=np.float64))
    groups = torch.as_tensor(groups).cpu()
    valid = torch.ones_like(groups, dtype=torch.bool) if valid is None else torch.as_tensor(valid).cpu()
    return {name: float(values[sel].mean()) for g, name in enumerate(GROUP_NAMES) if (sel := valid & (groups == g)).any()}


def format_table(rows: Mapping[str, Mapping]) -> str:
    """The overall / Many / Medium / Few / std table (fractions printed as %), one row per entry."""
    head = f"{'':<22}" + "".join(f"{c:>10}" for c in ["overall", *GROUP_NAMES, "std"])
    lines = [head, "-" * len(head)]
    for name, res in rows.items():
        lines.append(f"{name:<22}" + "".join(f"{100 * float(res[c]):>10.2f}" for c in SUMMARY_KEYS))
    return "\n".join(lines)
