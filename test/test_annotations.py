"""The one ground-truth parser that the training and evaluation loaders share."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cract_core.annotations import read_box_rows, read_flags
from cract_core.eval.datasets import LayoutError, read_boxes as eval_read_boxes
from cract_core.train.datasets import DatasetError, read_boxes as train_read_boxes


def test_rows_flags_and_each_sides_error_type(tmp_path: Path) -> None:
    gt = tmp_path / "groundtruth.txt"
    gt.write_text("1,2,3,4\n\n5\t6 7,8\nNaN,NaN,NaN,NaN\n")
    rows = read_box_rows(gt)
    assert rows.dtype == np.float64 and rows.shape == (3, 4)
    assert rows[:2].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]] and np.isnan(rows[2]).all()
    assert train_read_boxes(gt).dtype == np.float32
    np.testing.assert_array_equal(eval_read_boxes(gt), rows)
    gt.write_text("1,2,3,4\n1,2,3\n")
    with pytest.raises(DatasetError, match=r"groundtruth.txt:2: expected 4 numbers, got 3"):
        train_read_boxes(gt)
    with pytest.raises(LayoutError, match=r"groundtruth.txt:2: expected 4 numbers, got 3"):
        eval_read_boxes(gt)
    flags = tmp_path / "full_occlusion.txt"
    flags.write_text("0,1,1,0")
    assert read_flags(flags).tolist() == [0, 1, 1, 0]
    flags.write_text("0\n1\n")
    assert read_flags(flags).tolist() == [0, 1]
    assert read_flags(tmp_path / "absent.label") is None
