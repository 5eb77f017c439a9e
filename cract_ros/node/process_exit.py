"""The node's process from start to end: `main` (cract-tracker-node, lib/cract/tracker_node,
`python -m cract_ros.node`) spins a TrackerNode until the shutdown transition or SIGINT, releases it
and ends the process at once (os._exit), with watchdogs that end a shutdown that hangs."""
from __future__ import annotations

import faulthandler
import os
import sys
import threading
import time
from typing import NoReturn, Optional

import rclpy
from rclpy.exceptions import InvalidHandle
from rclpy.executors import MultiThreadedExecutor
from rclpy.task import Future

from cract_ros.node.settings import NODE_NAME, NodeStartupError
from cract_ros.node.tracker_node import TrackerNode

try:  # rclpy >= Humble: raised by spin() when the context is shut down from outside (signals)
    from rclpy.executors import ExternalShutdownException
except ImportError:  # pragma: no cover - older rclpy
    class ExternalShutdownException(Exception):  # type: ignore[no-redef]
        pass

GIL_SWITCH_INTERVAL_S = 0.0002


def main(args: Optional[list] = None) -> NoReturn:
    """Entry point of `cract-tracker-node` and of lib/cract/tracker_node. Ends the process.

    After an orderly shutdown (node, executor and rclpy's context released: the DDS participant
    is gone, peers see the node leave) the process ends with os._exit, without CPython's own
    finalization: with torch loaded that is a full garbage collection and the teardown of
    thousands of modules, 1-2 s of CPU on an idle 2-core machine and more than 20 s on a loaded
    one, during which no Python thread (the shutdown watchdog neither) runs any more. That was
    the node killed 20 s after SIGINT at test teardown (scripts/teardown_loop.py).
    """
    # The discriminator's update worker runs many small tensor ops, each taking the GIL; with
    # CPython's default 5 ms switch interval the tracker thread then waits up to 5 ms at each of
    # its own ops (a convoy), and frames take seconds. A short interval lets the two interleave.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    # SIGSEGV/SIGABRT print every thread's Python stack (a supervisor or test that finds the node
    # hung sends SIGABRT before SIGKILL: cract_ros.process.stop_node)
    faulthandler.enable()
    try:
        rclpy.init(args=args)
    except Exception as exc:  # rcl's own arguments: e.g. a --params-file that is missing or does not parse
        sys.stderr.write(f"[FATAL] [{NODE_NAME}]: cannot start: {exc}\n")
        _end_process(1)
    node: Optional[TrackerNode] = None
    executor: Optional[MultiThreadedExecutor] = None
    code = 0
    try:
        node = TrackerNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        # until the shutdown transition (or a failed autostart) or SIGINT
        spin_until_finished(executor, node)
        if node.finished.done() and rclpy.ok():
            # the answer to the `shutdown` request is sent after on_shutdown returns: let it go out
            executor.spin_until_future_complete(Future(), timeout_sec=0.5)
        code = node.exit_code
    except NodeStartupError as exc:
        rclpy.logging.get_logger(NODE_NAME).fatal(str(exc))
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        t_stop = time.monotonic()
        _exit_watchdog(SHUTDOWN_GRACE_S, code)
        if node is not None:
            node.destroy_node()
        if executor is not None:
            executor.shutdown(timeout_sec=1.0)
        rclpy.try_shutdown()
        context = rclpy.utilities.get_default_context()
        context.destroy()  # the rcl context and with it the DDS participant, now rather than at exit
        sys.stderr.write(f"cract_tracker: shut down in {time.monotonic() - t_stop:.2f} s, exit code {code}\n")
    _end_process(code)


def spin_until_finished(executor: MultiThreadedExecutor, node: TrackerNode) -> None:
    """Spin until node.finished. A transition (deactivate, cleanup, shutdown) destroys entities on
    an executor thread while this thread may be gathering them into its next wait set: rclpy then
    raises InvalidHandle here (seen once in 30 rounds of the node tests: a node ending with 1 after
    a clean shutdown transition). The next spin gathers what is left, so that is not an error."""
    while not node.finished.done() and rclpy.ok():  # (SIGINT shuts the context down: rclpy raises or returns)
        try:
            executor.spin_until_future_complete(node.finished)
        except InvalidHandle as exc:
            node.get_logger().debug(f"an entity went away while the executor gathered it ({exc}): spinning on")


def _end_process(code: int) -> NoReturn:
    """Flush the output and end at once (see main: no interpreter finalization)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said
            pass
    os._exit(code)


# After SIGINT the node must end: rclpy's executor runs callbacks in non-daemon pool threads, and
# one still blocked (e.g. a service waiting for an init) keeps the interpreter from exiting.
SHUTDOWN_GRACE_S = 8.0


def _exit_watchdog(seconds: float, code: int) -> None:
    """If shutdown has not finished the process after ``seconds``, print every thread's stack (so the
    hang says where it is) and exit with ``code``. A second watchdog in C (faulthandler's own
    thread, which needs no GIL) does the same a little later with exit code 1, for a hang in C
    code that holds the GIL."""
    def fire() -> None:
        sys.stderr.write(f"cract_tracker: shutdown still blocked after {seconds:.0f} s; thread stacks:\n")
        faulthandler.dump_traceback(all_threads=True)
        _end_process(code)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    faulthandler.dump_traceback_later(seconds + 4.0, exit=True)


if __name__ == "__main__":
    raise SystemExit(main())
