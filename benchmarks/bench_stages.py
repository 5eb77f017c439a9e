#!/usr/bin/env python3
"""Per-stage latency of the CRACT network (not a test): median and p95 milliseconds per stage.

Stages, as the tracker runs them (DESIGN.md, "The tracker step"):
  template branch   127 crop -> phi_34 + RPN template kernels + f_init (once per target)
  search branch     255 crop -> phi_34 (every frame; also fused-BN, channels_last, phi4 dilate)
  RPN + NMS         depthwise xcorr heads, decoding, NMS down to N = 10 proposals
  PRoIAlign         10 boxes, 6x6 / 3x3 / 1x1 fused
  R, I              10 proposals each
  D                 10 proposals (cract_core.discriminator when present, else a stand-in of the
                    same layer sizes, and the output says so)

Usage:  .venv/bin/python benchmarks/bench_stages.py [--device cpu|cuda|auto] [--runs 30]
                                                  [--markdown docs/backbone_shapes_raw.md]

On the CPU it uses two threads (the target machine's budget).  Run it with the machine otherwise
idle: the figures are only comparable between runs on the same, equally loaded machine.
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without install

from cract_core.config import config_from_dict  # noqa: E402
from cract_core.model import CRACTNet  # noqa: E402

TEMPLATE_BOX = (31.5, 31.5, 95.5, 95.5)  # a 64 x 64 target at the centre of the 127 crop


@dataclass
class Timing:
    backbone: str
    stage: str
    median_ms: Optional[float]
    p95_ms: Optional[float]
    note: str = ""
    min_ms: Optional[float] = None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_interleaved(fns: list[Callable[[], object]], device: torch.device, runs: int, warmup: int) -> list[list[float]]:
    """Per-call milliseconds of every function, ``runs`` rounds after ``warmup`` untimed ones.

    Round-robin (one call of each per round) so that a change in machine load during the run hits
    every stage and variant alike: on a shared machine that is what keeps the comparisons (fused vs
    plain, resize vs dilate) fair.  Each call is timed alone (synchronised on CUDA) because the
    tracker runs one frame at a time: per-call latency, not throughput, is what it pays.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            _sync(device)
            samples[i].append((time.perf_counter() - t0) * 1000.0)
    return samples


def summarise(samples: list[float]) -> tuple[float, float, float]:
    """median, p95, min (ms)."""
    return statistics.median(samples), float(np.percentile(samples, 95)), min(samples)


def _crop(size: int, device: torch.device, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (1, 3, size, size), dtype=torch.uint8, generator=gen).to(device)


def _build(name: str, phi4_mode: str, device: torch.device) -> CRACTNet:
    weights = None if name == "efficientnet_lite0" else "none"
    cfg = config_from_dict({"backbone": {"name": name, "weights": weights, "phi4_mode": phi4_mode}})
    torch.manual_seed(0)
    return CRACTNet(cfg, device=device).eval()


class StandInD(nn.Module):
    """Layer sizes of D (conv1x1 384 -> 32, fc 32*6*6 = 1152 -> 64, fc 64 -> 1), used only when
    cract_core/discriminator.py is not there yet."""

    def __init__(self, in_channels: int, conv_channels: int, pooled: int, hidden: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, conv_channels, 1)
        self.fc1 = nn.Linear(conv_channels * pooled * pooled, hidden)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(F.relu(self.conv(f)).flatten(1)))).squeeze(-1)


def _shape_rows(name: str, phi4_mode: str, net: CRACTNet, device: torch.device) -> list[tuple]:
    """The table's shape rows of one network: phi_3, raw phi_4, phi_4 at stride 16 and phi_34 for
    the template (127) and the search (255) crop."""
    rows = []
    for crop in (127, 255):
        c = _crop(crop, device, 3)
        p3, p4 = net.backbone(c)
        raw4 = net.backbone.body.features(net.backbone.preprocess(c))[1]
        rows.append((name, phi4_mode, crop, tuple(p3.shape[1:]), tuple(raw4.shape[1:]), tuple(p4.shape[1:]),
                     tuple(net.neck(p3, p4).shape[1:])))
    return rows


def make_discriminator(net: CRACTNet, features: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], str]:
    cc = net.cfg.crac
    try:
        from cract_core import discriminator as disc
    except ImportError:
        d = StandInD(features.shape[1], cc.discriminator_conv_channels, features.shape[-1], cc.discriminator_fc)
        d = d.to(features.device).eval()
        return d, "stand-in conv1x1+fc+fc (cract_core/discriminator.py absent)"
    conv = disc.init_conv_pca(features, cc.discriminator_conv_channels)
    fc = disc.init_fc(cc.discriminator_conv_channels * features.shape[-1] ** 2, cc.discriminator_fc,
                      device=features.device, dtype=features.dtype)
    return (lambda f: disc.forward(f, conv, fc)), "cract_core.discriminator.forward"


def bench_backbone(name: str, device: torch.device, runs: int, warmup: int) -> tuple[list[Timing], list[tuple]]:
    shapes: list[tuple] = []
    weights_note = "" if name == "efficientnet_lite0" else "random weights (ImageNet ResNet-18 file absent here; same cost)"
    net = _build(name, "resize", device)
    z, x = _crop(127, device, 1), _crop(255, device, 2)
    box = torch.tensor(TEMPLATE_BOX, device=device)
    stages: list[tuple[str, Callable[[], object], str]] = []
    failures: list[Timing] = []

    with torch.no_grad():
        state = net.init_target(z, box)
        phi_x = net.extract(x)
        props, _, _, _ = net.propose(phi_x, state)
        f = net.pool(phi_x, props)
        d_fn, d_note = make_discriminator(net, f)

        stages += [
            ("template branch (127 -> phi_34 + kernels + f_init)", lambda: net.init_target(z, box), weights_note),
            ("search branch (255 -> phi_34)", lambda: net.extract(x), weights_note),
            ("RPN + NMS (N=10)", lambda: net.propose(phi_x, state), ""),
            ("PRoIAlign (10 boxes)", lambda: net.pool(phi_x, props), ""),
            ("R (10 proposals)", lambda: net.regressor(f, state.f_init), ""),
            ("I (10 proposals)", lambda: net.identifier(f, state.f_init), ""),
            ("D (10 proposals)", lambda: d_fn(f), d_note),
            ("R + Eq.4 + re-pool + I (refine, 10)", lambda: net.refine(phi_x, props, state.f_init), ""),
        ]

        # Search-branch variants: the "measure, choose" of the backbone's inference set-up.
        fused = copy.deepcopy(net).fuse_for_inference()
        diff = (fused.extract(x) - phi_x).abs().max().item()
        fused_note = f"max |diff| {diff:.1e}" if name == "efficientnet_lite0" else "no-op for resnet18 (only Lite0 is folded)"
        cl = copy.deepcopy(net).to(memory_format=torch.channels_last)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        fcl = copy.deepcopy(fused).to(memory_format=torch.channels_last)
        stages += [
            ("search branch, fuse_for_inference()", lambda: fused.extract(x), fused_note),
            ("search branch, channels_last", lambda: cl.extract(x_cl), ""),
            ("search branch, fused + channels_last", lambda: fcl.extract(x_cl), ""),
        ]

        shapes += _shape_rows(name, "resize", net, device)

        # phi_4 by dilation (stride-16 last stage) instead of resizing.
        try:
            dil = _build(name, "dilate", device)
        except Exception as exc:  # noqa: BLE001 - report, do not hide: the table says it failed and why
            failures.append(Timing(name, "search branch, phi4_mode=dilate", None, None, f"FAILED to build: {type(exc).__name__}: {exc}"))
            for crop in (127, 255):
                shapes.append((name, "dilate", crop, None, None, None, f"FAILED: {type(exc).__name__}"))
        else:
            stages += [
                ("search branch, phi4_mode=dilate", lambda: dil.extract(x), ""),
                ("template 127 -> phi_34, phi4_mode=dilate", lambda: dil.extract(z), ""),
            ]
            shapes += _shape_rows(name, "dilate", dil, device)

        samples = time_interleaved([fn for _, fn, _ in stages], device, runs, warmup)

    out = []
    for (stage, _, stage_note), ms in zip(stages, samples):
        med, p95, low = summarise(ms)
        out.append(Timing(name, stage, med, p95, stage_note, low))
    return out + failures, shapes


def _fmt_shape(s) -> str:
    return "-" if s is None else (s if isinstance(s, str) else " x ".join(str(v) for v in s))


def render(timings: list[Timing], shapes: list[tuple], header: str) -> str:
    lines = [header, "", "| backbone | stage | median ms | p95 ms | min ms | note |", "|---|---|---:|---:|---:|---|"]

    def ms(v: Optional[float]) -> str:
        return "-" if v is None else f"{v:.2f}"

    for t in timings:
        lines.append(f"| {t.backbone} | {t.stage} | {ms(t.median_ms)} | {ms(t.p95_ms)} | {ms(t.min_ms)} | {t.note} |")
    lines += ["", "| backbone | phi4_mode | crop | phi_3 | phi_4 before resize | phi_4 | phi_34 |", "|---|---|---:|---|---|---|---|"]
    for name, mode, crop, p3, raw4, p4, p34 in shapes:
        lines.append(f"| {name} | {mode} | {crop} | {_fmt_shape(p3)} | {_fmt_shape(raw4)} | {_fmt_shape(p4)} | {_fmt_shape(p34)} |")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="auto")
    ap.add_argument("--runs", type=int, default=30, help="timed runs per stage (after warm-up)")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (the target machine has 2 cores)")
    ap.add_argument("--backbones", nargs="+", default=["efficientnet_lite0", "resnet18"],
                    choices=["efficientnet_lite0", "resnet18"])
    ap.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
    args = ap.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: no CUDA device here")
    devices = []
    if args.device in ("cpu", "auto"):
        devices.append(torch.device("cpu"))
    if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()):
        devices.append(torch.device("cuda"))
    torch.set_num_threads(args.threads)

    blocks = []
    for device in devices:
        dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
        load = ""
        if hasattr(os, "getloadavg"):
            load = "; load average at start %.1f" % os.getloadavg()[0]
        header = (f"## {device.type}: {dev_name}; torch {torch.__version__}; eager float32, batch 1, "
                  f"{args.runs} interleaved runs after {args.warmup} warm-up{load}")
        timings: list[Timing] = []
        shapes: list[tuple] = []
        for name in args.backbones:
            t, s = bench_backbone(name, device, args.runs, args.warmup)
            timings += t
            shapes += s
        block = render(timings, shapes, header)
        print(block, flush=True)
        print()
        blocks.append(block)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text("\n\n".join(blocks) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
