"""Ground-truth text files as every tracking benchmark writes them: one parser for training and evaluation.

Boxes are rows of numbers separated by commas, tabs or spaces (OTB mixes them; UAV123 writes
``NaN,NaN,NaN,NaN`` for absent frames).  Flags (GOT-10k's ``absence.label``, LaSOT's
``full_occlusion.txt``) are 0/1 integers one a line or in one comma separated line.  Callers pass
the error class they raise (``DatasetError`` for training, ``LayoutError`` for evaluation), so each
side keeps its own exception type while the parsing, and its file:line messages, stay in one place.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Optional, Type, Union

import numpy as np

__all__ = ["read_box_rows", "read_flags"]

_SEPARATORS = re.compile(r"[,\s]+")


def read_box_rows(path: Union[str, Path], columns: int = 4, error: Type[Exception] = ValueError) -> np.ndarray:
    """``(N, columns)`` float64 rows of ``path``; 'NaN' parses as NaN, blank lines are skipped.

    A row that is not ``columns`` numbers raises ``error`` naming the file and line: that is a
    broken file, not an absent target.
    """
    rows = []
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text:
                continue
            fields = [f for f in _SEPARATORS.split(text) if f]
            try:
                values = [float(f) for f in fields]
            except ValueError:
                raise error(f"{path}:{lineno}: expected {columns} numbers, got {text!r}") from None
            if len(values) != columns:
                raise error(f"{path}:{lineno}: expected {columns} numbers, got {len(values)} in {text!r}")
            rows.append(values)
    return np.asarray(rows, dtype=np.float64).reshape(-1, columns)


def read_flags(path: Union[str, Path]) -> Optional[np.ndarray]:
    """Integer flags separated by newlines or commas; None when the file is absent."""
    path = Path(path)
    if not path.is_file():
        return None
    return np.asarray([int(float(t)) for t in path.read_text().replace(",", " ").split()], dtype=np.int64)
