"""Timings of the online discriminator's pieces (not a test): median / p95 milliseconds.

    .venv/bin/python benchmarks/bench_online.py [--repeats 5] [--threads 2] [--device cpu|cuda]

What it times, at the default config's shapes (features 3 x 128 channels at 6x6, D conv 32, fc 64):
  first-frame fit        OnlineLearner.initialize on 200 positives / 1000 negatives (conv + fc, GN-CG 6x10),
                         also with the conv restricted to the top-96 principal directions (init_conv_subspace)
  add_samples            one frame's 50 + 200 samples into the memory (sync: the 1x1 conv on them;
                         async: stored, projected by the worker)
  fc update, 1 frame     long-term update, memory = first frame + one frame of 50/200 (GN-CG 2x5)
  fc update, full memory long-term update with 100 reliable frames of positives and 20 of negatives
  short-term update      full memory, short-term set (last 20 frames)
  sample_boxes           50/200 and 200/1000 boxes
  score                  D on 10 proposals with the current snapshot
  async request / swap   what the hot path pays in async mode: maybe_update's hand-over and
                         begin_frame's swap
Features are synthetic (random with a class offset): the cost does not depend on their values.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cract_core.config import OnlineConfig  # noqa: E402
from cract_core.online import OnlineLearner, sample_boxes  # noqa: E402

C, S = 3 * 128, 6


def stats_ms(samples: list[float]) -> str:
    arr = np.asarray(samples) * 1e3
    return f"median {np.median(arr):9.2f} ms   p95 {np.percentile(arr, 95):9.2f} ms   (n={len(arr)})"


def timeit(fn: Callable[[], object], repeats: int, sync: Callable[[], None], warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
        sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return out


def make(gen: torch.Generator, n_pos: int, n_neg: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    pos = torch.randn(n_pos, C, S, S, generator=gen) * 0.5 + 0.3
    neg = torch.randn(n_neg, C, S, S, generator=gen) * 0.5
    return torch.cat([pos, neg]).to(device), torch.cat([torch.ones(n_pos), torch.zeros(n_neg)]).to(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs of the slow parts (fit, updates)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    cfg = OnlineConfig()
    gen = torch.Generator().manual_seed(0)
    first = make(gen, cfg.init_positives, cfg.init_negatives, device)
    frame = make(gen, cfg.update_positives, cfg.update_negatives, device)
    proposals = make(gen, 1, 9, device)[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}, features ({C}, {S}, {S})")

    learner = OnlineLearner(cfg, C, device=device, mode="sync")
    print(f"first-frame fit 200/1000      {stats_ms(timeit(lambda: learner.initialize(*first), args.repeats, sync))}")

    sub = OnlineLearner(cfg, C, device=device, mode="sync", conv_subspace=96)
    print(f"first-frame fit, conv in top-96 PCA {stats_ms(timeit(lambda: sub.initialize(*first), args.repeats, sync))}")

    learner.initialize(*first)
    print(f"add_samples 50/200 (sync)     {stats_ms(timeit(lambda: learner.add_samples(1, *frame), 50, sync))}")
    with OnlineLearner(cfg, C, device=device, mode="async") as alearner:
        alearner.initialize(*first)
        times = []
        for i in range(1, 21):
            t0 = time.perf_counter()
            alearner.add_samples(10 * i, *frame)
            sync()
            times.append(time.perf_counter() - t0)
            alearner.request_update(10 * i, "long")  # as the tracker does: a solve between collections
            alearner.wait_idle(timeout=600)
            alearner.begin_frame(10 * i + 1)
        print(f"add_samples 50/200 (async)    {stats_ms(times)}   (the worker projects them at the next solve)")

    learner.initialize(*first)
    learner.add_samples(10, *frame)
    print(f"fc update, first + 1 frame    {stats_ms(timeit(lambda: learner.request_update(10, 'long'), args.repeats, sync))}")

    for t in range(cfg.long_term_frames):
        learner.add_samples(t, *frame)
    pos, neg = learner.training_set("long")
    n_pos, n_neg = sum(len(p) for p in pos), sum(len(n) for n in neg)
    print(f"fc update, full memory        {stats_ms(timeit(lambda: learner.request_update(10, 'long'), args.repeats, sync))}"
          f"   [{n_pos} pos / {n_neg} neg]")
    pos, neg = learner.training_set("short")
    print(f"short-term update             {stats_ms(timeit(lambda: learner.request_update(10, 'short'), args.repeats, sync))}"
          f"   [{sum(len(p) for p in pos)} pos / {sum(len(n) for n in neg)} neg]")

    rng = np.random.default_rng(0)
    target = np.array([100.0, 110.0, 60.0, 40.0])
    print(f"sample_boxes 50/200           {stats_ms(timeit(lambda: sample_boxes(target, 50, 200, rng, bounds=(255, 255)), 200, sync))}")
    print(f"sample_boxes 200/1000         {stats_ms(timeit(lambda: sample_boxes(target, 200, 1000, rng, bounds=(255, 255)), 200, sync))}")
    print(f"score 10 proposals            {stats_ms(timeit(lambda: learner.score(proposals), 500, sync))}")

    # Async: what the hot path pays for an update (the solve itself runs on the worker).
    with OnlineLearner(cfg, C, device=device, mode="async") as alearner:
        alearner.initialize(*first)
        for t in range(cfg.short_term_frames):
            alearner.add_samples(t, *frame)
        req, swap = [], []
        for i in range(args.repeats * 4):
            t0 = time.perf_counter()
            alearner.request_update(10 * (i + 1), "long")
            req.append(time.perf_counter() - t0)
            alearner.wait_idle(timeout=600)
            t0 = time.perf_counter()
            alearner.begin_frame(10 * (i + 1) + 1)
            swap.append(time.perf_counter() - t0)
        print(f"async request (hot path)      {stats_ms(req)}")
        print(f"async swap in begin_frame     {stats_ms(swap)}")
        # A frame's score while a solve runs beside it (2 cores: the worker competes for them).
        alearner.request_update(1000, "long")
        during = []
        while alearner.busy and len(during) < 2000:
            alearner.begin_frame(1001)
            t0 = time.perf_counter()
            alearner.score(proposals)
            sync()
            during.append(time.perf_counter() - t0)
        if during:
            print(f"score 10 while solving        {stats_ms(during)}")


if __name__ == "__main__":
    main()
