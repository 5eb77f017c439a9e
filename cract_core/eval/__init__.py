"""Evaluation: metrics, trackers (cract + OpenCV baselines), runner, CLI; the loaders are cract_core.datasets.

Nothing here imports ROS; the cract tracker is imported only when it is asked for, so the
baselines and metrics work without torch models.  See cli.py for the command line and
runner.py for the summary.json schema.
"""
from cract_core.datasets import BENCHMARKS, DatasetError, Sequence, load_sequences
from cract_core.eval.metrics import score_sequence

__all__ = ["BENCHMARKS", "DatasetError", "Sequence", "load_sequences", "score_sequence"]
