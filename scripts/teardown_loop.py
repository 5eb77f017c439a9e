#!/usr/bin/env python3
"""Run the node tests in a loop and report every node that did not end cleanly after SIGINT.

Each round is one pytest run of the ROS node tests (default: test/test_ros_node.py and
test/test_ros_lifecycle.py), with its own DDS domain and its own --basetemp, so that every node's
log is kept. A node that is still running 20 s after the harness's SIGINT is dumped by
cract_ros.process.stop_node (gdb's native stacks, then SIGABRT: the node's faulthandler prints its
Python stacks) and killed; the node's own shutdown watchdog prints its stacks after 8 s. This
script collects, per round: pytest's exit status, the nodes' shutdown times (the "main() done"
line the node prints), watchdog dumps, hang dumps and exit codes other than the expected.

    nice -n 19 .venv/bin/python scripts/teardown_loop.py --rounds 30 --out runs/teardown
    nice -n 19 .venv/bin/python scripts/teardown_loop.py --rounds 10 --load 2 --out runs/teardown_loaded

--load N adds N busy-loop processes at nice 19 for the whole run (a loaded machine). Prints one
line a round and a summary; writes OUT/summary.json. Exit status 1 when any round failed.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_TESTS = ["test/test_ros_node.py", "test/test_ros_lifecycle.py"]
# what the node prints when main() has shut down (the old build: "main() done in")
MAIN_DONE = re.compile(r"cract_tracker: (?:shut down|main\(\) done) in ([0-9.]+) s, exit code (-?\d+)")


def busy_loop() -> None:
    """One core's worth of pure-Python work at the lowest priority."""
    os.nice(19)
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF


def ros_env(domain_id: int) -> dict:
    """What the Makefile's ROS_ENV exports, for a pytest run started from here."""
    venv = ROOT / ".venv"
    return {**os.environ,
            "AMENT_PREFIX_PATH": str(venv),
            "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "FASTDDS_DEFAULT_PROFILES_FILE": str(ROOT / "config" / "fastdds_shm.xml"),
            "ROS_DOMAIN_ID": str(domain_id)}


def scan_round(basetemp: Path, output: str) -> dict:
    """What one round's node logs and pytest output say about the nodes' shutdowns."""
    shutdown_s: list[float] = []
    watchdog: list[str] = []
    no_main_done: list[str] = []
    for log in sorted(basetemp.rglob("*.log")):
        text = log.read_text(errors="replace")
        if "cract_tracker" not in text:
            continue
        done = MAIN_DONE.findall(text)
        shutdown_s += [float(s) for s, _ in done]
        if "shutdown still blocked" in text:
            watchdog.append(str(log))
        if not done:
            no_main_done.append(str(log))
    hangs = re.findall(r"process (\d+) still running .* after SIGINT", output)
    bad_exit = re.findall(r"node \S+ exited with (-?\d+) at shutdown", output)
    return {"shutdown_s": shutdown_s, "watchdog_logs": watchdog, "logs_without_main_done": no_main_done,
            "hangs": hangs, "bad_exit_codes": bad_exit}


def run_round(index: int, tests: list[str], out: Path, timeout: float) -> dict:
    basetemp = out / f"round_{index:03d}"
    domain = random.randint(101, 200)  # away from make's 1..100
    cmd = [str(ROOT / ".venv" / "bin" / "python"), "-m", "pytest", *tests, "-q", "-x", "-p", "no:cacheprovider",
           f"--basetemp={basetemp}"]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=ros_env(domain), capture_output=True, text=True, timeout=timeout)
        code, output = proc.returncode, proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        code, output = -1, f"round timed out after {timeout} s\n{exc.stdout or ''}{exc.stderr or ''}"
    (out / f"round_{index:03d}.txt").write_text(output)
    summary = scan_round(basetemp, output)
    summary.update(round=index, pytest_exit=code, seconds=time.monotonic() - t0,
                   result_line=(output.strip().splitlines() or [""])[-1])
    return summary


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--load", type=int, default=0, help="busy-loop processes (nice 19) beside the tests")
    ap.add_argument("--tests", nargs="+", default=DEFAULT_TESTS)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "teardown_loop")
    ap.add_argument("--round-timeout", type=float, default=1800.0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    loaders = [multiprocessing.Process(target=busy_loop, daemon=True) for _ in range(args.load)]
    for p in loaders:
        p.start()
    rounds = []
    try:
        for i in range(args.rounds):
            r = run_round(i, args.tests, args.out, args.round_timeout)
            rounds.append(r)
            worst = max(r["shutdown_s"], default=float("nan"))
            print(f"round {i + 1}/{args.rounds}: pytest {r['pytest_exit']} in {r['seconds']:.0f} s, "
                  f"{len(r['shutdown_s'])} node shutdowns (slowest {worst:.2f} s), hangs {len(r['hangs'])}, "
                  f"watchdog dumps {len(r['watchdog_logs'])}, bad exits {r['bad_exit_codes']} | {r['result_line']}",
                  flush=True)
            (args.out / "summary.json").write_text(json.dumps({"load": args.load, "tests": args.tests,
                                                               "rounds": rounds}, indent=1))
    finally:
        for p in loaders:
            p.terminate()
    failed = [r for r in rounds if r["pytest_exit"] != 0 or r["hangs"] or r["watchdog_logs"] or r["bad_exit_codes"]]
    times = sorted(t for r in rounds for t in r["shutdown_s"])
    print(f"\n{len(rounds)} rounds (load {args.load}), {len(failed)} with a failure; {len(times)} node shutdowns, "
          f"median {times[len(times) // 2] if times else float('nan'):.2f} s, slowest {times[-1] if times else float('nan'):.2f} s")
    for r in failed:
        print(f"  round {r['round']}: pytest {r['pytest_exit']}, hangs {r['hangs']}, watchdog {r['watchdog_logs']}, "
              f"bad exits {r['bad_exit_codes']} (output: {args.out}/round_{r['round']:03d}.txt)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
