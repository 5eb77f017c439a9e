"""The follow loop, closed over real DDS: the tracker node and the follower node as processes (as
the launch file starts them), this process the world (cract_ros.follow.sim): a camera on a
vehicle over a real aerial image, a real car driving the scripted path (turns, speed changes, a
look-alike crossing, a roof that hides it).

Lock-step on simulated time (/clock): frame k, then the tracker's TrackedObject and the
follower's TwistStamped for frame k (matched by stamp), then the vehicle moves; so the numbers do
not depend on how busy the machine is. The camera runs at 10 Hz here; the 10 and 30 Hz figures
in docs/following.md come from `python -m cract_ros.follow.demo`.

What is asserted, and why these bounds:

- the car's centre stays within 0.6 of the half image from the image centre on every frame
  (0 = centre, 1 = edge), and in view throughout. With the starter model it stays within 0.24
  (p95 0.20); the control law on perfect measurements keeps 0.18 (test_follow_sim.py). 0.6 leaves
  room for a tracker whose boxes are twice as noisy or that gives up earlier under the roof
  (the vehicle then hovers longer while the car drives on), and still fails a loop that lets
  the car drift to the edge;
- safety: on every frame whose TrackedObject is LOST, IDLE or under the follower's
  min_confidence, the command for that same frame is zero (within one frame of LOST: zero
  frames late); the tracker reports LOST while the roof hides the car, and the commands are zero
  then;
- the look-alike crossing does not take the tracker: its box stays on the car (IoU >= 0.3 with
  the true box) through the crossing and the second after;
- after the roof the tracker finds the car again by itself (no operator sets the target again)
  within 2 s of its being in plain view (the shipped default: at once, 2026-12-07; its LOST scan
  searches at the tracking scale and the identifier I re-acquires the car, which comes back from
  under the roof turned and smaller than the appearance memory last saw it), and the box is on
  the car for 80 % of the frames after.
"""
from __future__ import annotations

import math

import pytest

pytest.importorskip("rclpy")

from cract_ros.follow.demo import FollowLoop, iou_xywh, loop_statistics  # noqa: E402
from cract_ros.follow.sim import load_scene  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

CENTRE_ERROR_BOUND = 0.6


def test_tracker_and_follower_keep_the_car_in_view_at_10hz(rclpy_init, shared_sequences_dir, tmp_path) -> None:
    loop = FollowLoop(load_scene(shared_sequences_dir), 10.0, tmp_path, tracker_params={"num_threads": 1},
                      redesignate_after_s=None)
    try:
        result = loop.run()
    finally:
        codes = loop.close()
    assert codes == (0, 0), f"exit codes tracker/follower {codes}; logs in {tmp_path}"
    stats = loop_statistics(result)
    frames = result.frames
    print("closed loop at 10 Hz:", {k: v for k, v in stats.items() if k != "wall_s"})

    # following: the car stays well inside the image, every frame
    assert stats["time_in_view"] == 1.0
    worst = max(frames, key=lambda f: f.centre_error)
    assert worst.centre_error < CENTRE_ERROR_BOUND, f"centre error {worst.centre_error:.2f} at t={worst.t:.1f} s"

    # safety: a LOST / IDLE / low-confidence frame gets a zero command on that same frame
    for f in frames:
        if f.state in (0, 3) or f.confidence < result.min_confidence:
            assert f.command_is_zero, f"t={f.t:.1f} s: state {f.state}, confidence {f.confidence}: command {f.command}"
    hidden_start, hidden_end = result.scenario_events["under the roof"]
    wholly_hidden = [f for f in frames if f.hidden == 1.0]
    assert wholly_hidden, "the scenario must hide the car entirely for a while"
    assert any(f.state == 3 for f in frames if hidden_start <= f.t <= hidden_end), \
        "the tracker never said LOST while the roof hid the car"
    assert any(f.command_is_zero for f in wholly_hidden), "commands while the car was wholly hidden"

    # the look-alike crossing: the box stays on the car
    cross_start, cross_end = result.scenario_events["look-alike crossing"]
    crossing = [f for f in frames if cross_start <= f.t <= cross_end + 1.0]
    off = [f.t for f in crossing if iou_xywh(f.box, f.truth_box) < 0.3]
    assert not off, f"the tracker's box left the car during the look-alike crossing at t = {off}"

    # after the roof: found again by the tracker itself soon after the car is in plain view, and on the car
    assert math.isfinite(stats["reacquired_by_tracker_after_s"]) and stats["reacquired_by_tracker_after_s"] <= 2.0, stats
    assert math.isfinite(stats["following_again_after_s"]) and stats["following_again_after_s"] <= 2.0, stats
    after = [f for f in frames if f.t > hidden_end + stats["following_again_after_s"]]
    on_car = [iou_xywh(f.box, f.truth_box) >= 0.3 for f in after]
    assert after and sum(on_car) >= 0.8 * len(on_car), f"on the car in {sum(on_car)} of {len(on_car)} frames"
    moving = [not f.command_is_zero for f in after]
    assert sum(moving) >= 0.8 * len(moving), f"commands flowed in {sum(moving)} of {len(moving)} frames after"
