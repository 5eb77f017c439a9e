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


def plot_longterm_pr(summary: dict, path: Path, title: Optional[str] = None) -> Optional[Path]:
    """VOT-LT tracking precision against recall over confidence thresholds (absence protocol),
    one curve per tracker, the best F marked and in the legend."""
    curves = []
    for name, t in summary["trackers"].items():
        m = t["mean"]
        c = m.get("lt_curve")
        if not c or m.get("lt_f") is None:
            continue
        curves.append((name, np.asarray(c["recall"]), np.asarray(c["precision"]), m))
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.5), dpi=120)
    for name, rec, prec, m in sorted(curves, key=lambda c: -c[3]["lt_f"]):
        # The +inf threshold's point (precision 1 by convention, recall 0) is no operating point.
        line, = ax.plot(rec[1:], prec[1:], linewidth=2, label=f"{name} [F {m['lt_f']:.3f}]")
        ax.plot([m["lt_recall"]], [m["lt_precision"]], "o", color=line.get_color())
    # Iso-F lines help read the best point.
    r = np.linspace(0.01, 1, 200)
    for f in (0.2, 0.4, 0.6, 0.8):
        p = f * r / (2 * r - f)
        ok = (p > 0) & (p <= 1)
        ax.plot(r[ok], p[ok], color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("Tracking recall")
    ax.set_ylabel("Tracking precision")
    runs = max((c[3].get("runs", 0) for c in curves), default=0)
    ax.set_title(title or f"Long-term precision / recall: {summary.get('benchmark', '')}, {runs} runs")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower left")
    return _save(plt, fig, path)
