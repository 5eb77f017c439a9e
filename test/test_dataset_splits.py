"""Named splits (@train, @validation, ...): a fixture the test assembles with the real assemble.py from
tiny git repositories, then the real manifest with ../shared/data/sequences, then the assembled data/extra."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import REPO_ROOT, SHARED_SEQUENCES, in_ci
from cract_core import datasets as D
from cract_core.eval import cli as eval_cli
from cract_core.train import cli as train_cli
from cract_core.train import precrop

ASSEMBLE = SHARED_SEQUENCES.parent / "extra" / "assemble.py"
REAL_MANIFEST = SHARED_SEQUENCES.parent / "extra" / "manifest.json"
NAN_ROW = [np.nan] * 4

# The extra sequences of the fixture: (name, split, folder in the git repository, box rows as the
# repository's file writes them, the short sequences it supersedes).  cam_car_full has a frame
# where the benchmark gives no box (NaN) and one with a zero-size box: assemble.py writes both as
# NaN rows, which the loader reads as absent.
EXTRA = [
    ("otb_woman_full", "validation", "seq/woman", ["3,4,10,12", "4,4,10,12", "5,4,10,12", "6,4,10,12"], ["otb_woman"]),
    ("cam_walk", "validation", "seq/walk", ["20 10 8 16", "21 10 8 16"], []),
    ("cam_car_full", "train", "seq/car", ["10,12,8,6", "11,12,8,6", "NaN,NaN,NaN,NaN", "13,12,8,6", "14,12,0,0"],
     ["cam_car"]),
    ("cam_bus", "train", "seq/bus", ["30\t20\t12\t9", "31\t20\t12\t9", "32\t20\t12\t9"], []),
]
# What assemble.py writes: the numbers as the file has them, comma separated; NaN rows for no box.
WRITTEN = {
    "otb_woman_full": "3,4,10,12\n4,4,10,12\n5,4,10,12\n6,4,10,12\n",
    "cam_walk": "20,10,8,16\n21,10,8,16\n",
    "cam_car_full": "10,12,8,6\n11,12,8,6\nNaN,NaN,NaN,NaN\n13,12,8,6\nNaN,NaN,NaN,NaN\n",
    "cam_bus": "30,20,12,9\n31,20,12,9\n32,20,12,9\n",
}
# ../shared/data/sequences of the fixture: the validation four's names, a short sequence that
# cam_car_full supersedes and one that stays in training.
SHORT = {"otb_bird2": 3, "otb_woman": 2, "uav_boat5": 2, "uav_person11": 2, "cam_car": 2, "cam_dog": 3}


def _require_shared_file(path: Path) -> None:
    """A file of ../shared/data/extra: skip the calling test when absent, fail under CI=true (as for
    ../shared/data/sequences; the assembled frames are another matter, CI has none)."""
    if not path.is_file():
        reason = f"{path} not found (../shared/data/extra next to the repository)"
        if in_ci():
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)


def _jpeg(path: Path, index: int) -> bytes:
    """A small real JPEG whose blue level encodes its frame index (to check order and BGR)."""
    image = np.zeros((48, 64, 3), np.uint8)
    image[..., 0] = 20 * index + 10
    image[..., 2] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path.read_bytes()


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True, env=env).stdout.strip()


def _assemble(manifest: Path, repos: Path, out: Path, *options: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ASSEMBLE), "--repos", str(repos), "--out", str(out),
                           "--manifest", str(manifest), *options], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Shared data and an extra set built the way the real ones are: git repository -> assemble.py."""
    _require_shared_file(ASSEMBLE)
    root = tmp_path_factory.mktemp("splits")
    shared = root / "shared"
    for name, frames in SHORT.items():
        for i in range(frames):
            _jpeg(shared / "sequences" / name / "img" / f"{i + 1:06d}.jpg", i)
        (shared / "sequences" / name / "groundtruth.txt").write_text("".join(f"{5 + i},6,20,10\n" for i in range(frames)))
        (shared / "sequences" / name / "source.json").write_text(json.dumps({"origin": "UAV123@10fps x", "object": "car"}))
    repo = root / "repos" / "someone+frames"
    repo.mkdir(parents=True)
    _git(repo, "init", "-q")
    image_bytes = {}
    for name, _split, folder, rows, _sup in EXTRA:
        # The repository numbers its frames from 7: assemble.py renumbers them from 1.
        image_bytes[name] = [_jpeg(repo / folder / f"img{7 + i:04d}.jpg", i) for i in range(len(rows))]
        (repo / f"{folder}.txt").write_text("\n".join(rows) + "\n")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "frames")
    commit = _git(repo, "rev-parse", "HEAD")
    entries = []
    for name, split, folder, rows, supersedes in EXTRA:
        entry = {
            "name": name, "origin": f"fixture {name}", "benchmark": "fixture", "object": "car (aerial)", "split": split,
            "repository": "someone/frames", "commit": commit,
            "images": {"dir": folder, "format": "img{:04d}.jpg", "first": 7, "last": 6 + len(rows)},
            "groundtruth": {"repository": "someone/frames", "commit": commit, "path": f"{folder}.txt",
                            "first_line": 1, "step": 1, "count": len(rows)},
            "frames": len(rows), "image_size": [64, 48], "bytes": sum(len(b) for b in image_bytes[name]), "fps": 10,
            "groundtruth_sha256": hashlib.sha256(WRITTEN[name].encode()).hexdigest(),
        }
        if supersedes:
            entry["supersedes"] = supersedes
        entries.append(entry)
    manifest = shared / "extra" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"description": "fixture", "sequences": entries}, indent=1))
    run = _assemble(manifest, root / "repos", root / "extra")
    assert run.returncode == 0, run.stdout + run.stderr
    return {"root": root, "shared": shared, "extra": root / "extra", "images": image_bytes,
            "locations": D.DataLocations(shared / "sequences", manifest, root / "extra")}


def test_fixture_loader_reads_exactly_what_assemble_wrote(fixture: dict) -> None:
    car = D.load_folder(fixture["extra"] / "cam_car_full")[0]
    assert len(car) == 5 and car.fps == 10.0 and car.category == "vehicle"
    np.testing.assert_array_equal(car.groundtruth, [[10, 12, 8, 6], [11, 12, 8, 6], NAN_ROW, [13, 12, 8, 6], NAN_ROW])
    assert car.absent.tolist() == [False, False, True, False, True]
    assert car.visible.tolist() == [True, True, False, True, False]
    # The frames are the repository's JPEG bytes, renumbered from 1, in order.
    assert [Path(f).name for f in car.frames] == [f"{i:06d}.jpg" for i in range(1, 6)]
    assert [Path(f).read_bytes() for f in car.frames] == fixture["images"]["cam_car_full"]
    assert abs(int(car.image(3)[0, 0, 0]) - 70) <= 3  # frame 4: blue 20 * 3 + 10
    bus = D.load_folder(fixture["extra"] / "cam_bus")[0]  # tab separated in the repository
    np.testing.assert_array_equal(bus.groundtruth, [[30, 20, 12, 9], [31, 20, 12, 9], [32, 20, 12, 9]])


def test_fixture_split_membership_and_supersedes(fixture: dict) -> None:
    loc = fixture["locations"]
    names = {s: [m.name for m in D.split_members(s, loc)] for s in D.SPLITS}
    # otb_woman_full replaces otb_woman in validation; uav_boat5 and uav_person11 have no full version here.
    assert names["validation"] == ["otb_bird2", "uav_boat5", "uav_person11", "otb_woman_full", "cam_walk"]
    assert names["validation4"] == ["otb_bird2", "otb_woman", "uav_boat5", "uav_person11"]
    # cam_car is superseded by cam_car_full; the validation four are never trained on.
    assert names["train"] == ["cam_dog", "cam_car_full", "cam_bus"]
    assert names["all"] == names["validation"] + names["train"]
    assert D.split_names("validation", loc) == names["validation"] + ["otb_woman"]
    assert D.split_names("train", loc) == names["train"] + ["cam_car"]

    train = D.split_dataset("train", loc)
    assert train.name == "@train" and [len(s) for s in train.sequences] == [3, 5, 3]
    assert [int(s.visible.sum()) for s in train.sequences] == [3, 3, 3]
    assert all(s.dataset == "@train" for s in train.sequences)
    val = D.load_split("validation", loc, only=["cam_*", "otb_bird2"])  # the order asked for
    assert [s.name for s in val] == ["cam_walk", "otb_bird2"]
    np.testing.assert_array_equal(val[0].groundtruth, [[20, 10, 8, 16], [21, 10, 8, 16]])
    with pytest.raises(D.DatasetError, match="no sequence named cam_car in @validation"):
        D.load_split("validation", loc, only=["cam_car"])
    with pytest.raises(D.DatasetError, match="unknown split '@test'"):
        D.split_from_spec("@test")


def test_fixture_incomplete_extra_sequences_are_named_with_the_command(fixture: dict, tmp_path: Path) -> None:
    extra = tmp_path / "extra"
    shutil.copytree(fixture["extra"], extra)
    loc = D.DataLocations(fixture["locations"].sequences, fixture["locations"].manifest, extra)
    (extra / "cam_car_full" / "img" / "000005.jpg").unlink()  # as if assemble.py had been stopped
    with pytest.raises(D.MissingDataError) as info:
        D.load_split("train", loc)
    message = str(info.value)
    assert "@train needs 1 extra sequence(s)" in message and "cam_car_full: 4 of 5 frames in img/" in message
    assert f"python3 {loc.manifest.parent / 'assemble.py'} --repos FOLDER --out {extra} --only cam_car_full\n" in message
    assert "git snapshots" in message
    (extra / "cam_bus" / "groundtruth.txt").write_text("30,20,12,9\n")
    with pytest.raises(D.MissingDataError) as info:
        D.load_split("train", loc)
    assert "cam_bus: groundtruth.txt differs from the manifest" in str(info.value)
    assert f"--out {extra} --split train\n" in str(info.value)  # every extra sequence of @train
    # Validation's extra sequences are complete: it still loads.
    assert len(D.load_split("validation", loc)) == 5
    # Nothing assembled: the whole split's command; a .partial folder is named as half-written.
    shutil.rmtree(extra)
    (extra / ".cam_bus.partial" / "img").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as info:
        D.load_split("train", loc)
    assert "cam_bus: half-written" in str(info.value) and "cam_car_full: not assembled" in str(info.value)
    assert f"--out {extra} --split train\n" in str(info.value)
    # assemble.py then fills in what is missing, and the split loads.
    run = _assemble(loc.manifest, fixture["root"] / "repos", extra, "--split", "train")
    assert run.returncode == 0, run.stdout + run.stderr
    assert [len(s) for s in D.load_split("train", loc)] == [3, 5, 3]


def test_fixture_clis_take_the_split_names(fixture: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv(D.ENV_SHARED_DATA, str(fixture["shared"]))
    monkeypatch.setenv(D.ENV_EXTRA_DATA, str(tmp_path / "nowhere"))  # --extra-data wins over it
    args = train_cli.make_parser().parse_args(["--config", "x.yaml", "--data", "@train@2", "--data",
                                               f"folder={fixture['shared'] / 'sequences'}", "--exclude", "@validation",
                                               "--extra-data", str(fixture["extra"]), "--out", "o"])
    (split, short), weights = train_cli.data_from_arguments(args)
    assert weights == [2.0, 1.0] and split.name == "@train"
    assert [s.name for s in split.sequences] == ["cam_dog", "cam_car_full", "cam_bus"]
    # --exclude @validation on the short folder drops the validation four's names, otb_woman included.
    assert [s.name for s in short.sequences] == ["cam_car", "cam_dog"]

    out = tmp_path / "precrop"
    assert precrop.main(["--config", str(REPO_ROOT / "config" / "train_starter_lite0.yaml"), "--data", "@train",
                         "--extra-data", str(fixture["extra"]), "--out", str(out)]) == 0
    cropped = D.load_folder(out)
    assert [(s.name, len(s)) for s in cropped] == [("cam_bus", 3), ("cam_car_full", 5), ("cam_dog", 3)]
    assert cropped[1].visible.tolist() == [True, True, False, True, False]

    monkeypatch.setenv(D.ENV_EXTRA_DATA, str(fixture["extra"]))
    rc = eval_cli.main(["--sequences", "@validation", "--trackers", "kcf", "--jobs", "1", "--threads", "1",
                        "--no-progress", "--out", str(tmp_path / "eval")])
    assert rc == 0
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert list(summary["trackers"]["kcf"]["sequences"]) == ["otb_bird2", "uav_boat5", "uav_person11", "otb_woman_full",
                                                             "cam_walk"]
    capsys.readouterr()


# ------------------------------------------------------------------------------------- real data

REAL_VALIDATION = ["otb_bird2", "uav_group2_3", "dtb70_animal3", "uavdt_s1001", "drone_biker", "otb_carscale",
                   "otb_jogging1", "otb_jogging2", "otb_woman_full", "uav_boat5_full", "uav_person11_full"]


@pytest.fixture
def real_locations(shared_sequences_dir: Path) -> D.DataLocations:
    _require_shared_file(REAL_MANIFEST)
    return D.DataLocations(shared_sequences_dir, REAL_MANIFEST, D.DataLocations.resolve().extra)


def test_real_splits_from_the_manifest(real_locations: D.DataLocations) -> None:
    members = {s: D.split_members(s, real_locations) for s in D.SPLITS}
    assert [m.name for m in members["validation"]] == REAL_VALIDATION
    assert [m.name for m in members["validation4"]] == list(D.VALIDATION4)
    train = [m.name for m in members["train"]]
    # ../shared/data/README.md: 4 of its 34 are validation, 30 are superseded (uav_car14 and
    # uav_car14_b by one), so 3 short ones stay; the manifest adds 43.
    assert train[:3] == ["dtb70_surfing06", "otb_dragonbaby", "uav_building5"] and len(train) == 46
    assert all(m.entry is not None and m.entry["split"] == "train" for m in members["train"][3:])
    held_out = set(D.split_names("validation", real_locations))
    assert held_out == set(REAL_VALIDATION) | {"otb_woman", "uav_boat5", "uav_person11"}
    assert not held_out & set(train)
    # The jogging pair shares its images: both are held out.  No short sequence that a *_full
    # replaces is trained on beside it.
    assert {"otb_jogging1", "otb_jogging2"} <= held_out
    assert "otb_bolt_full" in train and not {"otb_bolt", "uav_car14", "uav_car14_b", "otb_woman"} & set(train)
    assert {n for m in members["train"] for n in m.supersedes} & set(train) == set()
    assert [m.name for m in members["all"]] == REAL_VALIDATION + train


def test_real_assembled_extra_matches_the_manifest(real_locations: D.DataLocations) -> None:
    if not real_locations.extra.is_dir():
        pytest.skip(f"the extra set is not assembled at {real_locations.extra} (expected on CI; build it with "
                    "python3 ../shared/data/extra/assemble.py --repos FOLDER --out data/extra)")
    manifest = {e["name"]: e for e in D.read_manifest(real_locations.manifest)}
    val = D.load_split("validation", real_locations)
    train = D.load_split("train", real_locations)
    for seq in val + train:
        if seq.name in manifest:
            assert len(seq) == manifest[seq.name]["frames"], seq.name
            assert int(seq.absent.sum()) == manifest[seq.name]["absent_frames"], seq.name
            assert seq.fps == manifest[seq.name]["fps"], seq.name
    # ../shared/data/extra/README.md: 161 absent frames, 121 in training and 40 in validation;
    # validation is otb_bird2's 99 frames plus 3,310.
    assert sum(int(s.absent.sum()) for s in train) == 121 and sum(int(s.absent.sum()) for s in val) == 40
    assert sum(len(s) for s in val) == 99 + 3310
