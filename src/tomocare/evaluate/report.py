"""The report of a denoising run: per tomogram FSC before/after, orthoslices and PSNR against a clean
volume when there is one (``tomogram_report``), and the summary table and page (FSC figures: ``plots``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tomocare.evaluate.html_report import summary_cell, write_html_report  # noqa: E402
from tomocare.evaluate.plots import save_figure  # noqa: E402
from tomocare.io.atomic import write_atomic  # noqa: E402
from tomocare.io.discover import VolumePair  # noqa: E402
from tomocare.io.volume import Volume, open_volume  # noqa: E402

log = logging.getLogger(__name__)
REPORT_CROP = 128  # edge of the central sub-volume used for FSC and PSNR in the report


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


def _central(volume: Volume, edge: int) -> tuple[slice, ...]:
    return tuple(slice(max(0, s // 2 - edge // 2), max(0, s // 2 - edge // 2) + min(s, edge)) for s in volume.shape)


def _planes(array, shape) -> dict[str, np.ndarray]:
    z, y, x = (s // 2 for s in shape)
    stride = max(1, max(shape) // 1024)  # pictures need no more than ~1000 pixels a side (tomogram_report knows)
    return {
        "xy": np.asarray(array[z, ::stride, ::stride]),
        "xz": np.asarray(array[::stride, y, ::stride]),
        "yz": np.asarray(array[::stride, ::stride, x]),
    }


def tomogram_report(pair: VolumePair, denoised_path: Path, model_dir: Path, report_dir: Path) -> dict:
    """Orthoslices, FSC before/after on a central sub-volume, and PSNR when a clean volume exists."""
    from tomocare.evaluate.fsc import fsc, write_fsc_csv
    from tomocare.evaluate.metrics import psnr
    from tomocare.evaluate.plots import fsc_figure
    from tomocare.model import Model
    from tomocare.predict.engine import CPU_TASK_MEMORY
    from tomocare.predict.network import NetworkOperator

    denoised = open_volume(denoised_path)
    crop = _central(pair.even, REPORT_CROP)
    even, odd = (np.asarray(v.array[crop], dtype=np.float32) for v in (pair.even, pair.odd))
    model = Model.read(model_dir)
    net = model.network()
    # the network on each half's crop on its own, in pieces of bounded memory (as on the workers)
    max_voxels = CPU_TASK_MEMORY // NetworkOperator(model, "fp32").bytes_per_voxel("cpu")
    d_even, d_odd = (model.predict_whole(v, net=net, precision="auto", max_voxels=max_voxels) for v in (even, odd))
    vs = pair.even.voxel_size[-1]
    raw_fsc, den_fsc = fsc(even, odd, vs), fsc(d_even, d_odd, vs)
    curves = {"raw halves (resolution)": raw_fsc, "denoised halves (consistency, not resolution)": den_fsc}
    fsc_figure(curves, report_dir / f"{pair.name}_fsc.png",
               f"{pair.name}: FSC of the even vs odd halves (central {'x'.join(map(str, even.shape))} voxels)")
    write_fsc_csv({"raw": raw_fsc, "denoised_consistency": den_fsc}, report_dir / f"{pair.name}_fsc.csv")

    raw_planes = [_planes(v.array, v.shape) for v in (pair.even, pair.odd)]
    avg = {k: (raw_planes[0][k] + raw_planes[1][k]) / 2 for k in raw_planes[0]}
    den = _planes(denoised.array, denoised.shape)
    stride = max(1, max(pair.even.shape) // 1024)
    orthoslices({"raw (even+odd)/2": avg, "denoised": den}, report_dir / f"{pair.name}_slices.png",
                f"{pair.name}: central orthoslices", pixel_size=vs * stride if vs else None)
    row = {"fsc143_raw_A": raw_fsc.crossing(0.143), "fsc143_denoised_consistency_A": den_fsc.crossing(0.143)}
    training = model.extra.get("training", {})
    if "stop_reason" in training:
        row["stop_reason"] = training["stop_reason"] + (" (under-trained)" if training.get("under_trained") else "")
    clean_path = pair.even.path.parent / f"{pair.name}_clean.mrc"
    truth = open_volume(clean_path) if clean_path.exists() else None  # simulated data carry their ground truth
    if truth is not None and truth.shape != pair.even.shape:
        log.warning("%s: shape %s differs from the tomogram's %s; no PSNR", clean_path, truth.shape, pair.even.shape)
    elif truth is not None:
        clean = np.asarray(truth.array[crop], dtype=np.float32)
        row["psnr_raw_db"] = psnr((even + odd) / 2, clean)
        row["psnr_denoised_db"] = psnr(np.asarray(denoised.array[crop]), clean)
    return row
