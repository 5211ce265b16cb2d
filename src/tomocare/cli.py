"""The ``tomocare`` command line: parses options and calls the Python API, nothing more."""

from __future__ import annotations

import errno
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import click
import typer

from tomocare import __version__
from tomocare.errors import TomocareError

app = typer.Typer(
    name="tomocare",
    help="Out-of-core, distributed Noise2Noise denoising of cryo-electron tomograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: '[train]' and '[fp32]' are printed, not read as markup
)

Scheduler = Annotated[
    Optional[str],
    typer.Option("--scheduler", help="Address (tcp://HOST:8786, tls://HOST:8786) or scheduler-file of a running dask cluster "
                 "(default: start a local one). tls:// takes the certificates from dask's config: "
                 "distributed.comm.tls.ca-file, .client.cert and .client.key, or the environment variables "
                 "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ..._CLIENT__CERT and ..._CLIENT__KEY."),
]
Workers = Annotated[Optional[int], typer.Option("--workers", help="Worker processes of the local cluster (default: one per core).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that exist.")]


def _client(scheduler: str | None, workers: int | None):
    from tomocare.cluster import dask_client

    return dask_client(scheduler, n_workers=workers)


@app.command()
def simulate(
    out_dir: Annotated[Path, typer.Argument(help="Directory for the dataset (created).")],
    n: Annotated[int, typer.Option("--n", help="Number of tomograms.")] = 2,
    shape: Annotated[tuple[int, int, int], typer.Option(help="Volume shape z y x, in voxels.")] = (96, 192, 192),
    snr: Annotated[float, typer.Option(help="Signal-to-noise ratio of each half (signal variance / noise variance).")] = 0.1,
    tilt_range: Annotated[float, typer.Option(help="Maximum tilt angle in degrees (missing wedge beyond it).")] = 60.0,
    voxel_size: Annotated[float, typer.Option(help="Voxel size in Å.")] = 10.0,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same dataset.")] = 0,
    chunks: Annotated[int, typer.Option(help="Edge of the blocks generated at a time, in voxels.")] = 128,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Write a synthetic dataset with ground truth: NAME_even/_odd/_clean.mrc and particle positions."""
    from tomocare.simulate import simulate_dataset

    out_dir.mkdir(parents=True, exist_ok=True)
    with _client(scheduler, workers):
        written = simulate_dataset(
            out_dir, n_tomograms=n, shape=shape, seed=seed, snr=snr, tilt_range=tilt_range,
            voxel_size=voxel_size, chunks=chunks, overwrite=overwrite,
        )
    for entry in written:
        typer.echo(f"{entry['name']}: " + ", ".join(str(v) for k, v in entry.items() if k != "name"))


@app.command()
def convert(
    inputs: Annotated[list[Path], typer.Argument(help="MRC files (.mrc, .rec, .map), then the output: NAME.zarr for one input, a directory for several.")],
    chunks: Annotated[int, typer.Option(help="Chunk edge in voxels.")] = 128,
    compression: Annotated[str, typer.Option(help="blosc-zstd, zstd or none.")] = "blosc-zstd",
    levels: Annotated[int, typer.Option(help="Pyramid levels (1 = full resolution only).")] = 3,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Convert MRC tomograms to chunked, compressed OME-Zarr, streaming (never the whole volume in memory)."""
    from tomocare.io.convert import convert_to_zarr, plan_conversions
    from tomocare.io.omezarr import codecs_for

    if len(inputs) < 2:
        raise TomocareError("convert needs at least one input and an output (tomocare convert IN.mrc OUT.zarr)")
    *sources, out = inputs
    codecs_for(compression)
    plan = plan_conversions(sources, out, overwrite=overwrite)
    with _client(scheduler, workers):
        for source, target in plan:
            convert_to_zarr(source, target, chunks=chunks, compression=compression, levels=levels, overwrite=overwrite)
            typer.echo(f"{source} -> {target}")


@app.command()
def export(
    source: Annotated[Path, typer.Argument(help="OME-Zarr image (or MRC).")],
    out: Annotated[Path, typer.Argument(help="Output MRC file.")],
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Export an OME-Zarr image to MRC, streamed chunk by chunk, with the original header restored."""
    from tomocare.io.atomic import check_output, refuse_inputs
    from tomocare.io.convert import export_mrc
    from tomocare.io.volume import open_volume

    refuse_inputs(out, [source])
    open_volume(source)
    check_output(out, overwrite=overwrite)
    with _client(scheduler, workers):
        stats = export_mrc(source, out, overwrite=overwrite)
    typer.echo(f"{source} -> {out} (mean {stats.mean:.4g}, std {stats.std:.4g})")


def _pairs(dataset: Path | None, even: list[Path], odd: list[Path], *, images: bool = False):
    """Pairs from a dataset directory or from matching --even/--odd lists, opened and checked
    (``images``: 2-D data, a single image being a stack of one)."""
    from tomocare.io.discover import Pair, discover_pairs, open_pair

    if dataset is not None and (even or odd):
        raise TomocareError("give a dataset directory or --even/--odd, not both")
    if dataset is not None:
        found = discover_pairs(dataset)
        if found.unmatched:
            warnings.warn(f"{dataset}: {found.describe_unmatched()}", stacklevel=1)
        pairs = found.pairs
    else:
        if not even or len(even) != len(odd):
            raise TomocareError(f"give as many --even as --odd halves (got {len(even)} and {len(odd)})")
        pairs = [Pair(e.stem, e, o) for e, o in zip(even, odd)]
    return [open_pair(p, images=images) for p in pairs]


def _adjacent_tilt_pairs(tilt_series: list[Path]):
    """P2P-tap: each aligned tilt series as a pair of stacks, tilts 0..n-2 against 1..n-1."""
    from tomocare.io.discover import VolumePair
    from tomocare.io.volume import Volume
    from tomocare.tilt.pairs import adjacent_tilt_pairs
    from tomocare.tilt.stack import open_stack

    pairs = []
    for path in tilt_series:
        stack = open_stack(path, command="train --tilt-series", what="tilt series", min_images=3)
        halves = adjacent_tilt_pairs(stack.array)
        even, odd = (Volume(path, h, stack.header.voxel_size, stack.header.origin, None, stack.header) for h in halves)
        pairs.append(VolumePair(path.stem, even, odd))
    return pairs


@app.command()
def train(
    dataset: Annotated[Optional[Path], typer.Argument(help="Dataset directory with even/odd pairs, or a RELION 5 tomograms.star (or use --even/--odd).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")] = Path("model"),
    even: Annotated[Optional[list[Path]], typer.Option(help="Even half (MRC or zarr); repeat for several tomograms.")] = None,
    odd: Annotated[Optional[list[Path]], typer.Option(help="Odd half, in the same order as --even.")] = None,
    tilt_series: Annotated[Optional[list[Path]], typer.Option("--tilt-series", help="P2P-tap: train a 2-D model on the adjacent tilts of this aligned tilt series; repeatable.")] = None,
    ndim: Annotated[Optional[int], typer.Option(help="3: a 3-D U-Net on half tomograms; 2: a 2-D U-Net on images or image stacks (n, y, x): two acquisitions (P2P-ip), even/odd frame sums (P2P-df), adjacent tilts (--tilt-series) [3].")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Settings file, TOML or JSON (its [train] section; see 'tomocare config --example').")] = None,
    patch_size: Annotated[Optional[int], typer.Option(help="Patch edge in voxels [64].")] = None,
    n_patches: Annotated[Optional[int], typer.Option(help="Training patches per tomogram [1200].")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Patches per step [16].")] = None,
    depth: Annotated[Optional[int], typer.Option(help="U-Net depth [2].")] = None,
    channels: Annotated[Optional[int], typer.Option(help="Channels of the first U-Net level [16].")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Training steps at most [20000].")] = None,
    time_limit: Annotated[Optional[float], typer.Option(help="Wall-clock budget in seconds; then save and stop.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Random seed [0].")] = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out from its checkpoint.")] = False,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Train a Noise2Noise U-Net on even/odd half tomograms (or, with --ndim 2, images); patches are read by dask workers."""
    from tomocare.io.atomic import refuse_inputs
    from tomocare.io.discover import check_voxel_sizes
    from tomocare.io.stats import Stats
    from tomocare.train.loop import train as run_training

    from tomocare.config import load_settings

    if tilt_series and ndim not in (None, 2):
        raise TomocareError("--tilt-series trains a 2-D model on tilt images: leave out --ndim or give --ndim 2")
    overrides = dict(patch_size=patch_size, n_patches=n_patches, batch_size=batch_size, depth=depth,
                     base_channels=channels, max_steps=max_steps, time_limit=time_limit, seed=seed,
                     ndim=2 if tilt_series else ndim, progress=sys.stderr.isatty())
    cfg = load_settings(config, train=overrides).train
    if tilt_series and (dataset is not None or even or odd):
        raise TomocareError("give --tilt-series, or a dataset directory or --even/--odd, not both")
    pairs = _adjacent_tilt_pairs(tilt_series) if tilt_series else _pairs(dataset, even or [], odd or [], images=cfg.ndim == 2)
    voxel_size = check_voxel_sizes(pairs)
    refuse_inputs(out, [v.path for p in pairs for v in (p.even, p.odd)])
    stored = [v.stats for p in pairs for v in (p.even, p.odd)]
    norm = Stats.merge(stored) if all(s is not None for s in stored) else None
    with _client(scheduler, workers) as client:
        run_training(
            [(p.even.array, p.odd.array) for p in pairs], out, config=cfg, client=client,
            mean=norm.mean if norm else None, std=norm.std if norm else None, voxel_size=voxel_size,
            names=[p.name for p in pairs], resume=resume, overwrite=overwrite,
        )
    typer.echo(f"model written to {out}")


@app.command()
def predict(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory written by 'tomocare train'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output OME-Zarr image (NAME.zarr).")],
    even: Annotated[Optional[Path], typer.Option(help="Even half tomogram (MRC or zarr).")] = None,
    odd: Annotated[Optional[Path], typer.Option(help="Odd half tomogram; predictions of both halves are averaged.")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", help="A single tomogram instead of --even/--odd.")] = None,
    mrc: Annotated[Optional[Path], typer.Option(help="Also write the result as this MRC file (streamed).")] = None,
    block: Annotated[Optional[int], typer.Option(help="Output block edge per task (a multiple of --chunks; default --chunks).")] = None,
    chunks: Annotated[Optional[int], typer.Option(help="Output chunk edge in voxels [128].")] = None,
    dtype: Annotated[Optional[str], typer.Option(help="Output dtype: float32 or float16 [float32].")] = None,
    precision: Annotated[Optional[str], typer.Option(help="Network arithmetic: auto (bf16 where the CPU or GPU does it fast), fp32, bf16 or fp16 [auto].")] = None,
    orientations: Annotated[Optional[int], typer.Option(help="Orientations (flips) the network sees each half in, averaged: 1 already flips the odd half (free); 2 is ~0.2 dB better at twice the time [1].")] = None,
    strict: Annotated[Optional[bool], typer.Option("--strict", help="Refuse inputs whose voxel size differs from the model's data by >10%.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Settings file, TOML or JSON (its [predict] section).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the block plan and exit.")] = False,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Denoise a tomogram with a trained model: tiled, seamless, distributed, resumable (rerun to resume)."""
    from tomocare.config import load_settings
    from tomocare.model import Model
    from tomocare.predict.network import NetworkOperator

    if input is not None and (even or odd):
        raise TomocareError("give either --input or --even and --odd, not both")
    inputs = [input] if input is not None else [p for p in (even, odd) if p is not None]
    if input is None and len(inputs) != 2:
        raise TomocareError("give --even and --odd (or --input for a single volume)")
    settings = load_settings(config, predict=dict(block=block, chunks=chunks, dtype=dtype, precision=precision,
                                                  orientations=orientations, strict=strict)).predict
    operator = NetworkOperator.from_settings(Model.read(model), settings)
    _run_operator(operator, inputs, out, mrc, settings, dry_run=dry_run, overwrite=overwrite, scheduler=scheduler,
                  workers=workers)


def _run_operator(operator, inputs: list[Path], out: Path, mrc: Path | None, settings, *, dry_run: bool,
                  overwrite: bool, scheduler: str | None, workers: int | None) -> None:
    """Plan ``operator`` over ``inputs`` (bad inputs fail here, before a cluster starts), then run it on the
    cluster, resuming an interrupted run, and export ``mrc``. With GPU workers and no block given, the
    plan is made again for the GPUs' free memory (larger blocks)."""
    from tomocare.io.atomic import check_output, refuse_inputs
    from tomocare.io.convert import export_mrc
    from tomocare.predict.engine import finished_output, gpu_free_memory, plan_run, run_blocks

    planned = plan_run(operator, inputs, out, settings)
    if dry_run:
        typer.echo(json.dumps(planned.describe(), indent=2))
        return
    keep = _keep_finished(out, mrc, overwrite)
    check_output(out, overwrite=overwrite or keep)
    if mrc is not None:
        refuse_inputs(mrc, [*inputs, *operator.sources(), out])
        check_output(mrc, overwrite=overwrite)
    with _client(scheduler, workers) as client:
        if client.dashboard_link:
            typer.echo(f"dask dashboard: {client.dashboard_link}", err=True)
        if operator.gpu and settings.block is None and (free := gpu_free_memory(client)):
            planned = plan_run(operator, inputs, out, settings, free_memory=free)
        stats = (keep and finished_output(planned)) or run_blocks(planned, client, overwrite=overwrite,
                                                                  progress=sys.stderr.isatty())
        if mrc is not None:
            export_mrc(out, mrc, overwrite=overwrite)
    described = planned.operator.describe()
    what = described.get("method", "") + (f" {described['params']}" if "params" in described else "")
    typer.echo(f"{out}: {what + ', ' if what else ''}{planned.plan.n_blocks} blocks, mean {stats.mean:.4g}, "
               f"std {stats.std:.4g}")


def _keep_finished(out: Path, mrc: Path | None, overwrite: bool) -> bool:
    """Whether an existing ``out`` may be kept if the same run finished it (``finished_output``): a rerun
    after the ``--mrc`` export failed (a full disk) writes only the MRC file."""
    return not overwrite and mrc is not None and out.exists() and not mrc.exists()


def _parse_params(values: list[str]) -> dict[str, float]:
    params = {}
    for item in values:
        name, sep, value = item.partition("=")
        try:
            params[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise TomocareError(f"--param {item!r}: expected NAME=NUMBER, e.g. --param sigma=1.5")
    return params


@app.command()
def baseline(
    method: Annotated[str, typer.Argument(help="median, gaussian, lowpass (Butterworth) or nad (non-linear anisotropic diffusion).")],
    input: Annotated[Path, typer.Argument(help="Tomogram (MRC or zarr); with --odd, the even half.")],
    out: Annotated[Path, typer.Argument(help="Output OME-Zarr image (NAME.zarr).")],
    odd: Annotated[Optional[Path], typer.Option(help="Odd half: the halves are averaged, then filtered.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", help="Filter parameter NAME=VALUE, repeatable (e.g. sigma=1.5, size=3, cutoff=0.3, order=4, iterations=10).")] = None,
    mrc: Annotated[Optional[Path], typer.Option(help="Also write the result as this MRC file (streamed).")] = None,
    block: Annotated[Optional[int], typer.Option(help="Output block edge per task (a multiple of --chunks).")] = None,
    chunks: Annotated[Optional[int], typer.Option(help="Output chunk edge in voxels [128].")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the block plan and exit.")] = False,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Apply a classical filter block-wise on the prediction engine: out-of-core, distributed, seamless."""
    from tomocare.baselines import make_filter
    from tomocare.config import load_settings

    settings = load_settings(None, predict=dict(block=block, chunks=chunks)).predict
    inputs = [input] if odd is None else [input, odd]
    _run_operator(make_filter(method, **_parse_params(param or [])), inputs, out, mrc, settings, dry_run=dry_run,
                  overwrite=overwrite, scheduler=scheduler, workers=workers)


def _print_summary(rows: list[dict], out_dir: Path) -> int:
    """Print one line per tomogram; return the number that failed."""
    failed = 0
    for r in rows:
        if r.get("status") != "done":
            failed += 1
            typer.echo(f"  {r['name']}: FAILED: {r.get('error', '')}")
            continue
        parts = [f"  {r['name']}: {r['output']}"]
        if "fsc143_raw_A" in r:
            value = r["fsc143_raw_A"]
            parts.append(f"resolution (FSC 0.143 of the raw halves) {f'{value:.1f} Å' if value else 'Nyquist'}")
        if "psnr_raw_db" in r:
            parts.append(f"PSNR vs clean {r['psnr_raw_db']:.2f} -> {r['psnr_denoised_db']:.2f} dB")
        if r.get("stop_reason"):
            parts.append(f"training: {r['stop_reason']}")
        typer.echo("; ".join(parts))
    typer.echo(f"report: {out_dir / 'report' / 'summary.md'}")
    return failed


@app.command()
def denoise(
    dataset: Annotated[Path, typer.Argument(help="Dataset directory with even/odd half tomograms, or a RELION 5 tomograms.star (a copy naming the denoised tomograms is written to OUT).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (rerun the same command to resume).")],
    model: Annotated[Optional[Path], typer.Option(help="Use this trained model instead of training one.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Settings file, TOML or JSON ([train], [predict], [denoise]; see 'tomocare config --example').")] = None,
    train_on: Annotated[Optional[int], typer.Option(help="Train on the first N tomograms only.")] = None,
    per_tomogram: Annotated[Optional[bool], typer.Option("--per-tomogram", help="Train one model per tomogram instead of one for the dataset.")] = None,
    time_limit: Annotated[Optional[float], typer.Option(help="Training wall-clock budget in seconds (per model).")] = None,
    mrc: Annotated[Optional[bool], typer.Option("--mrc/--no-mrc", help="Also write NAME_denoised.mrc beside NAME.zarr [yes].")] = None,
    chunks: Annotated[Optional[int], typer.Option(help="Output chunk edge in voxels [128].")] = None,
    allow_mixed: Annotated[Optional[bool], typer.Option("--allow-mixed", help="Accept tomograms of different voxel sizes.")] = None,
    retrain: Annotated[bool, typer.Option("--retrain", help="Train a new model even if OUT has one (needed when training settings changed); tomograms are then redone.")] = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Denoise a whole dataset: train one model on all tomograms, predict each, write a report. Resumable."""
    from tomocare.config import load_settings
    from tomocare.pipeline import DenoiseOptions, denoise_dataset

    settings = load_settings(
        config,
        train={"time_limit": time_limit, "progress": sys.stderr.isatty()},
        predict={"chunks": chunks},
        denoise={"train_on": train_on, "per_tomogram": per_tomogram, "mrc": mrc, "allow_mixed": allow_mixed},
    )
    options = DenoiseOptions(model=model, settings=settings, retrain=retrain)
    with _client(scheduler, workers) as client:
        rows = denoise_dataset(dataset, out, options=options, client=client)
    failed = _print_summary(rows, out)
    if failed:
        raise TomocareError(f"{failed} of {len(rows)} tomograms failed (see above and {out / 'state.json'})")


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory for the simulated data and results.")] = Path("tomocare-demo"),
    time_limit: Annotated[float, typer.Option(help="Training wall-clock budget in seconds.")] = 200.0,
    workers: Workers = None,
) -> None:
    """Simulate a small dataset and denoise it end to end (a few minutes on a laptop), then print the figures."""
    from tomocare.config import load_settings
    from tomocare.pipeline import DenoiseOptions, denoise_dataset
    from tomocare.simulate import simulate_dataset

    data = out / "data"
    with _client(None, workers) as client:
        if not (data / "tomo_001_odd.mrc").exists():
            typer.echo(f"simulating 2 tomograms (96 x 192 x 192, SNR 0.1) in {data} ...")
            simulate_dataset(data, n_tomograms=2, shape=(96, 192, 192), snr=0.1, seed=0, overwrite=True)
        typer.echo(f"training for at most {time_limit:g} s, then predicting both tomograms ...")
        settings = load_settings(None, train={"time_limit": time_limit, "progress": sys.stderr.isatty()})
        options = DenoiseOptions(settings=settings)
        rows = denoise_dataset(data, out / "results", options=options, client=client)
    _print_summary(rows, out / "results")


@app.command()
def config(
    path: Annotated[Optional[Path], typer.Argument(help="A settings file to check; prints the resolved settings.")] = None,
    example: Annotated[bool, typer.Option("--example", help="Print a commented settings file with every default.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Write the example here instead of printing it.")] = None,
) -> None:
    """Write a commented example settings file, or check one and print what it resolves to."""
    from tomocare.config import example as example_text
    from tomocare.config import load_settings

    if example:
        if out is not None:
            from tomocare.io.atomic import check_output

            check_output(out, overwrite=False)
            out.write_text(example_text())
            typer.echo(f"wrote {out}")
        else:
            typer.echo(example_text(), nl=False)
        return
    if path is None:
        raise TomocareError("give a settings file to check, or --example")
    typer.echo(json.dumps(load_settings(path).model_dump(), indent=2))


@app.command()
def info(
    paths: Annotated[list[Path], typer.Argument(help="MRC files, OME-Zarr images, dataset directories or RELION 5 tomograms.star files.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Describe tomograms (shape, dtype, voxel size, statistics) or the pairs found in a directory."""
    from tomocare.io.discover import discover_pairs
    from tomocare.io.volume import open_volume

    report = []
    for path in paths:
        if (path.is_dir() and not (path / "zarr.json").exists()) or path.suffix.lower() == ".star":
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
                "stats": vol.stats.to_dict() if vol.stats else None,
                "size_gib": round(vol.array.size * vol.dtype.itemsize / 2**30, 3) if hasattr(vol.array, "size") else None,
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
            typer.echo(f"{entry['path']}: shape {tuple(entry['shape'])}, {entry['dtype']}, voxel {vs} Å")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture, a redirected log)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    progress = logging.getLogger("tomocare.progress")  # plans, progress lines, why training stopped: always shown
    if not progress.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        progress.addHandler(handler)
        progress.setLevel(logging.INFO)
        progress.propagate = False
    if not verbose:  # dask logs every worker start and stop, and shutdown races, below ERROR
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda r: not r.name.startswith(("distributed", "tornado")) or r.levelno >= logging.ERROR)
    if version:
        typer.echo(f"tomocare {__version__}")
        raise typer.Exit()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


# typer bundles its own copy of click (0.2x) or uses click itself (older): catch both.
_CLICKS = {click.exceptions, sys.modules[typer.BadParameter.__module__]}
_USAGE_ERRORS = tuple(m.UsageError for m in _CLICKS)
_CLICK_ERRORS = tuple(m.ClickException for m in _CLICKS)
_EXITS = tuple({getattr(m, "Exit", typer.Exit) for m in _CLICKS} | {typer.Exit})
_ABORTS = tuple({getattr(m, "Abort", typer.Abort) for m in _CLICKS} | {typer.Abort, KeyboardInterrupt})


def _usage_error(exc) -> None:
    """Two lines: the command's usage, and what is wrong with a pointer to --help."""
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        print(ctx.get_usage().replace("Usage:", "usage:", 1), file=sys.stderr)
        where = f" (see '{ctx.command_path} --help')"
    else:
        where = " (see 'tomocare --help')"
    print(f"error: {exc.format_message()}{where}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr (usage errors two) and exit code 2."""
    warnings.showwarning = _show_warning
    try:
        app(args=argv, standalone_mode=False, prog_name="tomocare")
    except TomocareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except _EXITS as exc:
        return getattr(exc, "exit_code", 0)
    except _USAGE_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # 'tomocare' or 'tomocare COMMAND' alone: the help
            print(exc.format_message())
            return 0
        _usage_error(exc)
        return 2
    except _CLICK_ERRORS as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return 2
    except _ABORTS:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as err:  # a full or read-only disk, a permission, an I/O error, here or on a worker
        where = f"{err.filename}: " if err.filename else ""
        hint = "; free space and rerun the same command to resume" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        print(f"error: {where}{err.strerror or err}{hint}", file=sys.stderr)
        return 2
    return 0


# Commands kept in their own modules register themselves on ``app`` when imported.
from tomocare import cli_evaluate, cli_tilt  # noqa: E402,F401

if __name__ == "__main__":  # run the importable module, on whose app every command registered
    from tomocare.cli import main as _main

    sys.exit(_main())
