"""Where the proposals alone used to fail on unseen footage: a target leaving the image through an
edge and coming back, and a target jumping further than its search region.  Scenes are composed
from real frames: a car cut from uav_car10 (46 x 38 px, aerial) moved over a panning view of
uav_boat1, so the ground truth is known to the pixel."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cract_core.config import default_config_path, load_config
from cract_core.eval.metrics import frame_iou
from cract_core.tracker import Tracker, TrackState

SIZE = (640, 360)


def compose(car: np.ndarray, background: np.ndarray, path: list[tuple[float, float]]) -> tuple[list, np.ndarray]:
    """Frames with the car's centre on ``path`` over a background panning 1 px a frame; the ground
    truth is the visible part of the car (NaN while it is wholly outside)."""
    frames, boxes = [], []
    h, w = car.shape[:2]
    for i, (cx, cy) in enumerate(path):
        image = np.roll(background, i, axis=1).copy()
        x0, y0 = int(round(cx - w / 2)), int(round(cy - h / 2))
        x1, y1 = max(x0, 0), max(y0, 0)
        x2, y2 = min(x0 + w, SIZE[0]), min(y0 + h, SIZE[1])
        if x2 > x1 and y2 > y1:
            image[y1:y2, x1:x2] = car[y1 - y0:y2 - y0, x1 - x0:x2 - x0]
            boxes.append([x1, y1, x2 - x1, y2 - y1])
        else:
            boxes.append([np.nan] * 4)
        frames.append(image)
    return frames, np.array(boxes, dtype=np.float64)


@pytest.fixture(scope="module")
def scene_parts(request):
    from conftest import require_shared_sequences

    root: Path = require_shared_sequences()
    car = cv2.imread(str(root / "uav_car10" / "img" / "000001.jpg"))[278:316, 636:682].copy()  # its first box
    background = cv2.resize(cv2.imread(str(root / "uav_boat1" / "img" / "000001.jpg")), SIZE)
    return car, background


def track(frames: list, first_box: np.ndarray) -> list:
    with Tracker.from_config(load_config(default_config_path()), device="cpu") as tracker:
        results = [tracker.init(frames[0], first_box)]
        results += [tracker.track(frame) for frame in frames[1:]]
    return results


def test_target_leaves_through_the_top_edge_and_comes_back_fast(scene_parts) -> None:
    """Up and out of the top (17 frames), wholly outside for 9, back in at 25 px a frame: TRACKING
    while it is in view, not TRACKING while it is out, on it again within 2 frames of its return."""
    car, background = scene_parts
    ys = list(np.linspace(180, 10, 18)) + list(np.linspace(10, -30, 6)) + [-30] * 6 + list(np.linspace(-30, 150, 8))
    ys += [150] * 10
    frames, truth = compose(car, background, [(320 + 2 * i, y) for i, y in enumerate(ys)])
    results = track(frames, truth[0])
    visible = np.isfinite(truth[:, 0])
    ious = np.zeros(len(frames))
    ious[visible] = frame_iou(np.array([r.box for r in results])[visible], truth[visible])
    # the way up, wholly in view: tracked
    assert all(r.state == TrackState.TRACKING for r in results[:17]) and ious[1:17].min() > 0.7
    gone = np.flatnonzero(~visible)
    assert len(gone) >= 8 and all(results[i].state != TrackState.TRACKING for i in gone)
    # the box never leaves the image, even while the target is outside
    for r in results:
        assert r.box[0] >= 0 and r.box[1] >= 0 and r.box[0] + r.box[2] <= SIZE[0] and r.box[1] + r.box[3] <= SIZE[1]
    back = gone[-1] + 1 + np.flatnonzero(truth[gone[-1] + 1:, 3] >= 0.6 * car.shape[0])[0]  # 60 % in view
    assert all(results[i].state == TrackState.TRACKING and ious[i] > 0.5 for i in range(back + 2, len(frames))), \
        [(results[i].state.name, round(float(ious[i]), 2)) for i in range(back, len(frames))]


def test_target_jumping_past_its_search_region_is_lost_then_found_again(scene_parts) -> None:
    """The car jumps 120 px right and 20 px down (its search region reaches ~85 px from the centre):
    the tracker does not report the background as the target, goes LOST and the scan finds the car
    again within 15 frames, TRACKING on it from then on."""
    car, background = scene_parts
    frames, truth = compose(car, background, [(200.0, 180.0)] * 10 + [(320.0, 200.0)] * 25)
    results = track(frames, truth[0])
    ious = frame_iou(np.array([r.box for r in results]), truth)
    assert all(r.state == TrackState.TRACKING for r in results[:10])
    assert all(r.state != TrackState.TRACKING for r in results[10:12])
    assert any(r.state == TrackState.LOST for r in results[10:])
    found = 10 + next(i for i, r in enumerate(results[10:]) if r.state == TrackState.TRACKING)
    assert found - 10 <= 15
    assert all(r.state == TrackState.TRACKING for r in results[found:]) and ious[found:].min() > 0.7
