"""Pictures and tables for a denoising run: orthoslices and the summary (FSC figures: ``plots``)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
