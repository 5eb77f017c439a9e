"""Checkpoints of trained heads (written by cract_core.train, read by the tracker).

File format (docs/CONTRACTS.md)::

    {"format": "cract-heads-1", "config": to_dict(cfg), "step": int, "heads": net.head_state_dict(),
     "optimizer": ..., "scheduler": ..., "rng": ..., "extra": ...}

plus ``<path>.sha256`` beside it (``sha256sum`` format: ``<hex>  <file name>``).  Files are written to a
temporary name in the same folder, synced to the disk and renamed (cract_core.atomic), so a crash
mid-write (or a reader while a long run saves every few minutes) never sees a half-written
checkpoint. The new sidecar is written before the checkpoint is renamed: a save killed between
the two renames leaves the new checkpoint, the old sidecar and the new sidecar's temporary, and
the next load finishes that rename instead of reporting a checksum mismatch.

Everything stored is a plain container of tensors / numbers / strings so that the file loads with
``torch.load(weights_only=True)``: a checkpoint from the internet cannot run code when loaded.
"""
from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any, Optional, Union

import numpy as np
import torch

from cract_core.atomic import fsync_dir, remove_stale_temporaries, temporary_beside
from cract_core.errors import CheckpointError

FORMAT = "cract-heads-1"
PathLike = Union[str, Path]

__all__ = [
    "FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "sha256_of",
    "read_sha256_file",
    "capture_rng_state",
    "restore_rng_state",
    "export_heads",
]


def sha256_of(path: PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_sha256_file(path: PathLike) -> Optional[str]:
    """The hash recorded in ``<path>.sha256``, or None when there is no such file."""
    side = _sidecar(Path(path))
    if not side.is_file():
        return None
    text = side.read_text().strip().split()
    if not text or len(text[0]) != 64:
        raise CheckpointError(f"{side} does not hold a sha256 (expected '<64 hex digits>  <name>')")
    return text[0].lower()


def _unwrap(net: torch.nn.Module) -> torch.nn.Module:
    # DistributedDataParallel (and our loss wrapper) keep the real network in .module / .net.
    while True:
        if hasattr(net, "module") and isinstance(net.module, torch.nn.Module):
            net = net.module
        elif type(net).__name__ == "_LossModule" and hasattr(net, "net"):
            net = net.net
        else:
            return net


def capture_rng_state() -> dict:
    """Every global RNG a training step may touch, as weights_only-loadable values."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    """Inverse of :func:`capture_rng_state` (missing parts are left alone)."""
    if not state:
        return
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "numpy" in state:
        n = state["numpy"]
        np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "python" in state:
        py = state["python"]
        # weights_only loading turns the inner tuple into a list; random.setstate wants tuples.
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save_checkpoint(
    path: PathLike,
    net: torch.nn.Module,
    cfg: Any,
    step: int,
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    extra: Optional[dict] = None,
) -> str:
    """Write a checkpoint atomically and its ``.sha256``; returns the hex digest.

    ``net`` must offer ``head_state_dict()`` (CRACTNet); a DistributedDataParallel wrapper is
    unwrapped.  ``cfg`` is an ExperimentConfig or an already plain dict.
    """
    from cract_core.config import to_dict  # local: config imports nothing of ours, but keep it light

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    inner = _unwrap(net)
    if not hasattr(inner, "head_state_dict"):
        raise CheckpointError(f"{type(inner).__name__} has no head_state_dict(); only CRACTNet-like nets can be saved")
    heads = {k: v.detach().cpu().clone() for k, v in inner.head_state_dict().items()}
    payload = {
        "format": FORMAT,
        "config": cfg if isinstance(cfg, dict) else to_dict(cfg),
        "step": int(step),
        "heads": heads,
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": capture_rng_state(),
        "extra": extra or {},
    }
    side = _sidecar(path)
    remove_stale_temporaries(path)  # (also the sidecar's: "<name>.sha256.*.tmp")
    tmp = temporary_beside(path)
    tmp_side = None
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        # Never publish a file the tracker's weights-only loader would refuse (e.g. an object in
        # 'extra' that is not a plain container): fail here, at save time, with the reason.
        try:
            torch.load(tmp, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"checkpoint for {path} would not load with weights_only=True: {exc}") from None
        digest = sha256_of(tmp)
        tmp_side = temporary_beside(side)
        with open(tmp_side, "w") as fh:
            fh.write(f"{digest}  {path.name}\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        for leftover in (tmp, tmp_side):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        raise
    os.replace(tmp_side, side)
    fsync_dir(path.parent)
    return digest


def _finish_interrupted_save(path: Path, actual: str) -> Optional[str]:
    """A save killed between its two renames left the new checkpoint, the old sidecar and the new
    sidecar's temporary (which records this file's sha256): finish the rename; returns the hash
    then recorded, or None when there is no such temporary."""
    side = _sidecar(path)
    for pending in sorted(path.parent.glob(f"{side.name}.*.tmp")):
        try:
            recorded = pending.read_text().split()
        except OSError:
            continue
        if recorded and recorded[0].lower() == actual:
            os.replace(pending, side)
            fsync_dir(path.parent)
            return actual
    return None


def load_checkpoint(path: PathLike, expected_sha256: Optional[str] = None, map_location: Any = "cpu") -> dict:
    """Load and verify a checkpoint; raises CheckpointError saying exactly what is wrong.

    The file's sha256 is checked against ``expected_sha256`` when given (e.g. from the config's
    ``checkpoint_sha256``), else against ``<path>.sha256`` when that file exists.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist. Train one with "
            f"`cract-train --config config/train_<name>.yaml --data ... --out DIR` (it writes DIR/last.pt), "
            f"or point the config's 'checkpoint' at an existing .pt file"
        )
    actual = sha256_of(path)
    if expected_sha256 is not None:
        want, source = expected_sha256.strip().lower(), "the expected value given"
    else:
        want, source = read_sha256_file(path), f"{_sidecar(path)}"
        if want is not None and actual != want:
            want = _finish_interrupted_save(path, actual) or want
    if want is not None and actual != want:
        raise CheckpointError(
            f"checkpoint {path} fails its checksum: sha256 is {actual} but {source} says {want}. "
            f"The file is corrupt, truncated or a different model; re-download or retrain it"
        )
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for a non-checkpoint file
        raise CheckpointError(f"{path} is not a loadable torch checkpoint: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise CheckpointError(f"{path} is not a cract heads checkpoint: format is {got!r}, expected {FORMAT!r}")
    for key in ("config", "step", "heads"):
        if key not in data:
            raise CheckpointError(f"{path} lacks the {key!r} entry of a {FORMAT} checkpoint")
    data["sha256"] = actual
    return data


def export_heads(src: PathLike, dst: PathLike, half: bool = False) -> str:
    """Write the heads of ``src`` (any checkpoint) to ``dst`` without optimizer/scheduler/RNG state,
    optionally as float16 (half the size; the network casts back to float32 when loading).

    For shipping under models/: returns the sha256 that a config's ``checkpoint_sha256`` names.
    """
    data = load_checkpoint(src)
    heads = {
        k: (v.half() if half and v.is_floating_point() else v) for k, v in data["heads"].items()
    }

    class _Heads(torch.nn.Module):  # save_checkpoint takes a net; this one only carries the dict
        def head_state_dict(self) -> dict:
            return heads

    extra = dict(data.get("extra") or {})
    for key in ("generators", "scaler"):
        extra.pop(key, None)
    extra["exported_from"] = {"path": str(src), "sha256": data["sha256"], "half": half}
    return save_checkpoint(dst, _Heads(), data["config"], data["step"], None, None, extra)


def main(argv: Optional[list] = None) -> int:
    """``python -m cract_core.checkpoint export SRC DST [--half]`` and ``... verify PATH``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m cract_core.checkpoint")
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="heads only (no optimizer state), e.g. for models/")
    e.add_argument("src")
    e.add_argument("dst")
    e.add_argument("--half", action="store_true", help="store float16 tensors (half the size)")
    v = sub.add_parser("verify", help="check a checkpoint against its .sha256 and print what it holds")
    v.add_argument("path")
    args = p.parse_args(argv)
    try:
        if args.cmd == "export":
            digest = export_heads(args.src, args.dst, args.half)
            print(f"{digest}  {args.dst}")
        else:
            data = load_checkpoint(args.path)
            n = sum(t.numel() for t in data["heads"].values())
            print(f"{args.path}: {data['format']}, step {data['step']}, {len(data['heads'])} tensors, {n} values, sha256 {data['sha256']}")
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
