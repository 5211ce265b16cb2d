"""Block-wise commands on the prediction engine: predict (a trained model) and baseline (a classical filter)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tomocare.cli.app import app
from tomocare.cli.options import Block, Chunks, Dtype, Overwrite, Scheduler, Workers, open_client, with_default
from tomocare.config import PredictSettings
from tomocare.errors import TomocareError


@app.command()
def predict(
    model: Annotated[Path, typer.Option("--model", "-m", help="Model directory written by 'tomocare train'.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output OME-Zarr image (NAME.zarr).")],
    even: Annotated[Optional[Path], typer.Option(help="Even half tomogram (MRC or zarr).")] = None,
    odd: Annotated[Optional[Path], typer.Option(help="Odd half tomogram; predictions of both halves are averaged.")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", help="A single tomogram instead of --even/--odd.")] = None,
    mrc: Annotated[Optional[Path], typer.Option(help="Also write the result as this MRC file (streamed).")] = None,
    block: Block = None,
    chunks: Chunks = None,
    dtype: Dtype = None,
    precision: Annotated[Optional[str], typer.Option(help=with_default("Network arithmetic: auto (bf16 where the CPU or GPU does it fast), fp32, bf16 or fp16", PredictSettings, "precision"))] = None,
    orientations: Annotated[Optional[int], typer.Option(help=with_default("Orientations (flips) the network sees each half in, averaged: 1 already flips the odd half (free); 2 is ~0.2 dB better at twice the time", PredictSettings, "orientations"))] = None,
    strict: Annotated[Optional[bool], typer.Option("--strict", help="Refuse inputs whose voxel size differs from the model's data by >10%.")] = None,
    config: Annotated[Optional[Path], typer.Option(help="Settings file, TOML or JSON (its [predict] section).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the block plan and exit.")] = False,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Denoise a tomogram with a trained model: tiled, seamless, distributed, resumable (rerun to resume)."""
    from tomocare.io.atomic import check_output, refuse_inputs
    from tomocare.io.convert import export_mrc
    from tomocare.predict.engine import finished_output, gpu_free_memory, setup_prediction
    from tomocare.predict.engine import predict as run_prediction

    if input is not None and (even or odd):
        raise TomocareError("give either --input or --even and --odd, not both")
    inputs = [input] if input is not None else [p for p in (even, odd) if p is not None]
    if input is None and len(inputs) != 2:
        raise TomocareError("give --even and --odd (or --input for a single volume)")
    from tomocare.config import load_settings

    opts = load_settings(config, predict=dict(block=block, chunks=chunks, dtype=dtype, precision=precision,
                                                 orientations=orientations, strict=strict)).predict
    setup = setup_prediction(model, inputs, out, **opts.model_dump())
    if dry_run:
        typer.echo(json.dumps(setup.describe(), indent=2))
        return
    keep = _keep_finished(out, mrc, overwrite)
    if out.exists() and not (overwrite or keep):
        raise TomocareError(f"{out}: output exists (use --overwrite to replace it)")
    if mrc is not None:
        refuse_inputs(mrc, [*inputs, model, out])
        check_output(mrc, overwrite=overwrite)
    with open_client(scheduler, workers) as client:
        if client.dashboard_link:
            typer.echo(f"dask dashboard: {client.dashboard_link}", err=True)
        if opts.block is None and (free := gpu_free_memory(client)):
            setup = setup_prediction(model, inputs, out, **opts.model_dump(), free_memory=free)
        stats = (keep and finished_output(setup)) or run_prediction(setup, client, overwrite=overwrite,
                                                                     progress=sys.stderr.isatty())
        if mrc is not None:
            export_mrc(out, mrc, overwrite=overwrite)
    typer.echo(f"{out}: {setup.plan.n_blocks} blocks, mean {stats.mean:.4g}, std {stats.std:.4g}")


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
    block: Block = None,
    chunks: Chunks = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the block plan and exit.")] = False,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Apply a classical filter block-wise on the prediction engine: out-of-core, distributed, seamless."""
    from tomocare.baselines import make_filter
    from tomocare.config import load_settings
    from tomocare.io.atomic import check_output, refuse_inputs
    from tomocare.io.convert import export_mrc
    from tomocare.predict.engine import finished_output, setup_filter
    from tomocare.predict.engine import predict as run_blocks

    params = _parse_params(param or [])
    opts = load_settings(None, predict=dict(block=block, chunks=chunks)).predict
    inputs = [input] if odd is None else [input, odd]
    # Bad parameters or inputs fail here, before any cluster starts (the plan reads no voxels).
    setup = setup_filter(make_filter(method, **params), inputs, out, block=opts.block, chunks=opts.chunks)
    with open_client(scheduler, workers) as client:
        if method == "nad" and "scale" not in params:  # NAD's contrast is in units of the data's std
            from tomocare.io.volume import compute_stats

            params["scale"] = compute_stats(setup.inputs[0]).std
            setup = setup_filter(make_filter(method, **params), inputs, out, block=opts.block, chunks=opts.chunks)
        filt = setup.operator.filter
        if dry_run:
            typer.echo(json.dumps({"filter": filt.describe(), **setup.describe()}, indent=2))
            return
        keep = _keep_finished(out, mrc, overwrite)
        check_output(out, overwrite=overwrite or keep)
        if mrc is not None:
            refuse_inputs(mrc, [*inputs, out])
            check_output(mrc, overwrite=overwrite)
        stats = (keep and finished_output(setup)) or run_blocks(setup, client, overwrite=overwrite,
                                                                 progress=sys.stderr.isatty())
        if mrc is not None:
            export_mrc(out, mrc, overwrite=overwrite)
    typer.echo(f"{out}: {method} {filt.params}, {setup.plan.n_blocks} blocks, mean {stats.mean:.4g}, std {stats.std:.4g}")

