"""The tracker as a managed (lifecycle) node, driven over real DDS through the standard lifecycle
services (~/change_state, ~/get_state, ~/get_available_transitions), as `ros2 lifecycle` and
Nav2's lifecycle manager drive it.

Every transition is taken: configure (one that fails, one that loads), activate, deactivate,
cleanup, and shutdown from unconfigured, inactive and active; refused ones (activate before
configure) leave the state as it was; a target asked for while inactive is refused with the
reason; cleanup gives the model's memory back (RSS of the node's process; CUDA memory where a
GPU is present).
"""
from __future__ import annotations

import math

import numpy as np
import psutil
import pytest

rclpy = pytest.importorskip("rclpy")
from lifecycle_msgs.msg import Transition  # noqa: E402

from cract.msg import TrackedObject  # noqa: E402
from cract_ros.conversions import bgr_to_image  # noqa: E402
from cract_ros.bags.sequence import read_frames, read_groundtruth  # noqa: E402
from node_harness import START_TIMEOUT, key, node_factory, stamp_msg  # noqa: E402,F401 (node_factory: a fixture)

pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture
def woman(shared_sequence) -> dict:
    seq = shared_sequence("otb_woman")
    frames = list(read_frames(seq, 8))
    return {"msgs": [bgr_to_image(f) for f in frames], "gt": read_groundtruth(seq)}


def rss_mib(nut) -> float:
    return psutil.Process(nut.proc.pid).memory_info().rss / 2**20


def diag_after(nut, state: str) -> dict:
    """The node's next /diagnostics that reports lifecycle state `state`."""
    nut.diagnostics.clear()
    return nut.latest_diag(lambda v: v["lifecycle_state"] == state, f"diagnostics in state {state}")[1]


def test_every_transition_over_dds_and_cleanup_frees_the_model(node_factory, woman) -> None:
    nut = node_factory("lifecycle", ready=False, autostart=False, lockstep=True, num_threads=1,
                       diagnostics_period_s=0.2)
    msgs, gt = woman["msgs"], woman["gt"]
    assert nut.lifecycle_state() == "unconfigured"
    assert nut.available_transitions() == {"configure", "shutdown"}
    # nothing loaded, no target interface yet (the lifecycle services are there)
    nut.spin_until(lambda: f"{nut.fqn}/get_state" in nut.services(), 30.0, "the node's services in the graph")
    assert f"{nut.fqn}/set_target" not in nut.services()
    assert diag_after(nut, "unconfigured")["model_mib"] == "0.0"

    # a transition that does not start from here is refused, and the state does not change
    assert not nut.change_state(Transition.TRANSITION_ACTIVATE)
    assert not nut.change_state(Transition.TRANSITION_CLEANUP)
    assert nut.lifecycle_state() == "unconfigured"

    # a model that cannot load fails configure (back to unconfigured, the reason in the log);
    # while unconfigured, the model parameters may change, and the next configure loads
    assert nut.set_param("model_config", "/nonexistent/model.yaml").successful
    assert not nut.change_state(Transition.TRANSITION_CONFIGURE)
    assert nut.lifecycle_state() == "unconfigured"
    assert "configure failed: could not load the tracker" in nut.log_text()
    assert nut.set_param("model_config", "").successful
    rss_unconfigured = rss_mib(nut)

    assert nut.change_state(Transition.TRANSITION_CONFIGURE)
    assert nut.lifecycle_state() == "inactive"
    assert nut.log_text().count("model loaded in") == 1 and "warm-up" in nut.log_text()
    configured = diag_after(nut, "inactive")
    model_mib = float(configured["model_mib"])
    assert model_mib > 0.0
    rss_configured = rss_mib(nut)

    # inactive: the target services answer, but refuse; no camera subscription; model parameters are fixed now
    nut.spin_until(nut.set_target.service_is_ready, 30.0, "~/set_target after configure")
    resp = nut.call_set_target(gt[0])
    assert not resp.success and "the node is inactive, not active" in resp.message, resp.message
    assert nut.camera.get_subscription_count() == 0
    res = nut.set_param("device", "cpu")
    assert not res.successful and "read-only while the node is inactive" in res.reason, res.reason
    assert nut.set_param("beta", 0.75).successful  # runtime parameters change in any state

    # activate: the camera is subscribed and the node tracks
    assert nut.change_state(Transition.TRANSITION_ACTIVATE)
    assert nut.lifecycle_state() == "active"
    nut.spin_until(lambda: nut.camera.get_subscription_count() > 0, 30.0, "the image subscription")
    assert nut.publish_and_wait(msgs[0], 0).state == TrackedObject.IDLE
    assert nut.call_set_target(gt[0], stamp_msg(0)).success
    tracked = nut.publish_and_wait(msgs[1], 1)
    assert tracked.state != TrackedObject.IDLE and tracked.frame_index == 1

    # deactivate: camera unsubscribed, target dropped with one IDLE message, model kept
    before = len(nut.results)
    assert nut.change_state(Transition.TRANSITION_DEACTIVATE)
    assert nut.lifecycle_state() == "inactive"
    idle = nut.spin_until(lambda: [r for r in nut.results[before:] if r.state == TrackedObject.IDLE], 30.0,
                          "the IDLE TrackedObject of the deactivation")[-1]
    assert math.isnan(idle.bearing_x)
    nut.spin_until(lambda: nut.camera.get_subscription_count() == 0, 30.0, "the image subscription to go")
    assert not nut.call_set_target(gt[1]).success

    # activate again: no reload, a new target tracks (the old one was dropped)
    assert nut.change_state(Transition.TRANSITION_ACTIVATE)
    nut.spin_until(lambda: nut.camera.get_subscription_count() > 0, 30.0, "the image subscription again")
    again = nut.publish_and_wait(msgs[2], 2)
    assert again.state == TrackedObject.IDLE, "deactivation must drop the target"
    assert nut.call_set_target(gt[2], stamp_msg(2)).success
    assert nut.publish_and_wait(msgs[3], 3).frame_index == 1
    assert nut.log_text().count("model loaded in") == 1

    # deactivate + cleanup: the model's memory comes back
    assert nut.change_state(Transition.TRANSITION_DEACTIVATE)
    assert nut.available_transitions() == {"activate", "cleanup", "shutdown"}
    rss_before_cleanup = rss_mib(nut)  # (tracking added memory since configure: measure cleanup itself)
    assert nut.change_state(Transition.TRANSITION_CLEANUP)
    assert nut.lifecycle_state() == "unconfigured"
    cleaned = diag_after(nut, "unconfigured")
    assert cleaned["model_mib"] == "0.0" and cleaned["device"].startswith("none")
    rss_cleaned = rss_mib(nut)
    nut.spin_until(lambda: f"{nut.fqn}/set_target" not in nut.services(), 30.0, "~/set_target to go")
    assert "cleaned up: model released" in nut.log_text()
    # At least the weights themselves are given back (the rest of the drop is activations and the
    # discriminator's memory); torch's libraries, loaded at the first configure, stay.
    assert rss_before_cleanup - rss_cleaned >= model_mib, (rss_unconfigured, rss_configured, rss_before_cleanup,
                                                         rss_cleaned, model_mib)

    # configure and clean up again (a reload, here without warm-up: model parameters may change
    # while unconfigured): the memory left after cleanup does not grow by a model per cycle
    assert nut.set_param("warmup", False).successful and nut.set_param("device", "cpu").successful
    assert nut.change_state(Transition.TRANSITION_CONFIGURE)
    assert nut.log_text().count("model loaded in") == 2
    assert nut.change_state(Transition.TRANSITION_CLEANUP)
    rss_cleaned_again = rss_mib(nut)
    assert rss_cleaned_again - rss_cleaned < model_mib, (rss_cleaned, rss_cleaned_again, model_mib)

    # shutdown from inactive: the process ends by itself with 0
    assert nut.change_state(Transition.TRANSITION_CONFIGURE)
    assert nut.change_state(Transition.TRANSITION_INACTIVE_SHUTDOWN)
    assert nut.proc.wait(timeout=60) == 0
    assert "shut down from inactive: exiting" in nut.log_text()
    print(f"RSS MiB: unconfigured {rss_unconfigured:.0f}, configured {rss_configured:.0f}, after cleanup "
          f"{rss_cleaned:.0f}, after a second cycle {rss_cleaned_again:.0f}; model weights {model_mib:.1f} MiB")


def test_autostart_reaches_active_and_shutdown_from_active_exits(node_factory, woman) -> None:
    """The default (autostart): ros2 run tracks at once; shutdown from active ends the process."""
    nut = node_factory("autostart", warmup=False, lockstep=True, num_threads=1)
    assert nut.lifecycle_state() == "active"
    assert nut.publish_and_wait(woman["msgs"][0], 0).state == TrackedObject.IDLE
    assert nut.call_set_target(woman["gt"][0], stamp_msg(0)).success
    assert nut.publish_and_wait(woman["msgs"][1], 1).state != TrackedObject.IDLE
    before = len(nut.results)
    assert nut.change_state(Transition.TRANSITION_ACTIVE_SHUTDOWN)
    assert nut.proc.wait(timeout=60) == 0
    assert "shut down from active: exiting" in nut.log_text()
    # the last word to a listener was IDLE (a follower stops at once)
    nut.spin_until(lambda: len(nut.results) > before, 10.0, "the IDLE message of the shutdown")
    assert nut.results[-1].state == TrackedObject.IDLE


def test_shutdown_from_unconfigured_and_a_failed_autostart(node_factory, tmp_path) -> None:
    nut = node_factory("unconfigured", ready=False, autostart=False)
    assert nut.change_state(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
    assert nut.proc.wait(timeout=60) == 0
    # autostart with a model that cannot load: the process ends with 1 and says why
    bad = node_factory("bad_autostart", exits_with=1, model_config=str(tmp_path / "missing.yaml"))
    assert bad.proc.wait(timeout=START_TIMEOUT) == 1
    log = bad.log_text()
    assert "configure failed: could not load the tracker" in log and "autostart: configure failed" in log


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA device (torch sees none)")
def test_cleanup_frees_cuda_memory(node_factory) -> None:
    nut = node_factory("cuda", ready=False, autostart=False, device="cuda", diagnostics_period_s=0.2)
    assert nut.change_state(Transition.TRANSITION_CONFIGURE)
    configured = diag_after(nut, "inactive")
    assert float(configured["cuda_allocated_mib"]) >= float(configured["model_mib"]) > 0.0
    assert nut.change_state(Transition.TRANSITION_CLEANUP)
    cleaned = diag_after(nut, "unconfigured")
    assert float(cleaned["cuda_allocated_mib"]) < 1.0, cleaned
    print(f"CUDA allocated MiB: configured {configured['cuda_allocated_mib']}, after cleanup {cleaned['cuda_allocated_mib']}")
