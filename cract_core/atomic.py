"""Files that are either there whole or not at all, whenever the writing process is killed.

A file is written under a temporary name in the same folder, flushed to the disk (fsync), then
renamed over the final name (rename is atomic within a file system) and the folder is synced so
that the rename itself survives a power cut. A reader, or the next run after a crash, sees the
old file or the new one, never a prefix of the new one. Temporaries left by a killed writer are
named `<name>.<random>.tmp` beside the target and removed by the next write of that target.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Union

PathLike = Union[str, Path]

__all__ = ["atomic_write_bytes", "atomic_write_text", "fsync_dir", "remove_stale_temporaries", "temporary_beside"]


def fsync_dir(folder: PathLike) -> None:
    """Make a rename or a new entry in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def temporary_beside(path: PathLike) -> Path:
    """A new empty file `<name>.<random>.tmp` in the folder of `path`, readable as an ordinary output
    file would be (mkstemp makes it private)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    return Path(tmp)


def remove_stale_temporaries(path: PathLike) -> list[Path]:
    """Delete the `<name>.*.tmp` files a killed writer of `path` left behind; returns them."""
    path = Path(path)
    removed = []
    if path.parent.is_dir():
        for stale in path.parent.glob(f"{path.name}.*.tmp"):
            try:
                stale.unlink()
                removed.append(stale)
            except OSError:
                pass
    return removed


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    path = Path(path)
    tmp = temporary_beside(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
