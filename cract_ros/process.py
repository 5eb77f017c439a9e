"""Start the tracker node as its own process, exactly as launch/cract.launch.py would:
`python -m cract_ros.node --ros-args --params-file config/cract.yaml -p ... -r __ns:=...`.

The tests, the benchmark and the demo use this, because launch/launch_ros are not installable
from PyPI here.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any, Optional

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PARAMS_FILE = REPO_ROOT / "config" / "cract.yaml"


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
