"""Named splits of the project's own data: ../shared/data/sequences plus the assembled extra set.

    @validation   otb_bird2 from sequences/ plus the manifest's ``validation`` entries (11 sequences;
                  full-length otb_woman, uav_boat5 and uav_person11 among them)
    @train        sequences/ minus the old validation four and minus every short sequence that a
                  manifest entry supersedes, plus the manifest's ``train`` entries
    @validation4  the old validation four of sequences/ (otb_bird2, otb_woman, uav_boat5,
                  uav_person11): needs no assembled data, so CI can run it
    @all          @validation followed by @train

Where the pieces are (:class:`DataLocations`): ``$CRACT_SHARED_DATA`` (default ``../shared/data``
next to the project root) holds ``sequences/`` and ``extra/manifest.json``; the extra sequences
that ``extra/assemble.py`` wrote are in ``$CRACT_EXTRA_DATA`` (default ``data/extra`` under the
project root; the CLIs' ``--extra-data``).  An extra sequence is used only when it is complete: its
image count and the sha256 of its groundtruth.txt match the manifest, so a half-written one is
reported (with the assemble command) instead of trained or scored on.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

from cract_core.config import project_root
from cract_core.datasets.formats import Names, detect_benchmark, load_folder_sequence, load_sequences, named_dataset
from cract_core.datasets.sequence import (
    DatasetError,
    MissingDataError,
    NameFilter,
    PathLike,
    Sequence,
    TrackingDataset,
    list_images,
    require_dir,
)

ENV_SHARED_DATA = "CRACT_SHARED_DATA"
ENV_EXTRA_DATA = "CRACT_EXTRA_DATA"
SPLITS = ("train", "validation", "validation4", "all")
# The suggested validation split of ../shared/data/README.md (before the extra set): never trained on.
VALIDATION4: tuple[str, ...] = ("otb_bird2", "otb_woman", "uav_boat5", "uav_person11")


@dataclass(frozen=True)
class DataLocations:
    """Where a split's sequences live: the short ones, the extra manifest, the assembled extra ones."""

    sequences: Path
    manifest: Path
    extra: Path

    @classmethod
    def resolve(cls, extra: Optional[PathLike] = None, environ: Optional[Mapping[str, str]] = None) -> "DataLocations":
        """The documented defaults: ``extra`` (a CLI's --extra-data) over $CRACT_EXTRA_DATA over
        <project>/data/extra; $CRACT_SHARED_DATA over <project>/../shared/data."""
        environ = os.environ if environ is None else environ
        root = project_root()
        shared = Path(environ.get(ENV_SHARED_DATA) or root.parent / "shared" / "data").expanduser()
        extra_dir = Path(extra or environ.get(ENV_EXTRA_DATA) or root / "data" / "extra").expanduser()
        return cls(shared / "sequences", shared / "extra" / "manifest.json", extra_dir)


@dataclass(frozen=True)
class SplitMember:
    """One sequence of a split: its folder, and its manifest entry when it is an extra sequence."""

    name: str
    folder: Path
    entry: Optional[dict] = None

    @property
    def supersedes(self) -> list[str]:
        return list(self.entry.get("supersedes", [])) if self.entry else []


def split_from_spec(spec: str) -> Optional[str]:
    """'@train' -> 'train'; None for anything that is not an @-name; an unknown @-name is an error."""
    if not spec.startswith("@"):
        return None
    name = spec[1:]
    if name not in SPLITS:
        raise DatasetError(f"unknown split {spec!r}; expected one of {', '.join('@' + s for s in SPLITS)}")
    return name


def read_manifest(path: PathLike) -> list[dict]:
    """The entries of the extra set's manifest.json, checked for the fields the splits use."""
    path = Path(path)
    if not path.is_file():
        raise MissingDataError(f"extra manifest {path} does not exist (set ${ENV_SHARED_DATA} to the folder "
                               "that holds sequences/ and extra/manifest.json)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: not valid JSON: {exc}") from None
    entries = data.get("sequences") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise DatasetError(f"{path}: expected a list of sequences (or {{'sequences': [...]}})")
    seen = set()
    for i, e in enumerate(entries):
        name = e.get("name") if isinstance(e, dict) else None
        problems = [] if isinstance(name, str) and name else ["no name"]
        if isinstance(e, dict):
            if e.get("split") not in ("train", "validation"):
                problems.append(f"split {e.get('split')!r} is not train or validation")
            if not isinstance(e.get("frames"), int) or e["frames"] < 1:
                problems.append(f"frames {e.get('frames')!r} is not a positive integer")
            if not isinstance(e.get("groundtruth_sha256"), str):
                problems.append("no groundtruth_sha256")
            if not isinstance(e.get("supersedes", []), list):
                problems.append("supersedes is not a list")
        if name in seen:
            problems.append("named twice")
        if problems:
            raise DatasetError(f"{path}: entry {i} ({name}): {'; '.join(problems)}")
        seen.add(name)
    return entries


def _short_sequence_names(folder: Path) -> list[str]:
    folder = require_dir(folder, f"sequences folder (set ${ENV_SHARED_DATA})")
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and (p / "img").is_dir())


def split_members(split: str, locations: DataLocations) -> list[SplitMember]:
    """The sequences of ``split`` (one of SPLITS), in order: sequences/ first, then the manifest's.

    Reads the manifest and, for train and all, lists sequences/; needs no assembled data.
    """
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")

    def short(names: list[str]) -> list[SplitMember]:
        return [SplitMember(n, locations.sequences / n) for n in names]

    if split == "validation4":
        return short(list(VALIDATION4))
    entries = read_manifest(locations.manifest)
    extra = {s: [SplitMember(e["name"], locations.extra / e["name"], e) for e in entries if e["split"] == s]
             for s in ("train", "validation")}
    # A validation *_full replaces its short version in validation too (otb_woman -> otb_woman_full).
    replaced_in_validation = {n for m in extra["validation"] for n in m.supersedes}
    validation = short([n for n in VALIDATION4 if n not in replaced_in_validation]) + extra["validation"]
    if split == "validation":
        return validation
    superseded = {n for e in entries for n in e.get("supersedes", [])}
    train_short = [n for n in _short_sequence_names(locations.sequences) if n not in VALIDATION4 and n not in superseded]
    train = short(train_short) + extra["train"]
    # Never train on a validation image: no train member may be, or replace, a validation one.
    held_out = {m.name for m in validation} | replaced_in_validation | set(VALIDATION4)
    leaks = [m.name for m in train if m.name in held_out or held_out & set(m.supersedes)]
    if leaks:
        raise DatasetError(f"{locations.manifest}: train sequences {', '.join(leaks)} hold validation images")
    members = validation + train if split == "all" else train
    names = [m.name for m in members]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise DatasetError(f"@{split}: {', '.join(twice)} both in {locations.sequences} and in the manifest")
    return members


def split_names(split: str, locations: DataLocations) -> list[str]:
    """Every sequence name whose images ``split`` holds: its members and the short sequences they
    supersede (for --include/--exclude: ``--exclude @validation`` also leaves out otb_woman)."""
    members = split_members(split, locations)
    names = [m.name for m in members]
    return names + [n for m in members for n in m.supersedes if n not in names]


def _assembly_problem(member: SplitMember) -> Optional[str]:
    """Why an extra sequence's folder is not what assemble.py writes for its entry (None when it is)."""
    entry, folder = member.entry, member.folder
    if not folder.is_dir():
        if (folder.parent / f".{member.name}.partial").is_dir():
            return "half-written (assemble.py stopped while writing it)"
        return "not assembled"
    gt = folder / "groundtruth.txt"
    if not gt.is_file() or not (folder / "source.json").is_file():
        return "no groundtruth.txt or source.json (half-written?)"
    frames = len(list_images(folder / "img"))
    if frames != entry["frames"]:
        return f"{frames} of {entry['frames']} frames in img/ (half-written?)"
    if hashlib.sha256(gt.read_bytes()).hexdigest() != entry["groundtruth_sha256"]:
        return "groundtruth.txt differs from the manifest (sha256)"
    return None


def check_split_data(split: str, members: list[SplitMember], locations: DataLocations) -> None:
    """Raise MissingDataError naming every member that is missing or incomplete, with the command
    that builds the extra ones."""
    absent_short = [m.name for m in members if m.entry is None and not (m.folder / "img").is_dir()]
    if absent_short:
        raise MissingDataError(f"@{split}: {', '.join(absent_short)} not found in {locations.sequences} "
                               f"(set ${ENV_SHARED_DATA} to the folder that holds sequences/)")
    problems = []
    for m in members:
        why = _assembly_problem(m) if m.entry is not None else None
        if why:
            problems.append((m, why))
    if not problems:
        return
    names = [m.name for m, _ in problems]
    all_extra = [m.name for m in split_members(split, locations) if m.entry is not None]
    if split in ("train", "validation") and names == all_extra:
        choose = f" --split {split}"
    elif split == "all" and names == all_extra:
        choose = ""
    else:
        choose = f" --only {','.join(names)}"
    lines = "\n".join(f"  {m.name}: {why}" for m, why in problems)
    extra_dir = locations.manifest.parent
    raise MissingDataError(
        f"@{split} needs {len(problems)} extra sequence(s) that are not assembled in {locations.extra}:\n{lines}\n"
        f"Build them with\n"
        f"  python3 {_shown(extra_dir / 'assemble.py')} --repos FOLDER --out {_shown(locations.extra)}{choose}\n"
        f"(FOLDER: the git snapshots of the repositories that {_shown(extra_dir / 'README.md')} lists; assemble.py "
        f"needs no network), or point ${ENV_EXTRA_DATA} / --extra-data at the folder that holds them."
    )


def _shown(path: Path) -> str:
    """A path as a command to paste from here would name it: relative when that is short."""
    relative = os.path.relpath(path)
    return str(path.resolve()) if relative.startswith(os.path.join(os.pardir, os.pardir)) else relative


def load_split(split: str, locations: DataLocations, only: Names = None, exclude: Names = None) -> list[Sequence]:
    """The sequences of ``split``, checked complete (see the module doc); ``only``/``exclude`` are
    names or globs within it (the order ``only`` asks for; an ``only`` name that matches nothing is an
    error)."""
    members = split_members(split, locations)
    keep = NameFilter(only, exclude)
    unknown = keep.unmatched(m.name for m in members)
    if unknown:
        raise DatasetError(f"no sequence named {', '.join(unknown)} in @{split}; it holds "
                           f"{', '.join(m.name for m in members)}")
    chosen = sorted((m for m in members if keep(m.name)), key=lambda m: keep.order(m.name))
    if not chosen:
        raise DatasetError(f"@{split}: no sequence left after only={only} exclude={exclude}")
    check_split_data(split, chosen, locations)
    return [load_folder_sequence(m.folder) for m in chosen]


def split_dataset(split: str, locations: DataLocations, only: Names = None, exclude: Names = None) -> TrackingDataset:
    """``load_split`` as a training dataset named ``@<split>``."""
    return named_dataset(f"@{split}", load_split(split, locations, only, exclude), "split", str(locations.extra))


def load_named_sequences(spec: str, extra: Optional[PathLike] = None, benchmark: Optional[str] = None,
                         only: Names = None) -> tuple[list[Sequence], str]:
    """What a command's ``--sequences`` names: a split (``@validation``; its extra sequences from
    ``extra``, else the documented defaults) or a benchmark folder (``benchmark``, else detected).
    Returns (sequences, benchmark); a folder that does not exist is a MissingDataError."""
    split = split_from_spec(spec)
    if split is not None:
        return load_split(split, DataLocations.resolve(extra), only), "folder"
    if not Path(spec).exists():
        raise MissingDataError(f"sequences folder {spec} does not exist")
    benchmark = benchmark or detect_benchmark(spec)
    return load_sequences(spec, benchmark, only), benchmark
