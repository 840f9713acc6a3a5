"""The long-tail vocabulary leaf (groups, group means, the table) and the base's group buffer."""

import math

import numpy as np
import torch

from ltcl_lightning.longtail import GROUP_NAMES, class_groups, format_table, group_means
from ltcl_lightning.methods.ce import CrossEntropy


def test_group_means_by_hand_and_empty_groups_left_out():
    values = torch.tensor([1.0, 3.0, 10.0, float("nan"), 7.0])
    groups = torch.tensor([0, 0, 1, 1, 1])
    assert group_means(values, groups, valid=torch.isfinite(values)) == {"many": 2.0, "medium": 8.5}
    every = group_means(values, groups)  # default: every class counts (a NaN shows)
    assert every["many"] == 2.0 and math.isnan(every["medium"]) and "few" not in every
    assert group_means(np.array([4.0, 6.0]), [2, 2]) == {"few": 5.0}


def test_format_table_rows_in_percent():
    row = {"acc": 0.5, "many": 0.75, "medium": 0.5, "few": 0.125, "group_std": 0.25}
    lines = format_table({"test": row}).splitlines()
    assert lines[0].split() == ["overall", *GROUP_NAMES, "std"]
    assert lines[2].split() == ["test", "50.00", "75.00", "50.00", "12.50", "25.00"]


def test_base_holds_groups_and_recomputes_them_when_counts_load():
    m = CrossEntropy(6, backbone="tiny", grouping="thirds", class_counts=[50, 40, 30, 20, 10, 5])
    assert m.class_group.tolist() == [0, 0, 1, 1, 2, 2]
    assert "class_group" not in m.state_dict()  # derived, so checkpoints are unchanged
    fresh = CrossEntropy(6, backbone="tiny", grouping="thirds")  # counts unknown until data / checkpoint
    fresh.load_state_dict(m.state_dict())
    assert torch.equal(fresh.class_group, class_groups(m.class_counts, "thirds"))
    assert fresh.class_group.tolist() == [0, 0, 1, 1, 2, 2]
