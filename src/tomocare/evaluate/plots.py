"""Figures for ``tomocare evaluate``: FSC curves with both thresholds, precision-recall curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from tomocare.evaluate.fsc import FSC, THRESHOLDS, resolution_text  # noqa: E402
from tomocare.io.atomic import atomic_path  # noqa: E402


def fsc_figure(curves: dict[str, FSC], path: Path, title: str) -> Path:
    """FSC against spatial frequency (1/Å, Å below), the 0.5 and 0.143 lines, crossings, 3σ noise band."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        res = curve.resolutions()
        text = ", ".join(f"{t}: {resolution_text(r)}" for t, r in res.items())
        label = f"{name} ({text})" + ("" if curve.n_subvolumes == 1 else f"\n[{curve.method}]")
        (line,) = ax.plot(curve.frequency, curve.correlation, label=label)
        ax.plot(curve.frequency, curve.noise_band(), color=line.get_color(), linestyle=":", linewidth=0.8)
        for r in res.values():
            if r:
                ax.axvline(1 / r, color=line.get_color(), linestyle=":", linewidth=1)
    for t in THRESHOLDS:
        ax.axhline(t, color="gray", linestyle="--", linewidth=1)
        ax.text(0.99, t + 0.02, f"{t:g}", transform=ax.get_yaxis_transform(), ha="right", color="gray", fontsize=9)
    ax.set_xlabel("spatial frequency (1/Å), resolution; dotted: 3σ noise band")
    ax.set_ylabel("Fourier shell correlation")
    ax.set_ylim(-0.1, 1.02)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda f, _: f"{f:.3g}\n({1 / f:.0f} Å)" if f > 0 else "0"))
    return _finish(fig, ax, path, title, legend_size=8)


def pr_figure(curves: dict[str, dict], path: Path, title: str) -> Path:
    """Precision against recall, one point per size threshold; the best F1 of each curve marked."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, curve in curves.items():
        recall, precision = np.asarray(curve["recall"]), np.asarray(curve["precision"])
        (line,) = ax.plot(recall, precision, marker=".", label=f"{name} (best F1 {curve['best']['f1']:.2f})")
        ax.plot([curve["best"]["recall"]], [curve["best"]["precision"]], marker="o", markersize=9,
                markerfacecolor="none", color=line.get_color())
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    return _finish(fig, ax, path, title, legend_size=9)


def _finish(fig, ax, path: Path, title: str, legend_size: int) -> Path:
    """Title, legend and grid; save the figure and free it."""
    ax.set_title(title)
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path, dpi=90)


def save_figure(fig, path: Path, dpi: int) -> Path:
    """Save ``fig`` to ``path`` in the format its suffix names (replaced in one step: a picture
    appears whole or not at all) and free it."""
    try:
        with atomic_path(path, overwrite=True) as tmp:
            fig.savefig(tmp, dpi=dpi, format=Path(path).suffix[1:] or None)
    finally:
        plt.close(fig)
    return path
