"""Exceptions shared across cract_core (see docs/CONTRACTS.md).

They subclass the built-in exceptions that callers would naturally catch, so that code which only
knows about ValueError / RuntimeError still handles them sensibly.
"""
from __future__ import annotations

__all__ = ["InvalidInputError", "NotInitializedError", "CheckpointError"]


class InvalidInputError(ValueError):
    """An input the tracker cannot use: wrong image shape/dtype, empty frame, bad argument."""


class NotInitializedError(RuntimeError):
    """A call that needs a target (e.g. Tracker.track) before Tracker.init was called."""


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, fails its sha256 check, or is not in the expected format."""
