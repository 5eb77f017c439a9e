"""Bags made from real sequences: frame-exact read-back with two independent readers, and clear errors.

`cract-bag from-sequence` writes with rosbags; the read-back goes through rosbags (our reader)
and through the mcap library with its ROS 2 decoder (what Foxglove and `ros2 bag` use), so a
bag that only rosbags could read would fail here. The error cases run the real CLI entry point
(main()) and check its exit status 2 and its one-line reason.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")
pytest.importorskip("mcap_ros2")

from cract_ros.bags import bag_eval, bag_io  # noqa: E402
from cract_ros.bags.sequence import read_frames, read_groundtruth  # noqa: E402

N_FRAMES = 20
FPS = 30.0


@pytest.fixture
def bird_bag(shared_sequence, tmp_path) -> tuple[Path, Path]:
    seq = shared_sequence("otb_bird2")
    out = tmp_path / "bird_bag"
    assert bag_eval.main(["from-sequence", str(seq), str(out), "--max-frames", str(N_FRAMES), "--fps", str(FPS)]) == 0
    return seq, out


def expected_stamp(i: int) -> int:
    return bag_io.DEFAULT_START_NS + int(round(i * 1e9 / FPS))


def test_bag_reads_back_frame_exact_with_rosbags(bird_bag) -> None:
    seq_dir, bag_dir = bird_bag
    assert (bag_dir / "metadata.yaml").is_file() and len(list(bag_dir.glob("*.mcap"))) == 1
    frames = list(read_frames(seq_dir, N_FRAMES))
    gt = read_groundtruth(seq_dir)[:N_FRAMES]

    seq = bag_io.load_sequence(bag_dir)
    assert len(seq.frames) == N_FRAMES
    for i, frame in enumerate(frames):
        got = seq.image(i)
        assert got.shape == frame.shape and got.dtype == np.uint8
        assert got.tobytes() == frame.tobytes(), f"frame {i} differs"
        assert seq.frames[i].stamp_ns == expected_stamp(i) == seq.frames[i].log_ns
        assert seq.frames[i].frame_id == "camera"
    np.testing.assert_array_equal(seq.groundtruth, gt)  # float32 in the message: these are integers
    assert [ns for ns, _ in seq.clock] == [expected_stamp(i) for i in range(N_FRAMES)]

    # the raw messages, decoded by rosbags' own type store: encoding, step, TrackedObject fields
    bag = bag_io.Bag(bag_dir)
    assert {t.name: t.msgtype for t in bag.topics.values()} == {
        "/camera/image_raw": "sensor_msgs/msg/Image", "/cract/ground_truth": "cract/msg/TrackedObject",
        "/clock": "rosgraph_msgs/msg/Clock"}
    gts = [bag.decode(raw, t) for topic, t, _, raw in bag.messages(["/cract/ground_truth"])]
    assert [m.frame_index for m in gts] == list(range(N_FRAMES))
    assert all(m.state == bag_io.TRACKING and m.header.frame_id == "camera" for m in gts)
    img = bag.decode(seq.frames[0].raw, "sensor_msgs/msg/Image")
    assert (img.encoding, img.width, img.height, img.step) == ("bgr8", 720, 400, 720 * 3)


def test_bag_reads_back_frame_exact_with_mcap(bird_bag) -> None:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    seq_dir, bag_dir = bird_bag
    frames = list(read_frames(seq_dir, N_FRAMES))
    gt = read_groundtruth(seq_dir)[:N_FRAMES]
    images, truths, clocks = [], [], []
    with next(bag_dir.glob("*.mcap")).open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        for schema, channel, message, msg in reader.iter_decoded_messages():
            if channel.topic == "/camera/image_raw":
                assert schema.name == "sensor_msgs/msg/Image" and channel.message_encoding == "cdr"
                images.append((message.log_time, msg))
            elif channel.topic == "/cract/ground_truth":
                assert schema.name == "cract/msg/TrackedObject"
                truths.append(msg)
            elif channel.topic == "/clock":
                clocks.append(msg.clock.sec * 1_000_000_000 + msg.clock.nanosec)
    assert len(images) == len(truths) == len(clocks) == N_FRAMES
    for i, (log_time, msg) in enumerate(images):
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        assert stamp == log_time == expected_stamp(i) == clocks[i]
        assert msg.encoding == "bgr8" and (msg.height, msg.width) == frames[i].shape[:2]
        assert bytes(msg.data) == frames[i].tobytes(), f"frame {i} differs"
        t = truths[i]
        assert (t.header.stamp.sec, t.header.stamp.nanosec) == (msg.header.stamp.sec, msg.header.stamp.nanosec)
        np.testing.assert_array_equal([t.x, t.y, t.width, t.height], gt[i])


def test_from_sequence_fps_comes_from_source_json(shared_sequence, tmp_path, capsys) -> None:
    """UAV123@10fps sequences are 10 fps (divided by a frame_stride where source.json has one)."""
    seq = shared_sequence("uav_person11")
    assert bag_io.sequence_fps(seq)[0] == 10.0
    out = tmp_path / "person"
    assert bag_eval.main(["from-sequence", str(seq), str(out), "--max-frames", "3"]) == 0
    assert "10 fps" in capsys.readouterr().out
    stamps = bag_io.load_sequence(out).stamps_ns
    assert np.diff(stamps).tolist() == [100_000_000, 100_000_000]


def test_from_sequence_fps_divides_by_the_frame_stride(shared_sequences_dir) -> None:
    seq = shared_sequences_dir / "uav_truck2"  # UAV123@10fps, stride 3 (README of the data)
    if not (seq / "source.json").is_file():
        pytest.skip(f"{seq} not present")
    fps, why = bag_io.sequence_fps(seq)
    assert fps == pytest.approx(10.0 / 3) and "frame_stride 3" in why


# ------------------------------------------------------------------------------ errors


def run_error(capsys, argv: list[str]) -> str:
    code = bag_eval.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("cract-bag: error: "), err
    return err[0]


def test_truncated_bag_is_a_clear_error(bird_bag, tmp_path, capsys) -> None:
    _, bag_dir = bird_bag
    bad = tmp_path / "truncated"
    shutil.copytree(bag_dir, bad)
    mcap = next(bad.glob("*.mcap"))
    with mcap.open("r+b") as f:  # a recording cut short (disk full, power loss)
        f.truncate(mcap.stat().st_size // 2)
    line = run_error(capsys, ["eval", str(bad)])
    assert "cannot read bag" in line and str(bad) in line


def test_corrupt_bag_is_a_clear_error(bird_bag, tmp_path, capsys) -> None:
    from mcap.reader import make_reader

    _, bag_dir = bird_bag
    bad = tmp_path / "corrupt"
    shutil.copytree(bag_dir, bad)
    mcap = next(bad.glob("*.mcap"))
    with mcap.open("rb") as f:
        offset = make_reader(f).get_summary().chunk_indexes[3].chunk_start_offset
    data = bytearray(mcap.read_bytes())
    data[offset + 1: offset + 64] = b"\xab" * 63  # garbage over a chunk's header
    mcap.write_bytes(bytes(data))
    line = run_error(capsys, ["eval", str(bad)])
    assert "cannot read" in line and str(bad) in line

    # a metadata.yaml that is not YAML, and a folder without one
    (bad / "metadata.yaml").write_text("rosbag2_bagfile_information: [unbalanced\n")
    assert "cannot read bag" in run_error(capsys, ["eval", str(bad)])
    assert "metadata.yaml is missing" in run_error(capsys, ["eval", str(tmp_path)])


def test_missing_topic_lists_the_topics(bird_bag, capsys) -> None:
    _, bag_dir = bird_bag
    line = run_error(capsys, ["eval", str(bag_dir), "--image-topic", "/camera/color/image_raw"])
    assert "image topic /camera/color/image_raw is not in bag" in line
    for topic in ("/camera/image_raw (sensor_msgs/msg/Image, 20)", "/cract/ground_truth", "/clock"):
        assert topic in line
    line = run_error(capsys, ["eval", str(bag_dir), "--gt-topic", "/gt"])
    assert "ground-truth topic /gt is not in bag" in line


def test_wrong_message_type_is_a_clear_error(bird_bag, capsys) -> None:
    _, bag_dir = bird_bag
    line = run_error(capsys, ["eval", str(bag_dir), "--image-topic", "/clock"])
    assert "has type rosgraph_msgs/msg/Clock, expected sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage" in line
    line = run_error(capsys, ["eval", str(bag_dir), "--gt-topic", "/camera/image_raw"])
    assert "has type sensor_msgs/msg/Image, expected cract/msg/TrackedObject" in line


def test_png_compressed_bag_reads_back_the_same_pixels(shared_sequence, tmp_path, capsys) -> None:
    """--compressed png: sensor_msgs/CompressedImage on <topic>/compressed (image_transport's
    name), lossless, so the tracker sees exactly the frames of a raw bag."""
    seq_dir = shared_sequence("otb_bird2")
    out = tmp_path / "png_bag"
    assert bag_eval.main(["from-sequence", str(seq_dir), str(out), "--max-frames", "5", "--compressed", "png"]) == 0
    assert "/camera/image_raw/compressed" in capsys.readouterr().out
    bag = bag_io.Bag(out)
    assert bag.topics["/camera/image_raw/compressed"].msgtype == "sensor_msgs/msg/CompressedImage"
    seq = bag_io.load_sequence(out, "/camera/image_raw/compressed")
    for i, frame in enumerate(read_frames(seq_dir, 5)):
        assert seq.image(i).tobytes() == frame.tobytes(), f"frame {i} differs"
    msg = bag.decode(seq.frames[0].raw, seq.frames[0].msgtype)
    assert msg.format == "bgr8; png compressed bgr8"
