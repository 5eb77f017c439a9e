"""Start the tracker node as its own process, exactly as launch/cract.launch.py would:
`python -m cract_ros.node --ros-args --params-file config/cract.yaml -p ... -r __ns:=...`.

The tests, the benchmark and the demo use this, because launch/launch_ros are not installable
from PyPI here.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS_FILE = REPO_ROOT / "config" / "cract.yaml"


def use_default_ros_environment() -> None:
    """Fill in what `make test` exports where it is missing, so that a plain `python -m pytest` or a
    benchmark behaves the same (node subprocesses inherit it). Call it before rclpy is imported: the
    DDS participant reads these when it is created."""
    os.environ.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO_ROOT / "config" / "fastdds_shm.xml"))
    # A domain of its own per run, so concurrent runs on one host do not cross-talk.
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(1, 100)))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, check_alive: Callable[[str], None],
             step: Callable[[], None], timed_out: Callable[[str], Exception]) -> Any:
    """Poll `predicate` until it returns something true (returned). Between tries: `check_alive`
    (raises when a process it watches has died; told what is awaited), then `step` (sleep, or spin an
    executor). After `timeout` seconds: raise `timed_out(message)`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        check_alive(f"waiting for {what}")
        if time.monotonic() > deadline:
            raise timed_out(f"timed out after {timeout:.0f} s waiting for {what}")
        step()


def _param_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value if value else '""'
    return repr(value)


def node_command(params_file: Path | str = DEFAULT_PARAMS_FILE, overrides: Optional[dict] = None,
                 namespace: str = "", remaps: Optional[dict] = None, log_level: str = "info") -> list[str]:
    cmd = [sys.executable, "-m", "cract_ros.node", "--ros-args", "--params-file", str(params_file)]
    for name, value in (overrides or {}).items():
        cmd += ["-p", f"{name}:={_param_value(value)}"]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    for src, dst in (remaps or {}).items():
        cmd += ["-r", f"{src}:={dst}"]
    cmd += ["--log-level", log_level]
    return cmd


def start_node(params_file: Path | str = DEFAULT_PARAMS_FILE, overrides: Optional[dict] = None,
               namespace: str = "", remaps: Optional[dict] = None, log: Optional[IO] = None,
               env: Optional[dict] = None) -> subprocess.Popen:
    """Popen of the node; its output goes to `log` (a file) or is inherited."""
    cmd = node_command(params_file, overrides, namespace, remaps)
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT if log is not None else None,
                            env={**os.environ, **(env or {})}, cwd=str(REPO_ROOT))


def native_stacks(pid: int, timeout: float = 120.0) -> str:
    """Every thread of a live process: its name and kernel wait channel (/proc, at once), then each
    thread's native (C/C++) backtrace by gdb in batch mode when gdb is installed. For a process that
    hangs where Python cannot look (a C++ destructor at exit, a lock held with the GIL)."""
    lines = []
    for task in sorted(Path(f"/proc/{pid}/task").glob("*")):
        try:
            name = (task / "comm").read_text().strip()
            wchan = (task / "wchan").read_text().strip()
            kernel = (task / "stack").read_text().split("\n")[0].strip() if os.access(task / "stack", os.R_OK) else ""
        except OSError:
            continue
        lines.append(f"  thread {task.name} {name!r}: wchan {wchan or '-'} {kernel}")
    text = f"{len(lines)} threads:\n" + "\n".join(lines) + "\n"
    gdb = shutil.which("gdb")
    if gdb is None:
        return text
    # no debuginfod (no network here: it would wait for each library) and no auto-loaded scripts
    cmd = [gdb, "-p", str(pid), "-batch", "-nx", "-iex", "set debuginfod enabled off", "-iex", "set auto-load off",
           "-ex", "set pagination off", "-ex", "thread apply all bt 30"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return text + f"gdb could not attach to {pid}: {exc}"
    return text + out.stdout + out.stderr


def stop_node(proc: subprocess.Popen, timeout: float = 20.0) -> int:
    """SIGINT (a clean rclpy shutdown); a process still there after `timeout` is a hang: its native
    stacks (gdb, when installed) and Python stacks (SIGABRT: the node's faulthandler prints every
    thread) go to stderr and the node's log, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stacks = native_stacks(proc.pid)
            sys.stderr.write(f"process {proc.pid} still running {timeout:.0f} s after SIGINT; native stacks:\n{stacks}\n")
            proc.send_signal(signal.SIGABRT)
            try:
                proc.wait(5.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return proc.returncode
