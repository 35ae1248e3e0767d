"""Figures people look at (matplotlib, Agg, atomic PNG writes): one accuracy-vs-T plot for every caller.

``accuracy_plot(path, series, ann=..., title=...)`` draws accuracy (%) against the 1-based time step T for any
number of series — each a dict with ``label``, ``steps`` (x values), ``accuracy`` (fractions) and optional
``color`` / ``linestyle`` / ``marker`` — with the ANN accuracy as a dashed black line, labelled axes, a log₂ time
axis with the given ``ticks``, and writes the PNG atomically (:func:`netx_export.fileio.atomic_target`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from netx_export.fileio import atomic_target

__all__ = ["figure", "save", "accuracy_plot"]


def figure(width: float, height: float):
    """A matplotlib Figure on the Agg canvas (no pyplot state, safe in worker threads)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def save(fig, path: str | Path) -> Path:
    """Lay out ``fig`` and write it as PNG to ``path`` atomically."""
    path = Path(path)
    fig.tight_layout()
    with atomic_target(path, suffix=".png", make_parents=True) as tmp:
        fig.savefig(tmp, format="png")
    return path


def accuracy_plot(path: str | Path, series: Sequence[dict[str, Any]], *, ann: float, title: str,
                  ticks: Sequence[int] | None = None, size: tuple[float, float] = (7.2, 4.6)) -> Path:
    """Accuracy vs T for every series plus the dashed ANN line (module docstring)."""
    fig = figure(*size)
    ax = fig.add_subplot(1, 1, 1)
    for s in series:
        style = {k: s[k] for k in ("color", "linestyle", "marker") if s.get(k) is not None}
        ax.plot(np.asarray(s["steps"]), 100 * np.asarray(s["accuracy"], dtype=float), label=s["label"],
                linewidth=1.4, **style)
    ax.axhline(100 * ann, color="k", linestyle="--", linewidth=1.2, label=f"ANN ({100 * ann:.2f} %)")
    ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(list(ticks))
        ax.set_xticklabels([str(t) for t in ticks])
    ax.set_xlabel("time steps T (accuracy after step T, log scale)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_ylim(0, 101)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)  # curves that rise late run into a fixed corner
    return save(fig, path)
