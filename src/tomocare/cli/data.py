"""Commands that make, convert, export and describe data: simulate, convert, export, info."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from tomocare.cli.app import app
from tomocare.cli.options import Overwrite, Scheduler, Seed, VoxelSize, Workers, open_client
from tomocare.config import DEFAULT_CHUNK
from tomocare.errors import TomocareError

GeneratedChunks = Annotated[int, typer.Option("--chunks", help="Edge of the blocks generated at a time, in voxels.")]


@app.command()
def simulate(
    out_dir: Annotated[Path, typer.Argument(help="Directory for the dataset (created).")],
    n: Annotated[int, typer.Option("--n", help="Number of tomograms.")] = 2,
    shape: Annotated[tuple[int, int, int], typer.Option(help="Volume shape z y x, in voxels.")] = (96, 192, 192),
    snr: Annotated[
        float, typer.Option(help="Signal-to-noise ratio of each half (signal variance / noise variance).")
    ] = 0.1,
    tilt_range: Annotated[float, typer.Option(help="Maximum tilt angle in degrees (missing wedge beyond it).")] = 60.0,
    voxel_size: VoxelSize = 10.0,
    seed: Seed = 0,
    chunks: GeneratedChunks = DEFAULT_CHUNK,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Write a synthetic dataset with ground truth.

    NAME_even/_odd.mrc (noisy halves), NAME_clean.mrc (the truth) and NAME_particles.csv (positions)."""
    from tomocare.simulate import simulate_dataset

    with open_client(scheduler, workers):
        written = simulate_dataset(
            out_dir, n_tomograms=n, shape=shape, seed=seed, snr=snr, tilt_range=tilt_range,
            voxel_size=voxel_size, chunks=chunks, overwrite=overwrite,
        )
    for entry in written:
        files = ", ".join(f"{k} {entry[k]}" for k in ("even", "odd", "clean", "particles"))
        typer.echo(f"{entry['name']}: seed {entry['seed']}, noise std {entry['noise_std']:.4g}; {files}")


@app.command()
def convert(
    inputs: Annotated[
        list[Path],
        typer.Argument(help="MRC files (.mrc, .rec, .map), then the output: NAME.zarr for one input, "
                       "a directory for several."),
    ],
    chunks: Annotated[Optional[int], typer.Option(
        help=f"Chunk edge in voxels [{DEFAULT_CHUNK}; 256 for ome-zarr-0.4].")] = None,
    format: Annotated[str, typer.Option("--format", help="ome-zarr-0.5 (zarr v3) or ome-zarr-0.4 (zarr v2, as the "
                                        "CZ cryoET data portal and copick); for MRC use 'export'.")] = "ome-zarr-0.5",
    compression: Annotated[str, typer.Option(
        help="blosc-lz4 (fastest), blosc-zstd, zstd or none.")] = "blosc-lz4",  # omezarr.DEFAULT_COMPRESSION
    levels: Annotated[int, typer.Option(help="Pyramid levels (1 = full resolution only).")] = 3,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Convert MRC tomograms to OME-Zarr.

    Chunked, compressed, with a pyramid; streamed (never the whole volume in memory)."""
    from tomocare.io.convert import convert_to_zarr, plan_conversions
    from tomocare.io.omezarr import codecs_for, zarr_format_for

    if len(inputs) < 2:
        raise TomocareError("convert needs at least one input and an output (tomocare convert IN.mrc OUT.zarr)")
    *sources, out = inputs
    codecs_for(compression)
    if format == "mrc":
        raise TomocareError("--format mrc: convert writes OME-Zarr (ome-zarr-0.5 or ome-zarr-0.4); 'tomocare export' "
                            "writes MRC files")
    zarr_format_for(format)
    plan = plan_conversions(sources, out, overwrite=overwrite)
    with open_client(scheduler, workers):
        for source, target in plan:
            convert_to_zarr(source, target, chunks=chunks, compression=compression, levels=levels, overwrite=overwrite,
                            output_format=format)
            typer.echo(f"{source} -> {target}")


@app.command()
def export(
    source: Annotated[Path, typer.Argument(help="OME-Zarr image (or MRC).")],
    out: Annotated[Path, typer.Argument(help="Output MRC file.")],
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Export an OME-Zarr image to MRC.

    Streamed chunk by chunk, with the original header restored."""
    from tomocare.io.atomic import check_output, refuse_inputs
    from tomocare.io.convert import export_mrc
    from tomocare.io.volume import open_volume

    refuse_inputs(out, [source])
    open_volume(source)
    check_output(out, overwrite=overwrite)
    with open_client(scheduler, workers):
        stats = export_mrc(source, out, overwrite=overwrite)
    typer.echo(f"{source} -> {out} (mean {stats.mean:.4g}, std {stats.std:.4g})")



@app.command()
def info(
    paths: Annotated[
        list[Path],
        typer.Argument(help="MRC files, OME-Zarr images, dataset directories or RELION 5 tomograms.star files."),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    stats: Annotated[
        bool,
        typer.Option("--stats", help="Compute the statistics of volumes that do not store them (MRC files): "
                     "reads every voxel."),
    ] = False,
) -> None:
    """Describe tomograms or the pairs of a dataset.

    Shape, dtype and voxel size of each volume, with its statistics (mean, std, min, max) where the file
    stores them (OME-Zarr written by tomocare) or with --stats; or the pairs found in a directory."""
    from tomocare.io.discover import discover_pairs
    from tomocare.io.omezarr import is_zarr
    from tomocare.io.volume import compute_stats, open_volume

    report: list[dict[str, Any]] = []
    for path in paths:
        if (path.is_dir() and not is_zarr(path)) or path.suffix.lower() == ".star":
            found = discover_pairs(path)
            report.append(
                {
                    "dataset": str(path),
                    "pairs": [{"name": p.name, "even": str(p.even), "odd": str(p.odd)} for p in found.pairs],
                    "unmatched": [str(p) for p in found.unmatched],
                }
            )
            continue
        vol = open_volume(path)
        report.append(
            {
                "path": str(path),
                "shape": list(vol.shape),
                "dtype": str(vol.dtype),
                "voxel_size": list(vol.voxel_size),
                "origin": list(vol.origin),
                "stats": compute_stats(vol, check=False).to_dict() if vol.stats or stats else None,
                "size_gib": (
                    round(vol.array.size * vol.dtype.itemsize / 2**30, 3) if hasattr(vol.array, "size") else None
                ),
            }
        )
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for entry in report:
        if "dataset" in entry:
            typer.echo(f"{entry['dataset']}: {len(entry['pairs'])} pairs")
            for p in entry["pairs"]:
                typer.echo(f"  {p['name']}: {p['even']} | {p['odd']}")
            for u in entry["unmatched"]:
                typer.echo(f"  unmatched: {u}")
        else:
            vs = " x ".join(f"{v:g}" for v in entry["voxel_size"])
            typer.echo(f"{entry['path']}: shape {tuple(entry['shape'])}, {entry['dtype']}, voxel {vs} Å"
                       + _stats_text(entry["stats"]))


def _stats_text(stats: dict | None) -> str:
    """``; mean .., std .., min .., max ..`` (and the NaN or infinite voxels), or nothing without statistics."""
    if not stats:
        return ""
    if not stats["count"]:
        return "; no finite voxels"
    text = "; " + ", ".join(f"{k} {stats[k]:.4g}" for k in ("mean", "std", "min", "max"))
    return text + (f", {stats['nonfinite']} NaN or infinite voxels" if stats["nonfinite"] else "")



NoiseModels = Annotated[Optional[list[str]], typer.Option(
    "--noise", help="gaussian, wbp, salt-and-pepper or poisson; repeat for a mix (one drawn per pair) "
    "[gaussian, wbp, salt-and-pepper].")]
SnrRange = Annotated[Optional[str], typer.Option(
    "--snr", help="var(clean) / var(noise): a value or LOW:HIGH, drawn log-uniformly per pair [0.02:0.3].")]
VoxelRange = Annotated[Optional[str], typer.Option(
    "--voxel-size", help="Voxel size in Å: a value or LOW:HIGH, drawn per pair [4:20].")]
TiltRange = Annotated[Optional[str], typer.Option(
    "--tilt-range", help="Maximum tilt in degrees (the missing wedge beyond): a value or LOW:HIGH [40:70].")]
PairShape = Annotated[Optional[tuple[int, int, int]], typer.Option(
    "--shape", help="Volume shape z y x, in voxels [96 192 192].")]
PairTarget = Annotated[Optional[str], typer.Option(
    "--target", help="clean (the wedged volume: denoising) or phantom (before the wedge) [clean].")]


@app.command("simulate-pairs")
def simulate_pairs_command(
    out_dir: Annotated[Path, typer.Argument(help="Directory for the pairs (created).")],
    n: Annotated[int, typer.Option("--n", help="Number of pairs.")] = 2,
    noise: NoiseModels = None,
    snr: SnrRange = None,
    voxel_size: VoxelRange = None,
    tilt_range: TiltRange = None,
    shape: PairShape = None,
    target: PairTarget = None,
    seed: Seed = 0,
    chunks: GeneratedChunks = DEFAULT_CHUNK,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Write simulated input/target pairs.

    pair_NNN_input.mrc (degraded), pair_NNN_target.mrc, pair_NNN_particles.csv and pairs.csv (each pair's
    parameters, drawn from the seed where given as ranges), for 'tomocare train --input --target'."""
    from tomocare.simulate.pairs import pair_spec, simulate_pairs

    spec = pair_spec(noise=noise, snr=snr, voxel_size=voxel_size, tilt_range=tilt_range, shape=shape, target=target)
    with open_client(scheduler, workers):
        written = simulate_pairs(out_dir, spec, n=n, seed=seed, chunks=chunks, overwrite=overwrite)
    for e in written:
        level = f"dose {e['dose']:.4g} e/pixel" if "dose" in e else f"noise std {e['noise_std']:.4g}"
        typer.echo(f"{e['name']}: {e['noise']}, snr {e['snr']:.3g}, voxel {e['voxel_size']:.3g} Å, tilt "
                   f"±{e['tilt_range']:.3g}°, {level}; input {e['files']['input']}, target {e['files']['target']}")
