"""Which sequence a training pair comes from, and which batches each process trains on.

* :class:`MixedSampler` picks a dataset by per-dataset weight, then a sequence uniformly within
  it (as pysot does: a long LaSOT video counts no more than a short GOT-10k one); it also finds
  "hard" negatives (another sequence with an object of the same category).
* :class:`StepBatchSampler` turns a training step into the global pair indices that each rank
  loads: pair ``i`` is a pure function of (seed, i), so resuming at step s, or running on 1 or 8
  processes, draws exactly the pairs that step would have drawn, and DataLoader workers need
  no shared state.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Optional, Sequence as Seq

import numpy as np
from torch.utils.data import Sampler

from cract_core.datasets import DatasetError, Sequence, TrackingDataset

__all__ = ["MixedSampler", "StepBatchSampler"]


class MixedSampler:
    def __init__(self, datasets: Seq[TrackingDataset], weights: Optional[Seq[float]] = None) -> None:
        if not datasets:
            raise DatasetError("no training data: give at least one --data NAME=PATH")
        weights = [1.0] * len(datasets) if weights is None else [float(w) for w in weights]
        if len(weights) != len(datasets):
            raise DatasetError(f"{len(weights)} weights for {len(datasets)} datasets")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise DatasetError(f"dataset weights must be >= 0 and not all 0, got {weights}")
        self.datasets = list(datasets)
        self.probs = np.asarray(weights, dtype=np.float64) / sum(weights)
        # Category index over all datasets: category -> [(dataset index, sequence index)].
        self.by_category: dict[str, list[tuple[int, int]]] = defaultdict(list)
        for d, ds in enumerate(self.datasets):
            for s, seq in enumerate(ds.sequences):
                if seq.category:
                    self.by_category[seq.category].append((d, s))
        # COCO-like still images: group -> sequences (other objects in the same image).
        self.by_group: dict[tuple[int, str], list[int]] = defaultdict(list)
        for d, ds in enumerate(self.datasets):
            for s, seq in enumerate(ds.sequences):
                if seq.group is not None:
                    self.by_group[(d, seq.group)].append(s)

    @property
    def num_sequences(self) -> int:
        return sum(len(d) for d in self.datasets)

    def get(self, key: tuple[int, int]) -> Sequence:
        return self.datasets[key[0]].sequences[key[1]]

    def sample(self, rng: np.random.Generator) -> tuple[int, int]:
        d = int(rng.choice(len(self.datasets), p=self.probs))
        return d, int(rng.integers(len(self.datasets[d])))

    def sample_other(self, rng: np.random.Generator, key: tuple[int, int], hard: bool) -> tuple[tuple[int, int], bool]:
        """A sequence that shows a different object than ``key``; returns (key, was_hard).

        Hard: the same category (another person among persons, another car), or another object of
        the same still image.  Falls back to any other sequence when no such one exists.
        """
        seq = self.get(key)
        if hard:
            pool: list[tuple[int, int]] = []
            if seq.group is not None:
                pool = [(key[0], s) for s in self.by_group[(key[0], seq.group)] if s != key[1]]
            if not pool and seq.category:
                pool = [k for k in self.by_category[seq.category] if k != key]
            if pool:
                return pool[int(rng.integers(len(pool)))], True
        if self.num_sequences < 2:
            raise DatasetError("negative pairs need at least two sequences; set train.negative_pair_prob: 0")
        for _ in range(100):
            other = self.sample(rng)
            if other != key:
                return other, False
        # Only reachable when the weights put all mass on a one-sequence dataset.
        flat = [(d, s) for d, ds in enumerate(self.datasets) for s in range(len(ds)) if (d, s) != key]
        return flat[int(rng.integers(len(flat)))], False


class StepBatchSampler(Sampler[list[int]]):
    """Yields, for steps ``start_step .. total_steps-1``, this rank's share of each global batch.

    Global step s covers pair indices ``[s*B*W, (s+1)*B*W)`` (B = per-rank batch, W = world size);
    rank r takes the r-th slice of B, like DistributedSampler does for a finite dataset.
    """

    def __init__(self, batch_size: int, total_steps: int, start_step: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad batch_size={batch_size}, rank={rank}, world_size={world_size}")
        self.batch_size, self.total_steps, self.start_step = batch_size, total_steps, start_step
        self.rank, self.world_size = rank, world_size

    def indices(self, step: int) -> list[int]:
        base = (step * self.world_size + self.rank) * self.batch_size
        return list(range(base, base + self.batch_size))

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.total_steps):
            yield self.indices(step)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step)
