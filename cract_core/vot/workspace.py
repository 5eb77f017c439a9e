"""cract-vot: write a vot-toolkit workspace from a folder of sequences or one of the project's splits.

    cract-vot --sequences @validation --out runs/vot_val
    cract-vot --sequences ../shared/data/sequences --only otb_bird2,uav_boat5 --protocol both --out runs/vot_ws
    cd runs/vot_val && vot evaluate cract nanotrack_v2 && vot analysis && vot report

What it writes under ``--out`` (vot-toolkit 0.9's local workspace; nothing is downloaded):

* ``sequences/<name>/color/%08d.jpg``: the frames as symbolic links to the sources (``--copy``
  copies them); a frame that is not a JPEG, and a spliced-in frame that must be resized to its
  host's size, is written as lossless PNG data under the ``.jpg`` name vot's pattern asks for
  (OpenCV and PIL read by content), so a tracker sees the very pixels cract-eval feeds it.
* ``sequences/<name>/groundtruth.txt``: ``x,y,w,h`` per frame in the benchmark's coordinates;
  ``NaN,NaN,NaN,NaN`` where the target is absent or unknown (vot-toolkit: not visible);
  ``sequences/<name>/sequence``: channel, fps, length and image size; ``sequences/list.txt``.
* ``cract_stack.yaml`` (:data:`STACK`): ``longterm``, VOT-LT's unsupervised experiment with its
  tracking precision / recall / F (``average_tpr``, ``pr_curve``, ``f_curve``), and
  ``unsupervised``, the short-term one with the average overlap (``average_accuracy``, burn-in 1:
  the initialisation frame is left out) and each sequence's (``accuracy``).
* ``config.yaml`` naming the stack and ``trackers.ini``: cract's configs and the baselines, each
  through ``cract-trax`` by its absolute path (vot-toolkit runs commands from a temporary folder;
  ``linkpaths`` would add folders to PATH, ``paths`` does not exist for TraX trackers).

``--protocol absence`` writes cract-eval's absence runs (cract_core/eval/absence.py: each sequence
cut away to another scene of the set and back, the same names and splices as ``cract-eval
--protocol absence`` with the same --absence-* options) instead of the plain sequences; ``both``
writes the two.  Exit status 0, or 2 for a bad command line, a missing folder or extra.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Iterable, Optional, Sequence as Seq

import cv2
import numpy as np

from cract_core.vot import EXIT_MISSING_EXTRA, install_hint

PROG = "cract-vot"
STACK_FILE = "cract_stack.yaml"
LONGTERM = "longterm"
SHORTTERM = "unsupervised"
# vot-toolkit's stack: the long-term experiment as VOT-LT2022 defines it (its redetection
# experiment left out: it needs the tracker to run on synthetic padded frames), and the
# bounding-box short-term challenge's unsupervised experiment.
STACK = f"""title: cract - VOT-LT precision/recall/F and unsupervised short-term average overlap (cract-vot)
experiments:
  {LONGTERM}:
    type: unsupervised
    repetitions: 1
    analyses:
      - type: average_tpr
        name: average_tpr
      - type: pr_curve
      - type: f_curve
  {SHORTTERM}:
    type: unsupervised
    repetitions: 1
    analyses:
      - type: average_accuracy
        name: accuracy
        burnin: 1
      - type: accuracy
        name: sequence_accuracy
        burnin: 1
"""
# Goal beyond (``--multistart``): VOT2020+'s short-term experiment, the tracker started at anchor
# frames about ANCHOR_SPACING apart and run towards the longer end; EAO over the interval the
# sequences' lengths give (eao_interval).
# The experiment is multistart.py's: vot-toolkit 0.9.0's own cannot start a tracker.
ANCHOR_SPACING = 50
MULTISTART = "baseline"
MULTISTART_STACK = """  {name}:
    type: cract_core.vot.multistart.MultiStartExperiment
    analyses:
      - type: multistart_eao_score
        name: eaoscore
        low: {low}
        high: {high}
      - type: multistart_eao_curve
        name: eaocurve
        high: {high}
      - type: multistart_average_ar
        name: ar
"""


def eao_interval(lengths: Seq[int]) -> tuple[int, int]:
    """The EAO interval the VOT reports derive from their datasets (VOT2015 on): where a Gaussian
    kernel density of the sequence lengths is highest, the shortest interval around its mode that
    holds half the density (VOT-ST2022's 115..755 fits its own, much longer sequences)."""
    x = np.asarray(lengths, dtype=np.float64)
    if x.size == 0:
        raise ValueError("no sequences")
    bw = max(1.06 * x.std() * x.size ** -0.2, 1.0)  # Silverman's rule; one frame at least
    grid = np.arange(max(1.0, x.min() - 3 * bw), x.max() + 3 * bw + 1)
    density = np.exp(-0.5 * ((grid[:, None] - x[None, :]) / bw) ** 2).sum(axis=1)
    order = np.argsort(density)[::-1]  # highest density first, until half the mass is in
    taken = order[: int(np.searchsorted(np.cumsum(density[order]), 0.5 * density.sum())) + 1]
    return int(grid[taken].min()), int(grid[taken].max())
# vot-toolkit waits this long (s) for each answer; cract's first one loads torch and the weights.
TRAX_TIMEOUT = 300
NANOTRACK_ID = "nanotrack_v2"


def format_box(row: np.ndarray) -> str:
    """One groundtruth.txt row: the numbers as read (no rounding), NaN where no box is known."""
    if not np.all(np.isfinite(row)) or row[2] <= 0 or row[3] <= 0:
        return "NaN,NaN,NaN,NaN"
    return ",".join(f"{float(v):.10g}" for v in row)


def anchors(seq) -> np.ndarray:
    """VOT2020's anchors as its datasets write them (``anchor.value``, one number a frame): 1 where the
    tracker starts and runs forward, -1 where it starts and runs backward (towards the longer part of
    the sequence), 0 elsewhere; the first frame with a box in every ANCHOR_SPACING frames."""
    gt = np.asarray(seq.groundtruth, dtype=np.float64).reshape(-1, 4)
    with np.errstate(invalid="ignore"):
        visible = np.all(np.isfinite(gt), axis=1) & (gt[:, 2] > 0) & (gt[:, 3] > 0) & ~np.asarray(seq.absent, dtype=bool)
    n = len(gt)
    out = np.zeros(n, dtype=np.int64)
    for start in range(0, n - 1, ANCHOR_SPACING):
        hits = np.flatnonzero(visible[start:start + ANCHOR_SPACING]) + start
        hits = hits[hits < n - 1]  # an anchor on the last frame (or first, backward) would track nothing
        if hits.size:
            i = int(hits[0])
            out[i] = 1 if n - 1 - i >= i else -1
    return out


def _needs_pixels(seq: object, index: int, src: Path) -> bool:
    """A frame whose file is not what the tracker must see: not a JPEG, or resized by the splice."""
    foreign = getattr(seq, "foreign", None)  # absence.SplicedSequence: donor frames, resized to the host
    if foreign is not None and bool(foreign[index]):
        return True
    return src.suffix.lower() not in (".jpg", ".jpeg")


def write_sequence(seq, dest: Path, copy: bool = False, multistart: bool = False) -> None:
    """One sequence in vot-toolkit's layout (module docstring)."""
    if len(seq) < 2:
        raise ValueError(f"sequence {seq.name}: {len(seq)} frame(s); a tracker needs at least 2")
    seq.init_box  # a first frame without a box cannot initialise anything: fail here, not in vot
    color = dest / "color"
    color.mkdir(parents=True, exist_ok=True)
    for i in range(len(seq)):
        target = color / f"{i + 1:08d}.jpg"
        if target.is_symlink() or target.exists():
            target.unlink()
        src = Path(seq.frame_path(i)).resolve()
        if _needs_pixels(seq, i, src):
            ok, data = cv2.imencode(".png", seq.image(i))
            if not ok:
                raise OSError(f"cannot encode frame {i} of {seq.name}")
            target.write_bytes(data.tobytes())
        elif copy:
            shutil.copyfile(src, target)
        else:
            target.symlink_to(src)
    gt = np.asarray(seq.groundtruth, dtype=np.float64).reshape(-1, 4).copy()
    gt[np.asarray(seq.absent, dtype=bool)] = np.nan  # flagged absent (LaSOT, GOT-10k): not visible
    (dest / "groundtruth.txt").write_text("".join(format_box(r) + "\n" for r in gt))
    if multistart:
        (dest / "anchor.value").write_text("".join(f"{v}\n" for v in anchors(seq)))
    w, h = seq.image_size()
    fps = int(round(seq.fps)) if seq.fps else 30  # vot reads fps as an integer
    (dest / "sequence").write_text(
        f"channels.color=color/%08d.jpg\nformat=default\nfps={fps}\nlength={len(seq)}\nwidth={w}\nheight={h}\n")


def trax_command(*args: str) -> str:
    """The absolute cract-trax command (the console script beside this interpreter, else ``python -m``)."""
    script = Path(sys.executable).parent / "cract-trax"
    head = [str(script)] if script.is_file() else [sys.executable, "-m", "cract_core.vot.trax_server"]
    return " ".join(head + list(args))


def tracker_id(config: str) -> str:
    """'cract_nanotrack_cascade.yaml' -> 'cract_nanotrack_cascade' (vot identifiers: letters, digits, - and _)."""
    stem = Path(config).stem
    ident = "".join(c if c.isalnum() or c in "-_" else "_" for c in stem)
    return ident if ident.startswith("cract") else f"cract_{ident}"


def trackers_ini(configs: Iterable[str], baselines: Iterable[str], threads: Optional[int]) -> str:
    """trackers.ini: ``cract`` is the shipped default; other configs and the baselines follow."""
    from cract_core.config import default_config_path

    extra = [f"--threads {threads}"] if threads else []
    default = default_config_path().name
    blocks = []
    for config in configs:
        ident = "cract" if Path(config).name == default else tracker_id(config)
        label = f"cract ({Path(config).name}{', shipped default' if Path(config).name == default else ''})"
        # vot-toolkit starts trackers in a temporary folder: a relative path would not resolve there.
        arg = str(Path(config).resolve()) if Path(config).is_file() else config
        blocks.append(_block(ident, label, trax_command("--config", arg, *extra)))
    for name in baselines:
        ident = NANOTRACK_ID if name == "nanotrack" else name
        label = "OpenCV NanoTrack V2" if name == "nanotrack" else f"OpenCV {name}"
        blocks.append(_block(ident, label, trax_command("--baseline", name, *extra)))
    return "\n".join(blocks)


def _block(ident: str, label: str, command: str) -> str:
    return (f"[{ident}]\nlabel = {label}\nprotocol = trax\ncommand = {command}\ntimeout = {TRAX_TIMEOUT}\n"
            f"env_OMP_NUM_THREADS = 1\n")


def write_workspace(out: Path, sequences: list, configs: list[str], baselines: list[str],
                    threads: Optional[int] = 1, copy: bool = False, multistart: bool = False) -> None:
    """The whole workspace (module docstring); ``sequences`` are cract_core.datasets Sequences."""
    names = [s.name for s in sequences]
    if len(set(names)) != len(names):
        raise ValueError(f"sequence names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}")
    root = out / "sequences"
    root.mkdir(parents=True, exist_ok=True)
    for seq in sequences:
        write_sequence(seq, root / seq.name, copy, multistart)
    (root / "list.txt").write_text("".join(n + "\n" for n in names))
    stack = STACK
    if multistart:
        low, high = eao_interval([len(s) for s in sequences])
        stack += MULTISTART_STACK.format(name=MULTISTART, low=low, high=high)
    (out / STACK_FILE).write_text(stack)
    (out / "config.yaml").write_text(f"registry:\n- ./trackers.ini\nstack: {STACK_FILE}\nsequences: sequences\n")
    (out / "trackers.ini").write_text(trackers_ini(configs, baselines, threads))
    (out / "results").mkdir(exist_ok=True)


def load_sequences(args: argparse.Namespace) -> list:
    """The sequences of --sequences (a split or a folder), --only, --max-frames and --protocol."""
    from cract_core import datasets
    from cract_core.eval import absence

    only = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    seqs, _ = datasets.load_named_sequences(args.sequences, args.extra_data, args.benchmark, only)
    seqs = [s.head(args.max_frames) for s in seqs]
    out = []
    if args.protocol in ("ope", "both"):
        out += seqs
    if args.protocol in ("absence", "both"):
        out += absence.absence_runs(seqs, args.absence_k, args.absence_gap, args.absence_scenes)
    return out


def build_parser() -> argparse.ArgumentParser:
    from cract_core import datasets
    from cract_core.eval import absence

    p = argparse.ArgumentParser(prog=PROG, description="Write a vot-toolkit workspace (sequences, stack, "
                                "trackers.ini) for cract and its baselines.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--sequences", required=True,
                   help=f"a folder of sequences or a split: {', '.join('@' + s for s in datasets.SPLITS)}")
    p.add_argument("--extra-data", type=Path, default=None, help="a split's assembled extra sequences")
    p.add_argument("--benchmark", choices=datasets.BENCHMARKS, default=None, help="layout of --sequences (default: detected)")
    p.add_argument("--only", default=None, help="comma-separated sequence names")
    p.add_argument("--max-frames", type=int, default=None, help="the first N frames of each sequence")
    p.add_argument("--protocol", choices=("ope", "absence", "both"), default="ope",
                   help="plain sequences, cract-eval's absence runs (spliced), or both")
    p.add_argument("--absence-k", type=int, default=None, help="absence: host frames before the cut (default: a third)")
    p.add_argument("--absence-gap", type=int, default=absence.DEFAULT_GAP, help="absence: frames cut away")
    p.add_argument("--absence-scenes", type=int, default=absence.DEFAULT_SCENES, help="absence: runs per sequence")
    p.add_argument("--configs", default=None,
                   help="comma-separated cract configs (bare names of config/model/ or paths); default: the shipped one")
    p.add_argument("--baselines", default="nanotrack", help="comma-separated cract-trax baselines ('' for none)")
    p.add_argument("--threads", type=int, default=1, help="--threads for each cract-trax (0: the libraries' default)")
    p.add_argument("--copy", action="store_true", help="copy the frames instead of linking them")
    p.add_argument("--multistart", action="store_true",
                   help="add VOT2020+'s multistart short-term experiment (anchor.value per sequence, EAO)")
    p.add_argument("--out", required=True, type=Path, help="the workspace folder")
    return p


def main(argv: Optional[Seq[str]] = None) -> int:
    from cract_core.config import ConfigError, default_config_path, load_config
    from cract_core.vot.trax_server import BASELINES

    args = build_parser().parse_args(argv)
    try:
        import vot  # noqa: F401  (only to say early that the workspace cannot be run here)
    except ImportError:
        print(f"{PROG}: error: running the workspace needs vot-toolkit: {install_hint()}", file=sys.stderr)
        return EXIT_MISSING_EXTRA
    configs = [c.strip() for c in (args.configs or default_config_path().name).split(",") if c.strip()]
    baselines = [b.strip() for b in args.baselines.split(",") if b.strip()]
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        print(f"{PROG}: error: unknown baseline {', '.join(unknown)}; cract-trax has {', '.join(BASELINES)}", file=sys.stderr)
        return 2
    try:
        for c in configs:
            load_config(c)
        seqs = load_sequences(args)
        write_workspace(args.out, seqs, configs, baselines, args.threads or None, args.copy, args.multistart)
    except (ConfigError, OSError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    ids = ", ".join(line[1:-1] for line in (args.out / "trackers.ini").read_text().splitlines() if line.startswith("["))
    print(f"{PROG}: {len(seqs)} sequence(s) in {args.out}; trackers {ids}\n"
          f"  cd {args.out} && vot evaluate <tracker> && vot analysis && vot report", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
