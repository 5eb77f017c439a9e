"""benchmarks/bench_regressor_bins.py: the per-input-IoU-bin table (by hand) and its measurement on
real frames (the ground truth carried into search-crop pixels, where R's boxes live)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from cract_core.datasets import load_folder_sequence

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_regressor_bins", ROOT / "benchmarks" / "bench_regressor_bins.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bin_table_by_hand() -> None:
    bench = load_bench()
    # (input IoU, refined IoU, overlap of the two boxes)
    rows = np.array([(0.2, 0.25, 0.9), (0.6, 0.5, 0.85), (0.6, 0.7, 0.95), (0.9, 0.8, 0.7)])
    table = {r["bin"]: r for r in bench.bin_table(rows, [0.9])}
    assert sorted(table) == ["0.00-0.30", "0.50-0.70", "0.85-1.00", "all"]
    low, mid, high, every = table["0.00-0.30"], table["0.50-0.70"], table["0.85-1.00"], table["all"]
    assert low["frames"] == 1 and low["gain"] == pytest.approx(0.05) and low["better"] == 1.0
    assert low["gated"] == [pytest.approx(0.05)]  # overlap 0.9 >= 0.9: the correction is kept
    assert mid["frames"] == 2 and mid["gain"] == pytest.approx(0.0) and mid["better"] == 0.5
    assert mid["gated"] == [pytest.approx(0.05)]  # (0 for the refused 0.85 overlap + 0.1) / 2
    assert high["gain"] == pytest.approx(-0.1) and high["gated"] == [pytest.approx(0.0)]
    assert every["frames"] == 4 and every["iou_in"] == pytest.approx(0.575) and every["iou_out"] == pytest.approx(0.5625)
    assert every["gated"] == [pytest.approx(0.0375)]


def test_measure_on_real_frames(shared_sequence) -> None:
    bench = load_bench()
    seq = load_folder_sequence(shared_sequence("uav_car10")).head(20)
    rows = bench.measure(ROOT / "config" / "model" / "cract_nanotrack.yaml", None, [seq], threads=1)
    assert rows.shape == (19, 3) and np.all((rows >= 0) & (rows <= 1))
    # the car is followed closely at the start: the chosen box overlaps the ground truth carried
    # into crop pixels (a wrong mapping would put it elsewhere in the crop)
    assert rows[:, 0].mean() > 0.6
    # R moves boxes (a no-op would overlap its input exactly), by less than a box
    assert 0.3 < rows[:, 2].mean() < 0.999
