"""The training command: train (on half tomograms, image pairs or adjacent tilts; or supervised on input/target
pairs)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer

from tomocare.cli.app import app
from tomocare.cli.data import NoiseModels, PairShape, SnrRange, TiltRange, VoxelRange
from tomocare.cli.options import Device, Init, Overwrite, Scheduler, SettingsFile, Workers, open_client, with_default
from tomocare.errors import TomocareError
from tomocare.train.config import TrainConfig


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


def _supervised_pairs(inputs: list[Path], targets: list[Path], *, images: bool = False):
    """Supervised (input, target) pairs from matching --input/--target lists, opened and checked as
    even/odd halves are (same shape and voxel size); the input plays the even half's part."""
    from tomocare.io.discover import Pair, open_pair

    if not inputs or len(inputs) != len(targets):
        raise TomocareError(f"give as many --input as --target volumes (got {len(inputs)} and {len(targets)})")
    return [open_pair(Pair(i.stem, i, t), images=images, first="its input") for i, t in zip(inputs, targets)]


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


def _masks(paths: list[Path], pairs) -> list:
    """The training masks, one per pair, opened and checked: the pair's shape, a nonzero voxel somewhere."""
    from tomocare.io.volume import open_volume, reading

    if len(paths) != len(pairs):
        raise TomocareError(f"give one --mask per tomogram: {len(pairs)} to train on, {len(paths)} masks")
    arrays = []
    for path, pair in zip(paths, pairs):
        mask = open_volume(path)
        if tuple(mask.shape) != tuple(pair.even.shape):
            raise TomocareError(f"{path}: mask shape {tuple(mask.shape)} differs from {pair.name}'s "
                                f"{tuple(pair.even.shape)}")
        with reading(path):
            if not mask.to_dask().any().compute(scheduler="threads"):
                raise TomocareError(f"{path}: the mask is all zero (patches are drawn where it is nonzero)")
        arrays.append(mask.array)
    return arrays


TARGET_HELP = ("Supervised training: the volume the network should make of the --input of the same position "
               "(e.g. the clean one); same shape and voxel size.")


@app.command()
def train(
    dataset: Annotated[
        Optional[Path],
        typer.Argument(help="Dataset directory with even/odd pairs, or a RELION 5 tomograms.star "
                       "(or use --even/--odd)."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Model directory to write.")] = Path("model"),
    even: Annotated[
        Optional[list[Path]], typer.Option(help="Even half (MRC or zarr); repeat for several tomograms.")
    ] = None,
    odd: Annotated[Optional[list[Path]], typer.Option(help="Odd half, in the same order as --even.")] = None,
    inputs: Annotated[
        Optional[list[Path]],
        typer.Option("--input", help="Supervised training: an input volume (e.g. noisy or degraded, MRC or zarr); "
                     "repeatable, paired with --target by order. Sets mode 'supervised'."),
    ] = None,
    targets: Annotated[Optional[list[Path]], typer.Option("--target", help=TARGET_HELP)] = None,
    tilt_series: Annotated[
        Optional[list[Path]],
        typer.Option("--tilt-series", help="P2P-tap: train a 2-D model on the adjacent tilts of this aligned "
                     "tilt series; repeatable."),
    ] = None,
    ndim: Annotated[
        Optional[int],
        typer.Option(help=with_default("3: a 3-D U-Net on half tomograms; 2: a 2-D U-Net on images or image stacks "
                                       "(n, y, x): two acquisitions (P2P-ip), even/odd frame sums (P2P-df), "
                                       "adjacent tilts (--tilt-series)", TrainConfig, "ndim")),
    ] = None,
    config: SettingsFile = None,
    patch_size: Annotated[
        Optional[int], typer.Option(help=with_default("Patch edge in voxels", TrainConfig, "patch_size"))
    ] = None,
    n_patches: Annotated[
        Optional[int], typer.Option(help=with_default("Training patches per tomogram", TrainConfig, "n_patches"))
    ] = None,
    batch_size: Annotated[
        Optional[int], typer.Option(help=with_default("Patches per step", TrainConfig, "batch_size"))
    ] = None,
    depth: Annotated[Optional[int], typer.Option(help=with_default("U-Net depth", TrainConfig, "depth"))] = None,
    channels: Annotated[
        Optional[int],
        typer.Option(help=with_default("Channels of the first U-Net level", TrainConfig, "base_channels")),
    ] = None,
    max_steps: Annotated[
        Optional[int], typer.Option(help=with_default("Training steps at most", TrainConfig, "max_steps"))
    ] = None,
    time_limit: Annotated[
        Optional[float], typer.Option(help="Wall-clock budget in seconds; then save and stop.")
    ] = None,
    seed: Annotated[Optional[int], typer.Option(help=with_default("Random seed", TrainConfig, "seed"))] = None,
    loss: Annotated[
        Optional[str],
        typer.Option(help=with_default("Training and validation loss: mse, l1 or ssim (1 - SSIM)", TrainConfig,
                                       "loss")),
    ] = None,
    architecture: Annotated[
        Optional[str],
        typer.Option(help=with_default("Network: unet, or autoencoder (no skip connections)", TrainConfig,
                                       "architecture")),
    ] = None,
    adversarial: Annotated[
        Optional[str],
        typer.Option(help=with_default("Supervised only: adversarial loss of a critic: none, gan or wgan-gp",
                                       TrainConfig, "adversarial")),
    ] = None,
    mask: Annotated[
        Optional[list[Path]],
        typer.Option("--mask", help="Draw training patches only where this volume (the tomogram's shape) is "
                     "nonzero; one per tomogram, in the order of --even (of a dataset: as 'tomocare info' lists "
                     "its pairs). 3-D training only."),
    ] = None,
    init: Init = None,
    allow_mixed: Annotated[
        bool, typer.Option("--allow-mixed", help="Accept volumes of different voxel sizes (the model records none).")
    ] = False,
    device: Device = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run in --out from its checkpoint.")] = False,
    overwrite: Overwrite = False,
    scheduler: Scheduler = None,
    workers: Workers = None,
    simulate: Annotated[Optional[int], typer.Option(
        help="Supervised training on this many simulated pairs, rendered by the dask workers (see simulate-pairs; "
        "its --noise, --snr, --voxel-size, --tilt-range and --shape apply).")] = None,
    noise: NoiseModels = None,
    snr: SnrRange = None,
    sim_voxel_size: VoxelRange = None,
    tilt_range: TiltRange = None,
    shape: PairShape = None,
    simulate_target: Annotated[Optional[str], typer.Option(
        help="With --simulate: clean (denoising) or phantom (before the wedge) [clean].")] = None,
) -> None:
    """Train a denoising U-Net.

    Noise2Noise on even/odd half tomograms (or, with --ndim 2, images), or supervised on input ->
    target pairs (--input/--target) such as simulated noisy and clean volumes; patches are read by
    dask workers."""
    from tomocare.config import load_settings
    from tomocare.io.atomic import refuse_inputs
    from tomocare.io.discover import check_voxel_sizes
    from tomocare.io.stats import normalisation
    from tomocare.nn.device import pick_device
    from tomocare.simulate.pairs import pair_spec
    from tomocare.train.loop import train as run_training

    if tilt_series and ndim not in (None, 2):
        raise TomocareError("--tilt-series trains a 2-D model on tilt images: leave out --ndim or give --ndim 2")
    supervised = bool(inputs or targets or simulate is not None)
    if supervised and (dataset is not None or even or odd or tilt_series):
        raise TomocareError("give --input/--target (supervised), or a dataset directory, --even/--odd or "
                            "--tilt-series, not both")
    overrides = dict(patch_size=patch_size, n_patches=n_patches, batch_size=batch_size, depth=depth,
                     base_channels=channels, max_steps=max_steps, time_limit=time_limit, seed=seed, device=device,
                     ndim=2 if tilt_series else ndim, progress=sys.stderr.isatty(), loss=loss, init=init,
                     architecture=architecture, adversarial=adversarial, mode="supervised" if supervised else None)
    cfg = load_settings(config, train=overrides).train
    if cfg.mode == "supervised" and not supervised:
        raise TomocareError("mode 'supervised' trains on --input/--target pairs; give those, or set mode "
                            "'noise2noise' for even/odd halves")
    pick_device(cfg.device)  # one line now, not after the cluster started, if it is not there
    if simulate is not None:  # supervised on simulated pairs, rendered by the workers
        if dataset is not None or even or odd or inputs or targets or tilt_series or mask or cfg.ndim != 3:
            raise TomocareError("--simulate trains a 3-D model on simulated pairs: leave out the data options, "
                                "--mask and --ndim 2")
        spec = pair_spec(noise=noise, snr=snr, voxel_size=sim_voxel_size, tilt_range=tilt_range, shape=shape,
                         target=simulate_target)
        _train_simulated(simulate, spec, out, cfg, scheduler, workers, resume=resume, overwrite=overwrite)
        return
    if any(v is not None for v in (noise, snr, sim_voxel_size, tilt_range, shape, simulate_target)):
        raise TomocareError("--noise, --snr, --voxel-size, --tilt-range, --shape and --simulate-target go with "
                            "--simulate")
    if tilt_series and (dataset is not None or even or odd):
        raise TomocareError("give --tilt-series, or a dataset directory or --even/--odd, not both")
    if supervised:
        pairs = _supervised_pairs(inputs or [], targets or [], images=cfg.ndim == 2)
    elif tilt_series:
        pairs = _adjacent_tilt_pairs(tilt_series)
    else:
        pairs = _pairs(dataset, even or [], odd or [], images=cfg.ndim == 2)
    if mask and cfg.ndim == 2:
        raise TomocareError("--mask works with 3-D training only")
    masks = _masks(mask, pairs) if mask else None
    voxel_size: float | None = check_voxel_sizes(pairs, allow_mixed=allow_mixed)
    if len({round(p.even.voxel_size[-1], 3) for p in pairs}) > 1:
        voxel_size = None  # a model for several voxel sizes records none (predict then warns of no mismatch)
    refuse_inputs(out, [v.path for p in pairs for v in (p.even, p.odd)] + list(mask or []))
    # supervised: the inputs' statistics normalise input and target alike (prediction sees an input)
    mean, std = normalisation(v for p in pairs for v in ((p.even,) if supervised else (p.even, p.odd))) or (None, None)
    with open_client(scheduler, workers) as client:
        run_training(
            [(p.even.array, p.odd.array) for p in pairs], out, config=cfg, client=client,
            mean=mean, std=std, voxel_size=voxel_size, masks=masks,
            names=[p.name for p in pairs], resume=resume, overwrite=overwrite,
        )
    typer.echo(f"model written to {out}")



def _train_simulated(n: int, spec, out: Path, cfg: TrainConfig, scheduler, workers, *, resume: bool,
                     overwrite: bool) -> None:
    """``train --simulate N``: supervised on ``n`` pairs of ``spec`` (a PairSpec) drawn from the training seed,
    rendered patch by patch on the workers; normalised by the inputs' statistics (one task per pair)."""
    from tomocare.io.atomic import refuse_inputs
    from tomocare.simulate.pairs import input_statistics, simulated_pairs
    from tomocare.train.loop import train as run_training

    pairs = simulated_pairs(spec, n, cfg.seed)
    refuse_inputs(out, [])
    names = [f"simulated pair {i} ({a.params.noise}, snr {a.params.snr:.3g}, voxel {a.params.voxel_size:.3g} Å, "
             f"tilt ±{a.params.tilt_range:.3g}°, seed {a.params.seed})" for i, (a, _) in enumerate(pairs)]
    low, high = spec.voxel_size
    with open_client(scheduler, workers) as client:
        mean, std = input_statistics(pairs)
        run_training(pairs, out, config=cfg, client=client, mean=mean, std=std,
                     voxel_size=low if low == high else None, names=names, resume=resume, overwrite=overwrite)
    typer.echo(f"model written to {out}")
