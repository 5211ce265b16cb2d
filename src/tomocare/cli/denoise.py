"""Dataset commands: denoise (train, predict, report), demo, and config (the settings file)."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tomocare.cli.app import app
from tomocare.cli.options import (
    Block,
    Chunks,
    Device,
    Format,
    Init,
    Scheduler,
    SettingsFile,
    Workers,
    open_client,
    with_default,
)
from tomocare.config import DenoiseSettings
from tomocare.errors import TomocareError


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
            from tomocare.evaluate.fsc import resolution_text

            parts.append(f"resolution (FSC 0.143 of the raw halves) {resolution_text(r['fsc143_raw_A'])}")
        if "psnr_raw_db" in r:
            parts.append(f"PSNR vs clean {r['psnr_raw_db']:.2f} -> {r['psnr_denoised_db']:.2f} dB")
        if r.get("stop_reason"):
            parts.append(f"training: {r['stop_reason']}")
        typer.echo("; ".join(parts))
    typer.echo(f"report: {out_dir / 'report' / 'summary.md'}")
    return failed


@app.command()
def denoise(
    dataset: Annotated[
        Path,
        typer.Argument(help="Dataset directory with even/odd half tomograms, or a RELION 5 tomograms.star "
                       "(a copy naming the denoised tomograms is written to OUT)."),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (rerun the same command to resume).")],
    model: Annotated[
        Optional[str], typer.Option(help="Use this trained model (a directory, or 'general') instead of training one.")
    ] = None,
    init: Init = None,
    config: SettingsFile = None,
    train_on: Annotated[
        Optional[int],
        typer.Option(help="Train on the first N tomograms only (with --watch: the first N complete pairs, default 1)."),
    ] = None,
    per_tomogram: Annotated[
        Optional[bool],
        typer.Option("--per-tomogram", help="Train one model per tomogram instead of one for the dataset."),
    ] = None,
    time_limit: Annotated[
        Optional[float], typer.Option(help="Training wall-clock budget in seconds (per model).")
    ] = None,
    mrc: Annotated[
        Optional[bool],
        typer.Option("--mrc/--no-mrc",
                     help=with_default("Also write NAME_denoised.mrc beside NAME.zarr", DenoiseSettings, "mrc")),
    ] = None,
    device: Device = None,
    format: Format = None,
    block: Block = None,
    chunks: Chunks = None,
    allow_mixed: Annotated[
        Optional[bool], typer.Option("--allow-mixed", help="Accept tomograms of different voxel sizes.")
    ] = None,
    retrain: Annotated[
        bool,
        typer.Option("--retrain", help="Train a new model even if OUT has one (needed when training settings "
                     "changed); tomograms are then redone."),
    ] = False,
    watch: Annotated[
        bool,
        typer.Option("--watch", help="Live mode: keep running, denoise each even/odd pair of DATASET (a directory) "
                     "as it is completed on disk, after training on the first --train-on N complete pairs (default "
                     "1) unless --model; a pair is complete when both files kept their size and modification time "
                     "for --watch-settle seconds and open cleanly. Stop with Ctrl-C or SIGTERM (exit 0); rerun to "
                     "resume."),
    ] = False,
    watch_interval: Annotated[
        Optional[float],
        typer.Option(help=with_default("With --watch: seconds between looks at DATASET", DenoiseSettings,
                                       "watch_interval_s")),
    ] = None,
    watch_settle: Annotated[
        Optional[float],
        typer.Option(help=with_default("With --watch: seconds a file's size and modification time must stay the "
                                       "same before it is read", DenoiseSettings, "watch_settle_s")),
    ] = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Denoise a whole dataset, end to end.

    Train one model on all tomograms, predict each, write a report; rerun the same command to resume.
    With --watch, keep denoising new tomograms as they arrive."""
    from tomocare.config import load_settings
    from tomocare.pipeline import DenoiseOptions, denoise_dataset
    from tomocare.pretrained import resolve

    settings = load_settings(
        config,
        train={"time_limit": time_limit, "device": device, "progress": sys.stderr.isatty(), "init": init},
        predict={"block": block, "chunks": chunks, "format": format},
        denoise={"train_on": train_on, "per_tomogram": per_tomogram, "mrc": mrc, "allow_mixed": allow_mixed,
                 "watch_interval_s": watch_interval, "watch_settle_s": watch_settle},
    )
    if model is None and settings.train.mode == "supervised":
        raise TomocareError("denoise trains Noise2Noise on the even/odd halves; [train] mode 'supervised' is for "
                            "'tomocare train --input/--target'")
    if model is None:
        from tomocare.nn.device import pick_device

        pick_device(settings.train.device)  # one line now, not after the cluster started, if it is not there
    if model is not None and init is not None:
        raise TomocareError("--model predicts with a model as it is; --init trains one from it: give one of them")
    options = DenoiseOptions(model=None if model is None else resolve(model), settings=settings, retrain=retrain)
    if watch:
        _watch(dataset, out, options, scheduler, workers)
        return
    with open_client(scheduler, workers) as client:
        rows = denoise_dataset(dataset, out, options=options, client=client)
    failed = _print_summary(rows, out)
    if failed:
        raise TomocareError(f"{failed} of {len(rows)} tomograms failed (see above and {out / 'state.json'})")


def _watch(dataset: Path, out: Path, options, scheduler: str | None, workers: int | None) -> None:
    """Live mode until SIGINT/SIGTERM (handled only here), then one line: what was done, how to resume."""
    from tomocare.live import WatchResult, check_watchable, watch_dataset
    from tomocare.watch import StopSignal

    check_watchable(dataset)
    stop, result = StopSignal(), WatchResult()
    with stop.installed(), contextlib.ExitStack() as cluster:
        typer.echo(f"watching {dataset} (Ctrl-C or SIGTERM stops; rerun the same command to resume)", err=True)
        with stop.sigint_ignored():  # by the workers started now (a Ctrl-C stops them through this process)
            client = cluster.enter_context(open_client(scheduler, workers))
        watch_dataset(dataset, out, options=options, client=client, stop=stop, result=result)
        cluster.close()
        typer.echo(f"stopped ({stop.requested}): {result.denoised} tomograms denoised in this run, "
                   f"{result.earlier} done before, {result.failed} failed; report: {out / 'report' / 'summary.md'}; "
                   "rerun the same command to resume")


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Directory for the simulated data and results.")
    ] = Path("tomocare-demo"),
    time_limit: Annotated[float, typer.Option(help="Training wall-clock budget in seconds.")] = 200.0,
    workers: Workers = None,
) -> None:
    """Simulate a small dataset and denoise it.

    End to end (a few minutes on a laptop), then print the figures."""
    from tomocare.config import load_settings
    from tomocare.pipeline import DenoiseOptions, denoise_dataset
    from tomocare.simulate import simulate_dataset

    data = out / "data"
    with open_client(None, workers) as client:
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
    path: Annotated[
        Optional[Path], typer.Argument(help="A settings file to check; prints the resolved settings.")
    ] = None,
    example: Annotated[
        bool, typer.Option("--example", help="Print a commented settings file with every default.")
    ] = False,
    out: Annotated[
        Optional[Path], typer.Option("--out", "-o", help="Write the example here instead of printing it.")
    ] = None,
) -> None:
    """Write or check a settings file.

    --example writes a commented file with every default; given a FILE, prints what it resolves to."""
    from tomocare.config import example as example_text
    from tomocare.config import load_settings

    if example:
        if out is not None:
            from tomocare.io.atomic import check_output, write_atomic

            check_output(out, overwrite=False)
            write_atomic(out, example_text())
            typer.echo(f"wrote {out}")
        else:
            typer.echo(example_text(), nl=False)
        return
    if path is None:
        raise TomocareError("give a settings file to check, or --example")
    typer.echo(json.dumps(load_settings(path).model_dump(), indent=2))

