"""Noise-model transfer commands: denoise-single (the whole chain), extract-noise, train-noise, synthesise-pairs."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from tomocare.cli.app import app
from tomocare.cli.options import Device, Scheduler, SettingsFile, Workers, open_client, with_default
from tomocare.config import NoiseTransferSettings
from tomocare.errors import TomocareError

Coarse = Annotated[
    Optional[str],
    typer.Option("--coarse", help=with_default("Coarse denoiser that finds the background: a model directory or "
                                               "'general'", NoiseTransferSettings, "coarse")),
]
PatchSize = Annotated[
    Optional[int],
    typer.Option("--patch-size", help="Edge of the noise patches, even [16 voxels in 3-D, 32 pixels in 2-D]."),
]
Threshold = Annotated[
    Optional[float],
    typer.Option(help=with_default("Background when every pair of sub-patches has SSIM at least this",
                                   NoiseTransferSettings, "threshold")),
]
SynthTime = Annotated[
    Optional[float],
    typer.Option("--synthesiser-time", help=with_default("Seconds to train the noise synthesiser",
                                                         NoiseTransferSettings, "synthesiser_time")),
]


def _settings(config: Path | None, *, coarse=None, patch_size=None, threshold=None, synthesiser_time=None,
              time_limit=None, device=None, mrc=None):
    from tomocare.config import load_settings

    return load_settings(config, train={"time_limit": time_limit, "device": device, "progress": sys.stderr.isatty()},
                         denoise={"mrc": mrc},
                         nt2c={"coarse": coarse, "patch_size": patch_size, "threshold": threshold,
                               "synthesiser_time": synthesiser_time})


@app.command("denoise-single")
def denoise_single(
    dataset: Annotated[Path, typer.Argument(help="A tomogram (MRC or OME-Zarr), or a directory of them, without "
                                            "even/odd halves; or 2-D image stacks with a 2-D --coarse model.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory (rerun the same command to resume).")],
    coarse: Coarse = None,
    config: SettingsFile = None,
    time_limit: Annotated[Optional[float], typer.Option(help=with_default(
        "Seconds to train the fine denoiser", NoiseTransferSettings, "fine_time"))] = None,
    synthesiser_time: SynthTime = None,
    patch_size: PatchSize = None,
    threshold: Threshold = None,
    mrc: Annotated[Optional[bool], typer.Option("--mrc/--no-mrc", help="Also write NAME_denoised.mrc [yes].")] = None,
    device: Device = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Denoise data without halves (NT2C).

    Learn the data's own noise where a coarse denoiser finds background, synthesise training pairs
    like the data, fine-tune the coarse denoiser on them and denoise; rerun to resume."""
    from tomocare.nt2c.chain import denoise_single as run_chain

    settings = _settings(config, coarse=coarse, patch_size=patch_size, threshold=threshold,
                         synthesiser_time=synthesiser_time, time_limit=time_limit, device=device, mrc=mrc)
    with open_client(scheduler, workers) as client:
        rows = run_chain(dataset, out, settings=settings, client=client)
    for r in rows:
        typer.echo(f"  {r['name']}: {r['output']} ({r['kept']} noise patches)")
    typer.echo(f"report: {out / 'report' / 'summary.md'}")


@app.command("extract-noise")
def extract_noise(
    input: Annotated[Path, typer.Argument(help="A tomogram (or 2-D image stack) without halves.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: NAME_patches.npy, "
                                      "NAME_background.csv, NAME_background.png.")],
    coarse: Coarse = None,
    enhanced: Annotated[Optional[Path], typer.Option(help="The input already denoised by a coarse denoiser "
                                                     "(instead of running --coarse on it).")] = None,
    config: SettingsFile = None,
    ndim: Annotated[Optional[int], typer.Option(help="With --enhanced: 2 for 2-D image stacks [3]; with a model, "
                                                "the model's.")] = None,
    patch_size: PatchSize = None,
    threshold: Threshold = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Write the raw noise of background patches.

    The input is denoised by the coarse model (block-wise, into OUT/NAME_coarse.zarr) unless
    --enhanced gives it; where every pair of sub-patches is alike, the raw patch is noise."""
    from tomocare.io.atomic import refuse_inputs
    from tomocare.io.volume import open_volume
    from tomocare.model import Model
    from tomocare.nt2c.chain import enhance, volume_name
    from tomocare.nt2c.chain import extract_noise as extract
    from tomocare.pretrained import resolve

    if enhanced is not None and coarse is not None:
        raise TomocareError("give --coarse (a model to run) or --enhanced (its output), not both")
    if ndim not in (None, 2, 3) or (ndim is not None and enhanced is None):
        raise TomocareError("--ndim is 2 or 3, and goes with --enhanced (a model has its own)")
    settings = _settings(config, coarse=coarse, patch_size=patch_size, threshold=threshold)
    refuse_inputs(out, [input, enhanced])
    name = volume_name(input)
    with open_client(scheduler, workers) as client:
        if enhanced is None:
            model_dir = resolve(settings.nt2c.coarse)
            ndim = Model.read(model_dir).ndim
            enhanced = out / f"{name}_coarse.zarr"
            enhance(input, model_dir, enhanced, settings, client)
        ndim = ndim or 3
        images = ndim == 2
        info = extract(open_volume(input, images=images), open_volume(enhanced, images=images), out, name,
                       ndim=ndim, settings=settings, client=client)
    typer.echo(f"{info['found']} background patches of {info['grid']} ({info['kept']} kept, noise std "
               f"{info['noise_std']:.4g}): {out / (name + '_patches.npy')}")


@app.command("train-noise")
def train_noise(
    noise: Annotated[Path, typer.Argument(help="Directory of NAME_patches.npy files (from extract-noise).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Synthesiser directory (rerun to resume).")],
    time_limit: Annotated[Optional[float], typer.Option(help=with_default(
        "Seconds to train", NoiseTransferSettings, "synthesiser_time"))] = None,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    config: SettingsFile = None,
) -> None:
    """Train the WGAN-GP noise synthesiser.

    On the noise patches extract-noise wrote; OUT gets synthesiser.pt and synthesiser.json, and
    noise_samples.png: synthesised patches beside real ones, their spectra and histograms."""
    from tomocare.nt2c.chain import load_patches
    from tomocare.nt2c.synthesiser import SynthesiserConfig, train_synthesiser

    settings = _settings(config, synthesiser_time=time_limit)
    if not noise.is_dir():
        raise TomocareError(f"{noise}: not a directory")
    names = sorted(p.name.removesuffix("_patches.npy") for p in noise.glob("*_patches.npy"))
    if not names:
        raise TomocareError(f"{noise}: no NAME_patches.npy files (write them with 'tomocare extract-noise')")
    patches = load_patches(noise, names)
    ndim = patches.ndim - 1
    synthesiser = train_synthesiser(patches, out, SynthesiserConfig(ndim=ndim, seed=seed,
                                                                    time_limit=settings.nt2c.synthesiser_time),
                                    resume=True)
    _noise_picture(patches, synthesiser, out / "noise_samples.png", seed)
    typer.echo(f"noise synthesiser written to {out} ({len(patches)} patches)")


@app.command("synthesise-pairs")
def synthesise_pairs(
    synthesiser: Annotated[Path, typer.Option(help="Noise synthesiser directory (from train-noise).")],
    like: Annotated[list[Path], typer.Option("--like", help="The real data the pairs should resemble (its spectrum "
                                             "sets the weights, its header the voxel size); repeatable.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: pair_NNN_input.mrc, "
                                      "pair_NNN_target.mrc, reweight.json.")],
    enhanced: Annotated[Optional[list[Path]], typer.Option(
        help="The --like data denoised by the coarse denoiser (e.g. extract-noise's NAME_coarse.zarr), paired "
             "with --like by order: the clean signal of the pairs with [nt2c] signal = \"coarse\" (the "
             "default).")] = None,
    ndim: Annotated[int, typer.Option(help="2 for 2-D image stacks.")] = 3,
    config: SettingsFile = None,
    scheduler: Scheduler = None,
    workers: Workers = None,
) -> None:
    """Synthesise training pairs like real data.

    Clean signal (crops of --enhanced, or simulated with [nt2c] signal = "simulated") plus
    synthesised noise, weighted to match the real data's power spectrum ([nt2c] pairs,
    pair_shape, tilt_range, seed); train the fine denoiser on them with 'tomocare train --input
    ... --target ... --init MODEL'."""
    from tomocare.io.atomic import refuse_inputs
    from tomocare.io.volume import open_volume
    from tomocare.nt2c.chain import synthesise_pairs as synthesise

    if ndim not in (2, 3):
        raise TomocareError(f"--ndim {ndim}: give 2 or 3")
    settings = _settings(config)
    if settings.nt2c.signal == "coarse" and not enhanced:
        raise TomocareError('[nt2c] signal = "coarse" takes the pairs\' signal from the coarse-denoised data: give '
                            '--enhanced (one per --like), or set signal = "simulated"')
    if settings.nt2c.signal == "coarse" and len(enhanced or []) != len(like):
        raise TomocareError(f"{len(enhanced or [])} --enhanced for {len(like)} --like: give one per --like")
    if settings.nt2c.signal == "simulated" and enhanced:
        raise TomocareError('--enhanced goes with [nt2c] signal = "coarse"; signal = "simulated" makes its own')
    refuse_inputs(out, [*like, *(enhanced or []), synthesiser])
    raws = [open_volume(p, images=ndim == 2) for p in like]
    coarse = [open_volume(p, images=ndim == 2) for p in enhanced or []]
    with open_client(scheduler, workers) as client:
        info = synthesise(synthesiser, raws, out, ndim=ndim, settings=settings, client=client,
                          enhanced=coarse or None)
    typer.echo(f"{info['pairs']} pairs written to {out} (alpha {info['alpha']:.4g}, beta {info['beta']:.4g}, "
               f"gamma {info['gamma']:.4g})")


def _noise_picture(patches, synthesiser, path: Path, seed: int) -> None:
    from tomocare.nt2c.background import about_plane
    from tomocare.nt2c.diagnostics import noise_figure

    real = about_plane(patches[: min(len(patches), 256)])  # what the synthesiser learns: noise about the plane
    made = synthesiser.sample(len(real), real.shape[1:], seed + 1)
    noise_figure(real, made, path, "real noise about each patch's plane (left) and synthesised noise")
