"""Block-wise commands on the prediction engine: predict (a trained model) and baseline (a classical filter)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tomocare.baselines.params import params_help
from tomocare.cli.app import app
from tomocare.cli.options import (
    Block,
    Chunks,
    Dtype,
    Format,
    ModelOption,
    Overwrite,
    Scheduler,
    SettingsFile,
    Workers,
    open_client,
    with_default,
)
from tomocare.config import PredictSettings
from tomocare.errors import TomocareError
from tomocare.predict.operator import BlockOperator

DryRun = Annotated[bool, typer.Option("--dry-run", help="Print a summary of the block plan and exit.")]
AsJson = Annotated[bool, typer.Option("--json", help="With --dry-run: print the full plan as JSON instead.")]


@app.command()
def predict(
    model: ModelOption,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output OME-Zarr image (NAME.zarr), or MRC file with "
                                      "--format mrc.")],
    even: Annotated[Optional[Path], typer.Option(help="Even half tomogram (MRC or zarr).")] = None,
    odd: Annotated[
        Optional[Path], typer.Option(help="Odd half tomogram; predictions of both halves are averaged.")
    ] = None,
    input: Annotated[Optional[Path], typer.Option("--input", help="A single tomogram instead of --even/--odd.")] = None,
    mrc: Annotated[Optional[Path], typer.Option(help="Also write the result as this MRC file (streamed).")] = None,
    format: Format = None,
    block: Block = None,
    chunks: Chunks = None,
    dtype: Dtype = None,
    precision: Annotated[
        Optional[str],
        typer.Option(help=with_default("Network arithmetic: auto (bf16 where the CPU or GPU does it fast), "
                                       "fp32, bf16 or fp16", PredictSettings, "precision")),
    ] = None,
    orientations: Annotated[
        Optional[int],
        typer.Option(help=with_default("Orientations (flips) the network sees each half in, averaged: "
                                       "1 already flips the odd half (free); 2 is ~0.2 dB better at twice the time",
                                       PredictSettings, "orientations")),
    ] = None,
    strict: Annotated[
        Optional[bool],
        typer.Option("--strict", help="Refuse inputs whose voxel size differs from the model's data by >10%."),
    ] = None,
    config: SettingsFile = None,
    dry_run: DryRun = False,
    as_json: AsJson = False,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Denoise a tomogram with a trained model.

    Tiled, seamless, distributed and resumable (rerun the same command to resume)."""
    from tomocare.config import load_settings
    from tomocare.model import Model
    from tomocare.predict.network import NetworkOperator
    from tomocare.pretrained import resolve

    if input is not None and (even or odd):
        raise TomocareError("give either --input or --even and --odd, not both")
    inputs = [input] if input is not None else [p for p in (even, odd) if p is not None]
    if input is None and len(inputs) != 2:
        raise TomocareError("give --even and --odd (or --input for a single volume)")
    settings = load_settings(config, predict=dict(block=block, chunks=chunks, dtype=dtype, precision=precision,
                                                  orientations=orientations, strict=strict, format=format)).predict
    operator = NetworkOperator.from_settings(Model.read(resolve(model)), settings)
    _run_operator(operator, inputs, out, mrc, settings, dry_run=dry_run, as_json=as_json, overwrite=overwrite,
                  scheduler=scheduler, workers=workers)


def _run_operator(operator: BlockOperator, inputs: list[Path], out: Path, mrc: Path | None,
                  settings: PredictSettings, *, dry_run: bool, as_json: bool = False, overwrite: bool,
                  scheduler: str | None, workers: int | None) -> None:
    """Plan ``operator`` over ``inputs`` (bad inputs fail here, before a cluster starts), then run it on the
    cluster, resuming an interrupted run, and export ``mrc``. Without ``--block`` a network's blocks are
    as large as its workers' memory allows (``task_memory``): the dry run plans for the local cluster
    the command would start, the run for the workers it got."""
    from tomocare.cli.summary import plan_summary
    from tomocare.io.atomic import check_output, refuse_inputs, remove
    from tomocare.io.convert import export_mrc
    from tomocare.predict.engine import (
        block_store,
        finished_output,
        local_task_memory,
        plan_run,
        run_blocks,
        task_memory,
    )

    if as_json and not dry_run:
        raise TomocareError("--json goes with --dry-run (it prints the plan instead of running it)")
    if settings.format == "mrc" and mrc is not None:
        raise TomocareError("--format mrc writes the MRC file to --out; --mrc is for a copy beside an OME-Zarr output")
    store = block_store(out, settings.format)  # format mrc: the blocks in a hidden zarr, exported to out
    mrc = out if settings.format == "mrc" else mrc
    sized = operator.gpu and settings.block is None  # the block follows the workers' memory
    memory = local_task_memory(workers) if sized and scheduler is None else None
    planned = plan_run(operator, inputs, store, settings, memory=memory)
    if dry_run:
        described = planned.describe()
        typer.echo(json.dumps(described, indent=2) if as_json else "\n".join(plan_summary(described)))
        return
    if mrc is not None:
        refuse_inputs(mrc, [*inputs, *operator.sources(), store])
        check_output(mrc, overwrite=overwrite)
    keep = _keep_finished(store, mrc, overwrite)
    check_output(store, overwrite=overwrite or keep or store != out)
    with open_client(scheduler, workers) as client:
        if client.dashboard_link:
            typer.echo(f"dask dashboard: {client.dashboard_link}", err=True)
        if sized and (actual := task_memory(client)) != memory:
            planned = plan_run(operator, inputs, store, settings, memory=actual)
        stats = (keep and finished_output(planned)) or run_blocks(planned, client, overwrite=overwrite or store != out,
                                                                  progress=sys.stderr.isatty())
        if mrc is not None:
            export_mrc(store, mrc, overwrite=overwrite)
    if store != out:
        remove(store)
    described = planned.operator.describe()
    what = f"{described['method']} {described['params']}, " if "method" in described else ""
    typer.echo(f"{out}: {what}{planned.plan.n_blocks} blocks, mean {stats.mean:.4g}, std {stats.std:.4g}")


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


@app.command(help="Denoise with a classical filter.\n\nBlock-wise on the prediction engine: out-of-core, "
             "distributed, seamless.\n\n\b\nParameters (-p NAME=VALUE) with their defaults:\n" + params_help())
def baseline(
    method: Annotated[
        str, typer.Argument(help="median, gaussian, lowpass (Butterworth) or nad (non-linear anisotropic diffusion).")
    ],
    input: Annotated[Path, typer.Argument(help="Tomogram (MRC or zarr); with --odd, the even half.")],
    out: Annotated[Path, typer.Argument(help="Output OME-Zarr image (NAME.zarr), or MRC file with --format mrc.")],
    odd: Annotated[Optional[Path], typer.Option(help="Odd half: the halves are averaged, then filtered.")] = None,
    mrc: Annotated[Optional[Path], typer.Option(help="Also write the result as this MRC file (streamed).")] = None,
    format: Format = None,
    block: Block = None,
    chunks: Chunks = None,
    dry_run: DryRun = False,
    as_json: AsJson = False,
    param: Annotated[
        Optional[list[str]],
        typer.Option("--param", "-p", help="Filter parameter NAME=VALUE, repeatable (the parameters of each "
                     "method, their defaults and units: see above)."),
    ] = None,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Denoise with a classical filter (the help, with each method's parameters, is in ``@app.command``)."""
    from tomocare.baselines import make_filter
    from tomocare.config import load_settings

    settings = load_settings(None, predict=dict(block=block, chunks=chunks, format=format)).predict
    inputs = [input] if odd is None else [input, odd]
    _run_operator(make_filter(method, **_parse_params(param or [])), inputs, out, mrc, settings, dry_run=dry_run,
                  as_json=as_json, overwrite=overwrite, scheduler=scheduler, workers=workers)
