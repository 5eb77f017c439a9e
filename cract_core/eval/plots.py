"""Success and precision plots (matplotlib, Agg backend: no display needed), one curve per tracker."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from cract_core.eval import metrics


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # headless machines and CI; must precede the pyplot import
    import matplotlib.pyplot as plt

    return plt


def _curves(summary: dict, key: str, score_key: str) -> list[tuple[str, np.ndarray, float]]:
    out = []
    for name, t in summary["trackers"].items():
        curve = t["mean"].get(key)
        score = t["mean"].get(score_key)
        if curve is None or score is None:
            continue
        out.append((name, np.asarray(curve, dtype=np.float64), float(score)))
    # Best first in the legend, as the OTB plots order them.
    return sorted(out, key=lambda c: -c[2])


def _scope(summary: dict) -> str:
    """'folder, 4 sequences' for the default titles."""
    n = max((t["mean"].get("sequences", 0) for t in summary["trackers"].values()), default=0)
    return f"{summary.get('benchmark', '')}, {n} sequence{'s' if n != 1 else ''}"


def plot_success(summary: dict, path: Path, title: Optional[str] = None) -> Optional[Path]:
    """Success plot: fraction of frames with IoU > t against t, AUC in the legend."""
    curves = _curves(summary, "success_curve", "auc")
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    for name, curve, score in curves:
        ax.plot(metrics.IOU_THRESHOLDS, curve, linewidth=2, label=f"{name} [AUC {score:.3f}]")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Overlap threshold (IoU >)")
    ax.set_ylabel("Success rate")
    ax.set_title(title or f"Success plot: {_scope(summary)}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    return _save(plt, fig, path)


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_precision(summary: dict, path: Path, title: Optional[str] = None) -> Optional[Path]:
    """Precision plot: fraction of frames with centre error <= t pixels, precision@20 in the legend."""
    curves = _curves(summary, "precision_curve", "prec20")
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    for name, curve, score in curves:
        ax.plot(metrics.CENTER_THRESHOLDS, curve, linewidth=2, label=f"{name} [P@20 {score:.3f}]")
    ax.axvline(metrics.PRECISION_AT, color="grey", linestyle=":", linewidth=1)
    ax.set_xlim(0, metrics.CENTER_THRESHOLDS[-1])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Location error threshold (px)")
    ax.set_ylabel("Precision")
    ax.set_title(title or f"Precision plot: {_scope(summary)}")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    return _save(plt, fig, path)
