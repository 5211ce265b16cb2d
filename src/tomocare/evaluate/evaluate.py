"""``tomocare evaluate`` as one API call: FSC, metrics against a reference, SNR, detection."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from tomocare.errors import TomocareError
from tomocare.evaluate.detection import DEFAULT_POLARITY, POLARITIES, detection_curve, read_particles
from tomocare.evaluate.fsc import FSC, fsc, fsc_subvolumes, resolution_text, write_fsc_csv
from tomocare.evaluate.plots import fsc_figure, pr_figure
from tomocare.evaluate.reference import compare_to_reference
from tomocare.evaluate.snr import estimate_snr, read_boxes
from tomocare.io.atomic import check_output_dir, write_atomic
from tomocare.io.volume import Volume, open_volume, reading

MEMORY_LIMIT = 2**30  # bytes of working memory for steps that need a whole volume
FSC_BYTES_PER_VOXEL = 48  # two float64 copies, two complex128 half-spectra, shell indices
DETECTION_BYTES_PER_VOXEL = 16  # float32 copy, mask, int32 labels, indices


def evaluate(
    a: str | os.PathLike,
    b: str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike,
    reference: str | os.PathLike | None = None,
    fit: bool = True,
    boxes: str | os.PathLike | None = None,
    particles: str | os.PathLike | None = None,
    polarity: str = DEFAULT_POLARITY,
    match_radius: float | None = None,
    cube: int = 64,
    fsc_subvolume: int = 128,
    fsc_count: int = 8,
    memory_limit: int = MEMORY_LIMIT,
) -> dict:
    """Measure A (and B) and write ``metrics.json`` (plus figures and CSV) into ``out_dir``.

    - B given: FSC of A against B (shells in 1/Å, 0.5 and 0.143 crossings), ``fsc.csv`` and
      ``fsc.png``; on the whole volumes when they fit ``memory_limit``, else averaged over
      ``fsc_count`` cubes of edge ``fsc_subvolume`` (and the result says so).
    - ``reference``: PSNR, SSIM, NRMSE, MSE of each input against it (after a least-squares
      scale-and-offset fit with ``fit``), whole and as 5th/50th/95th percentiles over cubes of
      edge ``cube``; always block by block (exact, any size).
    - ``boxes``: SNR of each input from paired signal/background boxes (NT2C, Eq. 5).
    - ``particles``: detection precision/recall over a sweep of size thresholds, ``pr.png``.

    Inputs are MRC or OME-Zarr, opened lazily. Returns the dictionary written to metrics.json.
    """
    if polarity not in POLARITIES:
        raise TomocareError(f"polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")
    volumes = {"A": open_volume(a)}
    if b is not None:
        volumes["B"] = open_volume(b)
    ref = open_volume(reference) if reference is not None else None
    first = volumes["A"]
    for other in [*list(volumes.values())[1:], *([ref] if ref is not None else [])]:
        _check_same_grid(first, other)
    out = Path(out_dir)
    check_output_dir(out)
    box_pairs = read_boxes(boxes) if boxes is not None else None
    particle_table = read_particles(particles) if particles is not None else None
    n_voxels = math.prod(first.shape)
    if particle_table is not None and n_voxels * DETECTION_BYTES_PER_VOXEL > memory_limit:
        raise TomocareError(f"{first.path}: detection needs the whole volume in memory "
                            f"({n_voxels * DETECTION_BYTES_PER_VOXEL / 2**30:.1f} GiB > limit "
                            f"{memory_limit / 2**30:.1f} GiB); bin the volume or raise the memory limit")
    inputs = ", ".join(str(v.path) for v in [*volumes.values(), *([ref] if ref is not None else [])])
    with _removed_on_failure(out), reading(inputs, "could not be measured"):
        voxel_size = float(first.voxel_size[-1])
        result: dict = {
            "inputs": {k: str(v.path) for k, v in volumes.items()},
            "shape": list(first.shape),
            "voxel_size_A": list(first.voxel_size),
        }
        if ref is not None:
            result["inputs"]["reference"] = str(ref.path)
        files = []

        if "B" in volumes:
            curve = _fsc(volumes["A"], volumes["B"], voxel_size, n_voxels, memory_limit, fsc_subvolume, fsc_count)
            write_fsc_csv({"A_vs_B": curve}, out / "fsc.csv")
            fsc_figure({"A vs B": curve}, out / "fsc.png", f"FSC, {curve.method}")
            files += ["fsc.csv", "fsc.png"]
            result["fsc"] = {
                "method": curve.method,
                "n_subvolumes": curve.n_subvolumes,
                "resolution_A": curve.resolutions(),
                "voxel_size_A": voxel_size,
                "nyquist_A": 2 * voxel_size,
            }

        if ref is not None:
            result["reference"] = {}
            for key, vol in volumes.items():
                metrics = compare_to_reference(vol.array, ref.array, fit=fit, cube=cube, name=str(ref.path),
                                               x_name=str(vol.path))
                result["reference"][key] = {**metrics.to_dict(),
                                            "method": "block by block (exact over the whole volume)"}

        if box_pairs is not None:
            result["snr"] = {key: estimate_snr(vol.array, box_pairs, source=str(boxes)) for key, vol in volumes.items()}

        if particle_table is not None:
            positions, radii = particle_table
            curves = {}
            for key, vol in volumes.items():
                curves[key] = detection_curve(_whole(vol.array), positions, radii, polarity=polarity,
                                              match_radius=match_radius)
            pr_figure({f"{k}: {volumes[k].path.name}": c for k, c in curves.items()}, out / "pr.png",
                      f"detection ({polarity} particles), {len(positions)} particles")
            files.append("pr.png")
            result["detection"] = {k: {kk: vv for kk, vv in c.items() if kk != "rows"} for k, c in curves.items()}

        files.append("metrics.json")
        result["files"] = [str(out / f) for f in files]
        write_atomic(out / "metrics.json", json.dumps(_jsonable(result), indent=2) + "\n")
        return result


@contextlib.contextmanager
def _removed_on_failure(out: Path) -> Iterator[None]:
    """Create ``out``; remove it again if the measurements fail and it was created here."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield
    except BaseException:
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise


def _fsc(a: Volume, b: Volume, voxel_size: float, n_voxels: int, memory_limit: int, size: int, count: int) -> FSC:
    if n_voxels * FSC_BYTES_PER_VOXEL <= memory_limit:
        whole = [_whole(a.array), _whole(b.array)]
        for volume, array in zip((a, b), whole):
            if not np.isfinite(array).all():
                raise TomocareError(f"{volume.path}: {int((~np.isfinite(array)).sum())} NaN or infinite voxels; "
                                    "the FSC needs finite volumes")
            if array.min() == array.max():
                raise TomocareError(f"{volume.path}: a constant volume (every voxel is {array.flat[0]:g}); no FSC")
        return fsc(whole[0], whole[1], voxel_size)
    curve = fsc_subvolumes(a.array, b.array, voxel_size, size=size, count=count)
    if not np.isfinite(curve.correlation).all() or not curve.correlation.any():
        raise TomocareError(f"{a.path}, {b.path}: NaN, infinite or constant sub-volumes; no FSC")
    return curve


def _whole(array) -> np.ndarray:
    return np.asarray(array[tuple(slice(None) for _ in array.shape)], np.float32)


def _check_same_grid(a: Volume, b: Volume) -> None:
    if a.shape != b.shape:
        raise TomocareError(f"{b.path}: shape {b.shape} differs from {a.path.name}'s {a.shape}")
    if any(abs(x / y - 1) > 0.01 for x, y in zip(b.voxel_size, a.voxel_size) if y):
        fmt = lambda v: " x ".join(f"{s:g}" for s in v)  # noqa: E731
        raise TomocareError(f"{b.path}: voxel size {fmt(b.voxel_size)} Å differs from "
                            f"{a.path.name}'s {fmt(a.voxel_size)} Å")


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def summary_lines(result: dict) -> list[str]:
    """A short human-readable table of the results."""
    lines = []
    names = {k: Path(v).name for k, v in result["inputs"].items()}
    if "fsc" in result:
        f = result["fsc"]
        res = f["resolution_A"]
        lines.append(f"FSC {names['A']} vs {names['B']} ({f['method']}): 0.5 at {resolution_text(res['0.5'])}, "
                     f"0.143 at {resolution_text(res['0.143'])}")
    for key, m in result.get("reference", {}).items():
        w, p = m["whole"], m["percentiles_over_subvolumes"]
        if w["mse"] == 0:  # PSNR would be infinite
            fit = m.get("affine_fit")
            fitted = " after the scale-and-offset fit" if fit and (fit["scale"], fit["offset"]) != (1, 0) else ""
            lines.append(f"{names[key]} vs {names['reference']}: identical to the reference{fitted} (MSE 0)")
            continue
        lines.append(f"{names[key]} vs {names['reference']}: PSNR {w['psnr_db']:.2f} dB, SSIM {w['ssim']:.3f}, "
                     f"NRMSE {w['nrmse']:.3f}, MSE {w['mse']:.4g}")
        if p:
            lines.append(f"  over {m['n_subvolumes']} cubes of {m['subvolume_edge']}: "
                         + ", ".join(f"{k} {v['p5']:.3g}/{v['p50']:.3g}/{v['p95']:.3g}" for k, v in p.items())
                         + " (p5/p50/p95)")
    for key, s in result.get("snr", {}).items():
        db = f" ({s['snr_db']:.2f} dB)" if s["snr_db"] is not None else ""
        lines.append(f"{names[key]}: SNR {s['snr']:.4g}{db} from {s['n_pairs']} box pairs")
    for key, d in result.get("detection", {}).items():
        best = d["best"]
        lines.append(f"{names[key]}: detection best F1 {best['f1']:.3f} (precision {best['precision']:.3f}, "
                     f"recall {best['recall']:.3f}, components >= {best.get('min_voxels', '-')} voxels; "
                     f"{d['n_particles']} particles)")
    lines.append("written: " + ", ".join(result["files"]))
    return lines
