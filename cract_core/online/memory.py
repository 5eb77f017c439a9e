"""The learner's sample memory: one _MemFrame per add_samples call (projected by the fixed conv on
first use) and the choice of whole frames that fit an update's sample budget."""
from __future__ import annotations

from typing import Sequence

import torch

from ..discriminator import ConvParams, conv_forward

# Async mode: memory frames whose 1x1 conv still waits for the worker; beyond this many the hot
# path projects the oldest itself (raw features are 12x the size of the conv activations).
MAX_UNPROJECTED = 3


def _spread(sizes: Sequence[int], budget: int) -> list[int]:
    """Indices of whole frames (oldest first) holding at most ``budget`` samples: all when they
    fit, else frames evenly spaced over the memory with the newest always in.

    Whole frames keep each frame's hard negatives (the tracker appends them to a frame's rows), and
    spacing keeps the memory's whole time span.  Deterministic, so sync and async agree.
    """
    n = len(sizes)
    total = sum(sizes)
    if total <= budget:
        return list(range(n))
    if budget <= 0 or n == 0:
        return []
    k = max(int(budget // max(total / n, 1.0)), 1)
    if k >= n:
        return list(range(n))
    # k indices spread over 0..n-1 with the last one at n-1 (the newest frame).
    idx = sorted({n - 1 - int(round(i * (n - 1) / max(k - 1, 1))) for i in range(k)}) if k > 1 else [n - 1]
    while len(idx) > 1 and sum(sizes[i] for i in idx) > budget:
        idx.pop(0)  # frames of unequal size: drop the oldest until it fits
    return idx


class _MemFrame:
    """One add_samples call in the memory: raw features until projected by the fixed conv.

    In async mode the 1x1 conv of a frame's samples runs on the worker, at the first solve that
    uses it, not on the hot path.  ``data`` is replaced by one assignment, ("raw", features, mask)
    -> ("hidden", positives, negatives), so a reader on another thread sees one or the other whole;
    if two threads project the same frame at once both compute the same thing and one wins.
    """

    __slots__ = ("index", "n_pos", "n_neg", "conv", "data")

    def __init__(self, index: int, features: torch.Tensor, pos_mask: torch.Tensor, conv: ConvParams):
        self.index = index
        self.n_pos = int(pos_mask.sum())
        self.n_neg = int(pos_mask.numel() - self.n_pos)
        self.conv = conv
        self.data: tuple = ("raw", features, pos_mask)

    @property
    def projected(self) -> bool:
        return self.data[0] == "hidden"

    def hidden(self) -> tuple[torch.Tensor, torch.Tensor]:
        kind, a, b = self.data
        if kind == "hidden":
            return a, b
        with torch.no_grad():
            h = conv_forward(a, self.conv).flatten(1)
        if a.is_cuda:
            # The raw features die with this frame's old data, maybe while this (worker) stream
            # still reads them: the allocator must not hand their memory out before it is done.
            a.record_stream(torch.cuda.current_stream(a.device))
        pos, neg = h[b], h[~b]
        self.data = ("hidden", pos, neg)
        return pos, neg
