"""Pictures and tables for a denoising run: orthoslices and the summary (FSC figures: ``plots``)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tomocare.evaluate.html_report import summary_cell, write_html_report  # noqa: E402
from tomocare.evaluate.plots import save_figure  # noqa: E402
from tomocare.io.atomic import write_atomic  # noqa: E402


def _scale_bar_length(width_a: float) -> float:
    """A round length (1, 2 or 5 x 10^n Å) near a fifth of ``width_a``."""
    target = width_a / 5
    power = 10 ** np.floor(np.log10(target))
    return max(m * power for m in (1, 2, 5) if m * power <= target) if target >= 1 else target


def orthoslices(rows: dict[str, dict[str, np.ndarray]], path: Path, title: str,
                pixel_size: float | None = None) -> Path:
    """One row of central xy, xz, yz slices per volume (e.g. raw and denoised): square pixels (true
    aspect), one contrast shared by the three slices of a row, and a scale bar in Å when the
    ``pixel_size`` (Å per displayed pixel) is known."""
    first = next(iter(rows.values()))
    widths = [first[k].shape[1] for k in ("xy", "xz", "yz")]
    height = max(first[k].shape[0] for k in ("xy", "xz", "yz"))
    fig_width = 14
    fig, axes = plt.subplots(len(rows), 3,
                             figsize=(fig_width, 0.6 + len(rows) * fig_width * height / sum(widths) * 1.1),
                             squeeze=False, gridspec_kw={"width_ratios": widths})
    for axrow, (label, planes) in zip(axes, rows.items()):
        lo, hi = np.percentile(np.concatenate([planes[k].ravel() for k in ("xy", "xz", "yz")]), [0.5, 99.5])
        for ax, key in zip(axrow, ("xy", "xz", "yz")):
            ax.imshow(planes[key], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest", aspect="equal")
            ax.set_title(f"{label}: {key}", fontsize=10)
            ax.set_axis_off()
        if pixel_size:
            ny, nx = planes["xy"].shape
            bar = _scale_bar_length(nx * pixel_size)
            x0, y0 = 0.05 * nx, 0.93 * ny
            axrow[0].plot([x0, x0 + bar / pixel_size], [y0, y0], color="yellow", linewidth=3)
            axrow[0].text(x0, y0 - 0.03 * ny, f"{bar:g} Å", color="yellow", fontsize=9)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)


def write_summary(rows: list[dict], report_dir: Path, settings: dict | None = None) -> None:
    """summary.json, summary.md and the one-page index.html (``html_report``): one row per tomogram."""
    write_atomic(report_dir / "summary.json", json.dumps(rows, indent=2) + "\n")
    columns = [c for c in ("name", "status", "fsc143_raw_A", "psnr_raw_db", "psnr_denoised_db", "stop_reason", "output")
               if any(c in r for r in rows)]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = [summary_cell(c, r.get(c, "")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        "", "fsc143_raw_A: the resolution estimate, FSC 0.143 of the raw even and odd halves (central sub-volume).",
        "The FSC of the denoised halves (in each NAME_fsc.png) measures how consistently one network treated both "
        "halves, not resolution: the network was trained on both, so its outputs are not independent.",
        "psnr_*_db: against NAME_clean.mrc where a simulated ground truth exists.",
    ]
    write_atomic(report_dir / "summary.md", "# tomocare denoising report\n\n" + "\n".join(lines + notes) + "\n")
    write_html_report(rows, report_dir, settings=settings, notes=[n for n in notes if n])
