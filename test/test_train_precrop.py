"""Pre-cropped training data: the crops the sampler makes from it are the crops it makes from the frames."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from cract_core.geometry import context_size, crop_square
from cract_core.train import precrop
from cract_core.datasets import Sequence, make_dataset, read_boxes


def test_frame_square_keeps_resolution_and_centres_the_box() -> None:
    spec = precrop.PrecropSpec()  # context 0.5, 127/255, reach 1.8
    image = np.full((480, 640, 3), 90, np.uint8)
    # A 20 x 40 box: p = 0.5 * 60 = 30, s_z = sqrt(50 * 70) = 59.16, s_x = 59.16 * 255/127 = 118.79,
    # side = 1.8 * s_x = 213.8 image px, below 1.8 * 255 = 459 px: kept 1:1 (214 px square).
    crop, box = precrop.precrop_frame(image, np.array([300.0, 200.0, 20.0, 40.0]), spec)
    assert crop.shape == (214, 214, 3)
    scale = 214 / (1.8 * np.sqrt(50 * 70) * 255 / 127)
    np.testing.assert_allclose(box, [107 - 10 * scale, 107 - 20 * scale, 20 * scale, 40 * scale], rtol=1e-6)
    # A big box is shrunk to the cap: 300 x 300 -> s_x = 600 * 255/127, side 2168 -> 459 px.
    crop, box = precrop.precrop_frame(image, np.array([100.0, 50.0, 300.0, 300.0]), spec)
    assert crop.shape == (459, 459, 3)
    np.testing.assert_allclose(box[2:], [300 * 459 / (1.8 * 600 * 255 / 127)] * 2, rtol=1e-6)


def test_bad_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="reach"):
        precrop.PrecropSpec(reach=0.5)
    with pytest.raises(ValueError, match="jpeg_quality"):
        precrop.PrecropSpec(jpeg_quality=20)


def test_search_crops_from_precrops_match_crops_from_frames(tmp_path: Path, shared_sequences_dir: Path) -> None:
    rc = precrop.main(["--config", "config/train_starter_lite0.yaml", "--data", f"folder={shared_sequences_dir}",
                       "--include", "uav_car10", "--out", str(tmp_path / "pc"), "--quality", "95"])
    assert rc == 0
    src = make_dataset("folder", shared_sequences_dir, only=["uav_car10"]).sequences[0]
    out = make_dataset("folder", tmp_path / "pc").sequences[0]
    assert out.name == "uav_car10" and out.category == src.category and len(out) == len(src)
    np.testing.assert_array_equal(out.visible, src.visible)
    assert len(read_boxes(tmp_path / "pc" / "uav_car10" / "groundtruth.txt")) == len(src)
    for i in out.visible_indices[:: max(1, len(out) // 5)]:
        frame, square = cv2.imread(src.frame_path(i)), cv2.imread(out.frame_path(i))
        for box, img in ((src.groundtruth[i], frame), (out.groundtruth[i], square)):
            # The farthest crop the default augmentation draws: scale 1.18, shifted 64 px on 255.
            side = context_size(box[2], box[3], 0.5) * 255 / 127 * 1.18
            c = (box[0] + box[2] / 2 + 0.25 * side, box[1] + box[3] / 2 - 0.25 * side)
            crop, _ = crop_square(img, c, side, 255)
            if img is frame:
                want = crop.astype(np.float32)
            else:
                got = crop.astype(np.float32)
        assert np.abs(got - want).mean() < 3.0, f"frame {i}: precrop crop differs by {np.abs(got - want).mean():.2f}"


def test_refuses_to_write_into_a_non_empty_folder(tmp_path: Path, shared_sequences_dir: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "pc").mkdir()
    (tmp_path / "pc" / "keep.txt").write_text("x")
    rc = precrop.main(["--config", "config/train_starter_lite0.yaml", "--data", f"folder={shared_sequences_dir}",
                       "--include", "uav_car10", "--out", str(tmp_path / "pc")])
    assert rc == 2 and "not empty" in capsys.readouterr().err
    assert (tmp_path / "pc" / "keep.txt").read_text() == "x"


def test_object_class_survives_precropping(tmp_path: Path) -> None:
    # A GOT-10k-like sequence whose class comes from its loader (no source.json): the precrop
    # folder names it, so same-kind hard negatives still find it.
    src = tmp_path / "frames"
    src.mkdir()
    image = np.full((120, 160, 3), 70, np.uint8)
    cv2.imwrite(str(src / "00000001.jpg"), image)
    seq = Sequence("GOT-10k_Train_000001", [str(src / "00000001.jpg")], np.array([[60.0, 40.0, 20.0, 30.0]]),
                   np.array([False]), category="zebra")
    precrop.precrop_sequence(seq, tmp_path / "pc", precrop.PrecropSpec())
    out = make_dataset("folder", tmp_path / "pc").sequences[0]
    assert out.category == "zebra" and len(out) == 1
