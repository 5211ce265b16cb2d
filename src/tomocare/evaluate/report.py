"""Pictures and tables for a denoising run: orthoslices, FSC curves, a summary page."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from tomocare.evaluate.fsc import FSC  # noqa: E402


def orthoslices(rows: dict[str, dict[str, np.ndarray]], path: Path, title: str) -> Path:
    """One row of central xy, xz, yz slices per volume (e.g. raw and denoised), each with its own contrast."""
    first = next(iter(rows.values()))
    widths = [first[k].shape[1] for k in ("xy", "xz", "yz")]
    fig, axes = plt.subplots(len(rows), 3, figsize=(14, 4.3 * len(rows)), squeeze=False, gridspec_kw={"width_ratios": widths})
    for axrow, (label, planes) in zip(axes, rows.items()):
        for ax, key in zip(axrow, ("xy", "xz", "yz")):
            lo, hi = np.percentile(planes[key], [0.5, 99.5])
            ax.imshow(planes[key], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", aspect="auto" if key != "xy" else "equal")
            ax.set_title(f"{label}: {key}")
            ax.set_axis_off()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def fsc_plot(curves: dict[str, FSC], path: Path, title: str) -> Path:
    """FSC curves against spatial frequency (1/Å, with Å on top), the 0.143 line and crossings."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, curve in curves.items():
        res = curve.crossing(0.143)
        label = f"{name} (0.143 at {res:.1f} Å)" if res else f"{name} (above 0.143 to Nyquist)"
        (line,) = ax.plot(curve.frequency, curve.correlation, label=label)
        if res:
            ax.axvline(1 / res, color=line.get_color(), linestyle=":", linewidth=1)
    ax.axhline(0.143, color="gray", linestyle="--", linewidth=1)
    ax.text(0.99, 0.16, "0.143", transform=ax.get_yaxis_transform(), ha="right", color="gray", fontsize=9)
    ax.set_xlabel("spatial frequency (1/Å), resolution")
    ax.set_ylabel("Fourier shell correlation")
    ax.set_ylim(-0.1, 1.02)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda f, _: f"{f:.3g}\n({1 / f:.0f} Å)" if f > 0 else "0"))
    ax.set_title(title)
    ax.legend(fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_summary(rows: list[dict], report_dir: Path) -> None:
    """summary.json and summary.md: one row per tomogram."""
    (report_dir / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    columns = [c for c in ("name", "status", "fsc143_raw_A", "fsc143_denoised_A", "psnr_raw_db", "psnr_denoised_db", "output") if any(c in r for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            if v is None and c.startswith("fsc143"):
                v = "Nyquist"  # the curve stays above 0.143 up to Nyquist
            cells.append(f"{v:.2f}" if isinstance(v, float) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    (report_dir / "summary.md").write_text("# tomocare denoising report\n\n" + "\n".join(lines) + "\n")
