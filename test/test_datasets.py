"""Sequence loaders (training and evaluation share them) on tiny fixture folders written in each benchmark's real layout."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from cract_core import datasets as D


def _jpegs(folder: Path, names: list[str], size=(32, 24)) -> list[Path]:
    """Small real JPEGs whose blue channel encodes the frame index (to check order and BGR)."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for k, name in enumerate(names):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        img[..., 0] = 10 * k + 5  # blue
        img[..., 2] = 200  # red
        p = folder / name
        assert cv2.imwrite(str(p), img)
        out.append(p)
    return out


def _gray_jpeg(path: Path, w: int = 64, h: int = 48) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 128, np.uint8))


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# ------------------------------------------------------------------------------------- OTB


def test_otb_separators_two_targets_and_frame_ranges(tmp_path, monkeypatch):
    for seq in ("Comma", "Tab", "Space", "Jogging"):
        _jpegs(tmp_path / seq / "img", [f"{i:04d}.jpg" for i in range(1, 4)])
    _write(tmp_path / "Comma" / "groundtruth_rect.txt", "1,2,3,4\n5,6,7,8\n9,10,11,12\n")
    _write(tmp_path / "Tab" / "groundtruth_rect.txt", "1\t2\t3\t4\n5\t6\t7\t8\n9\t10\t11\t12\n")
    _write(tmp_path / "Space" / "groundtruth_rect.txt", "1 2 3 4\n5  6 7 8\n9 10 11 12\n")
    _write(tmp_path / "Jogging" / "groundtruth_rect.1.txt", "1,1,5,5\n1,1,5,5\n1,1,5,5\n")
    _write(tmp_path / "Jogging" / "groundtruth_rect.2.txt", "9,9,5,5\n9,9,5,5\n9,9,5,5\n")
    # A sequence whose annotation covers frames 3..5 of 6 images, as David does in OTB.
    _jpegs(tmp_path / "Ranged" / "img", [f"{i:04d}.jpg" for i in range(1, 7)])
    _write(tmp_path / "Ranged" / "groundtruth_rect.txt", "1,1,4,4\n2,2,4,4\n3,3,4,4\n")
    monkeypatch.setitem(D.OTB_FRAME_RANGES, "Ranged", (3, 5))

    assert D.detect_benchmark(tmp_path) == "otb"
    seqs = {s.name: s for s in D.load_sequences(tmp_path, "otb")}
    assert sorted(seqs) == ["Comma", "Jogging-1", "Jogging-2", "Ranged", "Space", "Tab"]
    for name in ("Comma", "Tab", "Space"):
        np.testing.assert_array_equal(seqs[name].groundtruth, [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    assert seqs["Jogging-2"].init_box.tolist() == [9, 9, 5, 5]
    assert [Path(f).name for f in seqs["Ranged"].frames] == ["0003.jpg", "0004.jpg", "0005.jpg"]
    assert seqs["Comma"].fps == 30.0 and not seqs["Comma"].absent.any()


def test_otb_tiger1_omits_its_first_five_frames(tmp_path):
    _jpegs(tmp_path / "Tiger1" / "img", [f"{i:04d}.jpg" for i in range(1, 8)])
    _write(tmp_path / "Tiger1" / "groundtruth_rect.txt", "".join(f"{i},1,4,4\n" for i in range(1, 8)))
    (s,) = D.load_otb(tmp_path)
    assert [Path(f).name for f in s.frames] == ["0006.jpg", "0007.jpg"]
    assert s.groundtruth[:, 0].tolist() == [6, 7]


def test_otb_short_ground_truth_becomes_unknown_frames(tmp_path):
    _jpegs(tmp_path / "Short" / "img", [f"{i:04d}.jpg" for i in range(1, 5)])
    _write(tmp_path / "Short" / "groundtruth_rect.txt", "1,2,3,4\n1,2,3,4\n")
    (s,) = D.load_otb(tmp_path)
    assert len(s) == 4 and np.isnan(s.groundtruth[2:]).all()
    assert "unknown" in s.attrs["notes"][0]


# ---------------------------------------------------------------------------------- UAV123


def test_uav123_nan_rows_and_subsequences(tmp_path, monkeypatch):
    _jpegs(tmp_path / "data_seq" / "UAV123" / "boat1", [f"{i:06d}.jpg" for i in range(1, 5)])
    _write(tmp_path / "anno" / "UAV123" / "boat1.txt", "1,2,3,4\nNaN,NaN,NaN,NaN\n3,4,5,6\n4,5,6,7\n")
    # car9_2 uses frames 3..5 of the shared car9 folder (the toolkit's table gives the start).
    _jpegs(tmp_path / "data_seq" / "UAV123" / "car9", [f"{i:06d}.jpg" for i in range(1, 7)])
    _write(tmp_path / "anno" / "UAV123" / "car9_2.txt", "1,1,2,2\n2,2,2,2\n3,3,2,2\n")
    monkeypatch.setitem(D.UAV123_SUBSEQUENCE_START, "car9_2", 3)

    assert D.detect_benchmark(tmp_path) == "uav123"
    seqs = {s.name: s for s in D.load_uav123(tmp_path)}
    boat = seqs["boat1"]
    assert boat.absent.tolist() == [False, True, False, False]
    assert np.isnan(boat.groundtruth[1]).all()
    car = seqs["car9_2"]
    assert [Path(f).name for f in car.frames] == ["000003.jpg", "000004.jpg", "000005.jpg"]
    assert car.attrs["frame_range"] == [3, 5]


def test_uav123_real_table_names_a_known_split():
    # The toolkit's ranges that matter for the shared data's sub-sequences.
    assert D.UAV123_SUBSEQUENCE_START["car16_2"] == 415
    assert D.UAV123_SUBSEQUENCE_START["group1_3"] == 2515


def test_uav123_unknown_subsequence_is_a_layout_error(tmp_path):
    _jpegs(tmp_path / "data_seq" / "UAV123" / "zzz", ["000001.jpg"])
    _write(tmp_path / "anno" / "UAV123" / "zzz_7.txt", "1,1,2,2\n")
    with pytest.raises(D.DatasetError, match="zzz_7"):
        D.load_uav123(tmp_path)


# ------------------------------------------------------------------------------------- NfS


def test_nfs_30fps_uses_every_8th_row_of_the_240fps_annotation(tmp_path):
    seq = tmp_path / "airboard_1" / "30"
    _jpegs(seq / "airboard_1", [f"{i:05d}.jpg" for i in range(1, 4)])
    rows = []
    for k in range(24):  # 240 fps rows for 3 frames at 30 fps
        lost = 1 if k == 8 else 0
        rows.append(f'0 {10 + k} 20 {30 + k} 60 {k + 1} {lost} 0 0 "person"')
    _write(seq / "airboard_1.txt", "\n".join(rows) + "\n")
    assert D.detect_benchmark(tmp_path) == "nfs"
    (s,) = D.load_sequences(tmp_path, "nfs")
    # rows 0, 8, 16: x1 = 10, 18, 26; x2 - x1 = 20; y1 = 20, y2 = 60 -> h = 40.
    np.testing.assert_array_equal(s.groundtruth[[0, 2]], [[10, 20, 20, 40], [26, 20, 20, 40]])
    assert s.absent.tolist() == [False, True, False]  # row 8 says lost
    assert s.fps == 30.0 and s.attrs["annotation_step"] == 8


# ----------------------------------------------------------------------------------- LaSOT


def test_lasot_test_split_absent_flags(tmp_path):
    for name in ("cat-1", "cat-2"):
        d = tmp_path / "cat" / name
        _jpegs(d / "img", [f"{i:08d}.jpg" for i in range(1, 5)])
        _write(d / "groundtruth.txt", "1,2,3,4\n1,2,3,4\n0,0,0,0\n1,2,3,4\n")
        _write(d / "full_occlusion.txt", "0,0,1,0")
        _write(d / "out_of_view.txt", "0,1,0,0")
        _write(d / "nlp.txt", "a cat")
    _write(tmp_path / "testing_set.txt", "cat-1\n")
    assert D.detect_benchmark(tmp_path) == "lasot"
    seqs = D.load_sequences(tmp_path, "lasot")
    assert [s.name for s in seqs] == ["cat-1"]  # cat-2 is not in the test split
    assert seqs[0].absent.tolist() == [False, True, True, False]
    # One class folder works as a root too.
    assert sorted(s.name for s in D.load_lasot(tmp_path / "cat")) == ["cat-1", "cat-2"]


# --------------------------------------------------------------------------------- GOT-10k


def test_got10k_val_labels_and_test_first_box_only(tmp_path):
    val = tmp_path / "GOT-10k_Val_000001"
    _jpegs(val, [f"{i:08d}.jpg" for i in range(1, 5)])
    _write(val / "groundtruth.txt", "1,2,3,4\n1,2,3,4\n1,2,3,4\n1,2,3,4\n")
    _write(val / "absence.label", "0\n0\n1\n0\n")
    _write(val / "cover.label", "8\n0\n0\n5\n")
    _write(val / "meta_info.ini", "[METAINFO]\nobject_class: zebra\n")
    test = tmp_path / "GOT-10k_Test_000001"
    _jpegs(test, [f"{i:08d}.jpg" for i in range(1, 4)])
    _write(test / "groundtruth.txt", "5,6,7,8\n")
    _write(tmp_path / "list.txt", "GOT-10k_Val_000001\nGOT-10k_Test_000001\n")
    assert D.detect_benchmark(tmp_path) == "got10k"
    v, t = D.load_sequences(tmp_path, "got10k")
    assert v.absent.tolist() == [False, True, True, False]  # cover 0 at 1, absence at 2
    assert v.has_groundtruth and v.attrs["object_class"] == "zebra" and v.fps == 10.0
    assert not t.has_groundtruth and t.init_box.tolist() == [5, 6, 7, 8]
    assert np.isnan(t.groundtruth[1:]).all() and not t.absent.any()


# ----------------------------------------------------------------------------- TrackingNet


def test_trackingnet_numeric_frame_order_and_first_box(tmp_path):
    frames = tmp_path / "TEST" / "frames" / "abc_1"
    _jpegs(frames, [f"{i}.jpg" for i in range(12)])
    _write(tmp_path / "TEST" / "anno" / "abc_1.txt", "3,4,5,6\n")
    assert D.detect_benchmark(tmp_path) == "trackingnet"
    (s,) = D.load_sequences(tmp_path, "trackingnet")
    assert [Path(f).name for f in s.frames][8:] == ["8.jpg", "9.jpg", "10.jpg", "11.jpg"]
    assert s.init_box.tolist() == [3, 4, 5, 6] and not s.has_groundtruth
    # The TEST folder itself works as the root.
    assert D.load_trackingnet(tmp_path / "TEST")[0].name == "abc_1"


# ------------------------------------------------------------------------------------- VOT


def test_vot_polygons_become_min_max_rectangles(tmp_path):
    d = tmp_path / "ball"
    _jpegs(d / "color", [f"{i:08d}.jpg" for i in range(1, 4)])
    _write(
        d / "groundtruth.txt",
        "10,20,30,10,40,30,20,40\n"  # rotated quad: x 10..40, y 10..40
        "5.5,6.5,7,8\n"  # a rectangle row
        "NaN,NaN,NaN,NaN\n",
    )
    _write(tmp_path / "list.txt", "ball\n")
    assert D.detect_benchmark(tmp_path) == "vot"
    (s,) = D.load_sequences(tmp_path, "vot")
    np.testing.assert_array_equal(s.groundtruth[:2], [[10, 10, 30, 30], [5.5, 6.5, 7, 8]])
    assert s.absent.tolist() == [False, False, True]
    np.testing.assert_array_equal(D.polygon_to_box([0, 0, 4, 0, 4, 2, 0, 2]), [0, 0, 4, 2])


def test_vot_mask_regions_are_refused(tmp_path):
    d = tmp_path / "ball"
    _jpegs(d / "color", ["00000001.jpg"])
    _write(d / "groundtruth.txt", "m10,10,5,5,0,1\n")
    _write(tmp_path / "list.txt", "ball\n")
    with pytest.raises(D.DatasetError, match="mask"):
        D.load_vot(tmp_path)


# ---------------------------------------------------------------------------------- folder


def test_plain_folder_with_source_json_and_lazy_bgr_images(tmp_path):
    d = tmp_path / "uav_thing"
    files = _jpegs(d / "img", [f"{i:06d}.jpg" for i in range(1, 4)])
    _write(d / "groundtruth.txt", "1,2,3,4\n2,3,4,5\n3,4,5,6\n")
    _write(d / "source.json", json.dumps({"origin": "UAV123@10fps thing", "frame_stride": 2}))
    assert D.detect_benchmark(tmp_path) == "folder"
    (s,) = D.load_sequences(tmp_path)
    assert s.frames == [str(f) for f in files]
    assert s.fps == 5.0  # 10 fps divided by the stride
    assert s.attrs["source"]["frame_stride"] == 2
    img = s.image(2)
    assert img.shape == (24, 32, 3) and img.dtype == np.uint8
    assert abs(int(img[0, 0, 0]) - 25) <= 3 and abs(int(img[0, 0, 2]) - 200) <= 3  # BGR: blue first
    # One sequence folder works as the root too, and head() cuts frames and labels together.
    (one,) = D.load_folder(d)
    short = one.head(2)
    assert len(short) == 2 and short.groundtruth.shape == (2, 4) and short.attrs["truncated_to"] == 2


def test_real_shared_sequences_load(shared_sequences_dir):
    seqs = D.load_sequences(shared_sequences_dir, "folder", ["otb_bird2", "uav_boat5"])
    assert [s.name for s in seqs] == ["otb_bird2", "uav_boat5"]
    assert len(seqs[0]) == 99 and seqs[0].init_box.tolist() == [82, 218, 69, 73]
    assert seqs[1].fps == 10.0 and seqs[0].fps == 30.0
    assert seqs[0].image(0).shape == (400, 720, 3)


# ---------------------------------------------------------------------------------- errors


def test_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        D.load_sequences(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(D.DatasetError, match="cannot tell"):
        D.load_sequences(tmp_path / "empty")
    with pytest.raises(D.DatasetError, match="not a GOT-10k split"):
        D.load_sequences(tmp_path / "empty", "got10k")
    d = tmp_path / "bad" / "seq"
    _jpegs(d / "img", ["0001.jpg"])
    _write(d / "groundtruth.txt", "1,2,3\n")
    with pytest.raises(D.DatasetError, match=r"groundtruth.txt:1: expected 4 numbers"):
        D.load_sequences(tmp_path / "bad", "folder")
    _write(d / "groundtruth.txt", "1,2,3,4\n")
    with pytest.raises(D.DatasetError, match="no sequence named other"):
        D.load_sequences(tmp_path / "bad", "folder", ["other"])
    with pytest.raises(ValueError, match="unknown benchmark"):
        D.load_sequences(tmp_path / "bad", "mot17")
    s = D.load_sequences(tmp_path / "bad", "folder")[0]
    Path(s.frames[0]).unlink()
    with pytest.raises(FileNotFoundError, match="cannot read frame 0"):
        s.image(0)


def test_uav123_one_subset_at_a_time(tmp_path):
    _jpegs(tmp_path / "data_seq" / "UAV123" / "bike1", [f"{i:06d}.jpg" for i in range(1, 4)])
    _write(tmp_path / "anno" / "UAV123" / "bike1.txt", "1,1,2,2\n1,1,2,2\n1,1,2,2\n")
    # UAV20L ships annotations only; its images are the UAV123 folders.
    _write(tmp_path / "anno" / "UAV20L" / "bike1.txt", "1,1,2,2\n1,1,2,2\n")
    (default,) = D.load_uav123(tmp_path)
    assert default.attrs["subset"] == "UAV123" and len(default) == 3
    (long_term,) = D.load_uav123(tmp_path, subset="UAV20L")
    assert long_term.attrs["subset"] == "UAV20L" and len(long_term) == 2
    with pytest.raises(D.DatasetError, match="no anno/UAV123_10fps"):
        D.load_uav123(tmp_path, subset="UAV123_10fps")


# ------------------------------------------------------------------ training views of the same loaders


def test_read_boxes_separators_flags_and_errors(tmp_path: Path) -> None:
    f = tmp_path / "gt.txt"
    f.write_text("1,2,3,4\n5\t6\t7\t8\n\n9 10 11 12\n13\t14 15,16\nNaN,NaN,NaN,NaN\n")
    boxes = D.read_boxes(f)
    assert boxes.shape == (5, 4) and boxes.dtype == np.float64  # the blank line is skipped
    assert boxes[:4].tolist() == [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    assert np.isnan(boxes[4]).all()
    f.write_text("1,2,3,4\n1,2,x,4\n")
    with pytest.raises(D.DatasetError, match=r"gt.txt:2: expected 4 numbers"):
        D.read_boxes(f)
    f.write_text("1,2,3,4\n1,2,3\n")
    with pytest.raises(D.DatasetError, match=r"gt.txt:2: expected 4 numbers, got 3"):
        D.read_boxes(f)
    f.write_text("\n")
    with pytest.raises(D.DatasetError, match="gt.txt is empty"):
        D.read_boxes(f)
    with pytest.raises(D.DatasetError, match="does not exist"):
        D.read_boxes(tmp_path / "none.txt")
    flags = tmp_path / "full_occlusion.txt"
    flags.write_text("0,1,1,0")
    assert D.read_flags(flags).tolist() == [0, 1, 1, 0]
    flags.write_text("0\n1\n")
    assert D.read_flags(flags).tolist() == [0, 1]
    assert D.read_flags(tmp_path / "absent.label") is None


def test_got10k_layout(tmp_path: Path) -> None:
    root = tmp_path / "GOT-10k" / "train"
    for name, absent in (("GOT-10k_Train_000001", [0, 1, 0]), ("GOT-10k_Train_000002", [1, 1, 1])):
        seq = root / name
        for i in range(3):
            _gray_jpeg(seq / f"{i + 1:08d}.jpg")
        (seq / "groundtruth.txt").write_text("1,2,10,12\n3,4,10,12\n5,6,10,12\n")
        (seq / "absence.label").write_text("\n".join(map(str, absent)) + "\n")
        (seq / "meta_info.ini").write_text("[METAINFO]\nobject_class: Bird\n")
    (root / "list.txt").write_text("GOT-10k_Train_000001\nGOT-10k_Train_000002\n")
    ds = D.make_dataset("got10k", tmp_path / "GOT-10k")  # the folder above train/ works too
    assert len(ds) == 1  # the second sequence is absent throughout
    seq = ds[0]
    assert seq.visible.tolist() == [True, False, True] and seq.category == "bird"
    assert Path(seq.frame_path(2)).name == "00000003.jpg" and Path(seq.frame_path(2)).is_file()
    # Frame paths are made on demand, survive pickling (DataLoader workers) and head() cuts them.
    assert isinstance(seq.frames, D.FramePattern)
    copy = pickle.loads(pickle.dumps(seq))
    assert [copy.frame_path(i) for i in range(3)] == [str(root / "GOT-10k_Train_000001" / f"{i:08d}.jpg") for i in (1, 2, 3)]
    short = seq.head(2)
    assert len(short.frames) == 2 and list(short.frames) == [seq.frame_path(0), seq.frame_path(1)]
    assert short.visible.tolist() == [True, False]
    with pytest.raises(IndexError, match="frame 3 of 3"):
        seq.frame_path(3)


def test_lasot_layout(tmp_path: Path) -> None:
    seq = tmp_path / "airplane" / "airplane-1"
    for i in range(4):
        _gray_jpeg(seq / "img" / f"{i + 1:08d}.jpg")
    (seq / "groundtruth.txt").write_text("1,2,10,12\n1,2,10,12\n1,2,10,12\n1,2,10,12\n")
    (seq / "full_occlusion.txt").write_text("0,1,0,0")
    (seq / "out_of_view.txt").write_text("0,0,1,0")
    ds = D.make_dataset("lasot", tmp_path)
    assert ds[0].visible.tolist() == [True, False, False, True] and ds[0].category == "airplane"
    assert Path(ds[0].frame_path(3)).is_file()
    with pytest.raises(D.DatasetError, match="no usable|no <class>"):
        D.make_dataset("lasot", tmp_path, exclude=["airplane-*"])
    # With the toolkit's testing_set.txt, training leaves the test sequences out; evaluation runs only them.
    shutil.copytree(seq, tmp_path / "airplane" / "airplane-2")
    (tmp_path / "testing_set.txt").write_text("airplane-2\n")
    assert [s.name for s in D.make_dataset("lasot", tmp_path).sequences] == ["airplane-1"]
    assert [s.name for s in D.load_sequences(tmp_path, "lasot")] == ["airplane-2"]


def test_trackingnet_layout(tmp_path: Path) -> None:
    chunk = tmp_path / "TRAIN_0"
    for i in range(3):
        _gray_jpeg(chunk / "frames" / "abc_1" / f"{i}.jpg")
    (chunk / "anno").mkdir(parents=True)
    (chunk / "anno" / "abc_1.txt").write_text("1,2,10,12\n1,2,0,0\n1,2,10,12\n")
    ds = D.make_dataset("trackingnet", tmp_path)
    assert ds[0].name == "TRAIN_0/abc_1" and ds[0].visible.tolist() == [True, False, True]
    assert Path(ds[0].frame_path(0)).name == "0.jpg" and Path(ds[0].frame_path(2)).is_file()


def test_bad_roots_and_kinds(tmp_path: Path) -> None:
    with pytest.raises(D.DatasetError, match="does not exist"):
        D.make_dataset("folder", tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(D.DatasetError, match="not a folder"):
        D.make_dataset("folder", tmp_path / "file")
    with pytest.raises(D.DatasetError, match="unknown benchmark 'imagenet'"):
        D.make_dataset("imagenet", tmp_path)
    with pytest.raises(D.DatasetError, match="instances"):
        D.make_dataset("coco", tmp_path)


def test_category_from_name() -> None:
    assert D.category_from_name("uav_group1_1") == "person"
    assert D.category_from_name("uav_car14_b") == "vehicle"
    assert D.category_from_name("otb_bird2") == "bird"


def test_shared_folder_excludes_validation(shared_sequences_dir: Path) -> None:
    ds = D.make_dataset("folder", shared_sequences_dir, exclude=D.VALIDATION4)
    names = {s.name for s in ds.sequences}
    assert not names & set(D.VALIDATION4)
    assert {"uav_group1_1", "uav_car10"} <= names and len(names) >= 25
    assert all(s.visible.all() for s in ds.sequences)  # README: no frame is marked absent
    only = D.make_dataset("folder", shared_sequences_dir, only=["uav_group*"])
    assert {s.name for s in only.sequences} == {s for s in names if s.startswith("uav_group")}
    assert {s.category for s in only.sequences} == {"person"}
    with pytest.raises(D.DatasetError, match="no sequence named no_such_sequence"):
        D.make_dataset("folder", shared_sequences_dir, only=["no_such_sequence"])
