"""cract-train: train CRACT's heads.

    cract-train --config config/train_starter_lite0.yaml --data @train --out runs/starter

    cract-train --config config/train_starter_lite0.yaml \\
        --data folder=../shared/data/sequences --exclude @validation --out runs/starter

    torchrun --nproc_per_node 4 -m cract_core.train.cli --config config/train_resnet18_paper.yaml \\
        --data got10k=/data/got10k --data lasot=/data/lasot@2 --data trackingnet=/data/trackingnet \\
        --data coco=/data/coco@0.5 --out runs/paper

``--data NAME=PATH[@WEIGHT]``: NAME is one of cract_core.datasets.FORMATS (got10k, lasot,
trackingnet, coco, folder, otb, uav123, nfs, vot; any may repeat); ``--data @SPLIT[@WEIGHT]`` is
one of the project's splits (@train, @validation, @validation4, @all; cract_core/datasets/splits.py),
its extra sequences read from ``--extra-data`` (else $CRACT_EXTRA_DATA, else data/extra).  WEIGHT
(default 1) is the dataset's share of the sampled sequences.  ``--include``/``--exclude`` (comma
separated names or globs, repeatable; an @SPLIT stands for every sequence whose images that split
holds, so ``--exclude @validation`` also drops otb_woman, whose full version is validation) apply
to folder, lasot and split data.  ``--resume`` continues DIR/last.pt.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence as Seq, Union

from cract_core.config import ConfigError, load_config
from cract_core.errors import CheckpointError
from cract_core.train.augment import AugmentConfig, parse_overrides
from cract_core.datasets import (
    ENV_EXTRA_DATA,
    FORMATS,
    DataLocations,
    DatasetError,
    TrackingDataset,
    make_dataset,
    split_dataset,
    split_from_spec,
    split_names,
)

log = logging.getLogger("cract_core.train")


def _names(values: Optional[list[str]], locations: Optional[DataLocations] = None) -> list[str]:
    """Comma separated names or globs; an @SPLIT becomes the names of the sequences it holds."""
    out: list[str] = []
    for v in values or []:
        for part in v.split(","):
            part = part.strip()
            split = split_from_spec(part)
            if split is not None:
                out.extend(split_names(split, locations or DataLocations.resolve()))
            elif part:
                out.append(part)
    return out


def parse_data_spec(spec: str) -> tuple[str, Union[Path, str], float]:
    """'lasot=/data/LaSOT@2' -> ('lasot', Path('/data/LaSOT'), 2.0); '@train' -> ('split', 'train', 1.0);
    errors that say the form."""
    if spec.startswith("@"):
        name, rest = "split", spec
    else:
        name, sep, rest = spec.partition("=")
        if not sep or not rest:
            raise DatasetError(f"--data {spec!r}: expected NAME=PATH[@WEIGHT] with NAME one of {list(FORMATS)}, "
                               "or @SPLIT[@WEIGHT]")
        name = name.strip().lower()
        if name not in FORMATS:
            raise DatasetError(f"--data {spec!r}: unknown dataset {name!r}; expected one of {list(FORMATS)}")
    weight = 1.0
    path, at, w = rest.rpartition("@")
    if at:
        try:
            weight = float(w)
        except ValueError:
            path = rest  # an '@' that belongs to the path
        else:
            if weight < 0:
                raise DatasetError(f"--data {spec!r}: weight must be >= 0")
    else:
        path = rest
    if name == "split":
        split = split_from_spec(path)
        if split is None:
            raise DatasetError(f"--data {spec!r}: expected @SPLIT[@WEIGHT]")
        return name, split, weight
    return name, Path(path).expanduser(), weight


def build_datasets(
    specs: Seq[str], include: Seq[str], exclude: Seq[str], locations: Optional[DataLocations] = None
) -> tuple[list[TrackingDataset], list[float]]:
    """One TrackingDataset per --data spec, with its weight; include/exclude apply to folder, lasot and splits."""
    datasets, weights = [], []
    for spec in specs:
        name, source, weight = parse_data_spec(spec)
        picks = {"only": list(include) or None, "exclude": list(exclude) or None}
        if name == "split":
            ds = split_dataset(source, locations or DataLocations.resolve(), **picks)
        else:
            ds = make_dataset(name, source, **(picks if name in ("folder", "lasot") else {}))
        log.info("%s (weight %g)", ds, weight)
        datasets.append(ds)
        weights.append(weight)
    return datasets, weights


def add_data_arguments(p: argparse.ArgumentParser) -> None:
    """--data, --include, --exclude and --extra-data: one syntax for cract-train and precrop."""
    p.add_argument("--data", action="append", required=True, metavar="NAME=PATH[@WEIGHT] | @SPLIT[@WEIGHT]",
                   help=f"training data; NAME in {list(FORMATS)}, SPLIT one of @train, @validation, @validation4, "
                        "@all; repeat for several")
    p.add_argument("--include", action="append", metavar="NAMES",
                   help="only these sequences (folder/lasot/split data; globs; comma list; @SPLIT = its sequences)")
    p.add_argument("--exclude", action="append", metavar="NAMES",
                   help="leave these sequences out (folder/lasot/split data; globs; comma list; @validation = "
                        "every sequence whose images the validation split holds)")
    p.add_argument("--extra-data", type=Path, metavar="DIR",
                   help=f"the assembled extra sequences of a split (default: ${ENV_EXTRA_DATA}, else data/extra "
                        "under the project root)")


def data_from_arguments(args: argparse.Namespace) -> tuple[list[TrackingDataset], list[float]]:
    """The datasets and weights that add_data_arguments' options name."""
    locations = DataLocations.resolve(args.extra_data)
    return build_datasets(args.data, _names(args.include, locations), _names(args.exclude, locations), locations)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cract-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="experiment YAML (config/train_*.yaml or config/model/*.yaml)")
    add_data_arguments(p)
    p.add_argument("--out", required=True, type=Path, help="output folder: last.pt, final.pt, log.csv")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--steps", type=int, help="total steps (overrides train.steps)")
    p.add_argument("--stop-at", type=int, metavar="STEP",
                   help="stop at this step (checkpoint written) on the full --steps schedule; continue later with --resume")
    p.add_argument("--batch-size", type=int, help="pairs per step and process (overrides train.batch_size)")
    p.add_argument("--workers", type=int, help="DataLoader workers per process (overrides train.num_workers)")
    p.add_argument("--seed", type=int, help="overrides train.seed")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:1 ...")
    p.add_argument("--threads", type=int, help="torch CPU threads per process")
    p.add_argument("--schedule", choices=["cosine", "step"], default="cosine", help="lr decay after the warm-up")
    p.add_argument("--checkpoint-every", type=float, metavar="SECONDS", help="overrides train.checkpoint_every_s")
    p.add_argument("--feature-cache", type=Path, metavar="DIR",
                   help="frozen backbone only: cache backbone features of augmented crops in DIR (built once, "
                        "reused when data/config/augmentation match) and train the heads on them; for small data")
    p.add_argument("--cache-variants", default="6,2", metavar="SEARCH,TEMPLATE",
                   help="augmented crops cached per frame (default 6 search, 2 template)")
    p.add_argument("--cache-seed", type=int, default=0,
                   help="augmentation seed of the cached crops (not --seed: runs with different seeds share a cache)")
    p.add_argument("--no-fast-backbone", action="store_true",
                   help="train with the backbone as is (default for a frozen one: a BN-folded channels_last copy, ~1.5x faster)")
    p.add_argument("--aug", action="append", metavar="KEY=VALUE", help="augmentation override, e.g. search_shift=48")
    p.add_argument("--tensorboard", action="store_true", help="also log to OUT/tensorboard (needs the tensorboard package)")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar (logs only)")
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: Optional[Seq[str]] = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cract_core.train.trainer import TrainOptions, Trainer  # after argument errors, which need no torch

    trainer = None
    try:
        cfg = load_config(args.config)
        if args.tensorboard:
            from cract_core.train.trainer import _summary_writer

            _summary_writer()  # before scanning datasets: a missing optional package is said at once
        datasets, weights = data_from_arguments(args)
        augment = parse_overrides(AugmentConfig(), args.aug)
        try:
            variants = tuple(int(v) for v in args.cache_variants.split(","))
        except ValueError:
            variants = ()
        if len(variants) != 2 or min(variants) < 1:
            raise ValueError(f"--cache-variants {args.cache_variants!r}: expected SEARCH,TEMPLATE counts >= 1, e.g. 6,2") from None
        options = TrainOptions(
            out_dir=args.out, steps=args.steps, device=args.device, resume=args.resume, batch_size=args.batch_size,
            num_workers=args.workers, schedule=args.schedule, progress=not args.no_progress, tensorboard=args.tensorboard,
            checkpoint_every_s=args.checkpoint_every, stop_at=args.stop_at, feature_cache=args.feature_cache, cache_variants=variants, cache_seed=args.cache_seed, fast_backbone=not args.no_fast_backbone, seed=args.seed, threads=args.threads, dataset_weights=weights,
            data_description=[f"{d!r} weight {w:g}" for d, w in zip(datasets, weights)],
        )
        trainer = Trainer(cfg, datasets, options, augment)
        summary = trainer.train()
    except (ConfigError, DatasetError, CheckpointError, ValueError, FileNotFoundError) as exc:  # FileNotFoundError: backbone weights
        print(f"cract-train: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if trainer is not None:
            trainer.close()
    if trainer.ctx.is_main:
        last = summary["last_losses"]
        print(
            f"done: {summary['steps']} steps, {summary['pairs_seen']} pairs in {summary['wall_s']:.0f} s "
            f"({summary['pairs_per_s']:.1f} pairs/s at the end); loss {last.get('total', float('nan')):.4f}; "
            + (f"heads {summary['final']}, " if summary["steps"] >= trainer.cfg.train.steps else "")
            + f"resumable state {summary['checkpoint']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
