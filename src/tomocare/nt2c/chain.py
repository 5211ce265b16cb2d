"""The NT2C chain over a dataset of single tomograms (no halves), resumable stage by stage.

    coarse    every tomogram through the coarse denoiser (block engine)   OUT/work/coarse/NAME.zarr
    noise     background patches of each (block-wise on the workers)     OUT/work/noise/NAME_*.{npy,csv}
    synth     the WGAN-GP noise synthesiser on all patches               OUT/work/synthesiser/
    pairs     clean signal + synthesised noise, re-weighted              OUT/work/pairs/
    fine      the fine denoiser, from the coarse one, on the pairs       OUT/model/
    predict   every tomogram through the fine denoiser, in 2 orientations OUT/NAME.zarr (+ NAME_denoised.mrc)

``OUT/state.json`` records each finished stage (its outputs written atomically first); a rerun
skips them, resumes the synthesiser and the fine denoiser from their checkpoints and the block
runs from their finished blocks. Memory is bounded by the settings, not the data: the engine
predicts block by block, background is found row of patches by row, at most ``max_patches``
patches per tomogram are kept and the pairs have a fixed shape.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client

from tomocare import __version__
from tomocare.config import Settings
from tomocare.errors import TomocareError
from tomocare.io.atomic import refuse_inputs, write_atomic
from tomocare.io.discover import VOLUME_SUFFIXES
from tomocare.io.omezarr import is_zarr
from tomocare.io.volume import Volume, open_volume

log = logging.getLogger(__name__)
progress_log = logging.getLogger("tomocare.progress")
STATE = "state.json"


def discover_single(dataset: str | os.PathLike) -> list[Path]:
    """The tomograms (or 2-D images) of ``dataset``: one MRC or OME-Zarr, or those in a directory."""
    dataset = Path(dataset)
    if is_zarr(dataset) or dataset.is_file():
        return [dataset]
    if not dataset.is_dir():
        raise TomocareError(f"{dataset}: no such file or directory")
    found = sorted(p for p in dataset.iterdir()
                   if (p.is_file() and p.suffix.lower() in VOLUME_SUFFIXES) or is_zarr(p))
    if not found:
        raise TomocareError(f"{dataset}: no tomograms (MRC {', '.join(VOLUME_SUFFIXES)} or OME-Zarr) found")
    return found


def volume_name(path: Path) -> str:
    return path.name.removesuffix(".zarr") if is_zarr(path) else path.stem


class State:
    """The chain's record on disk (``state.json``), rewritten atomically after every change."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            raise TomocareError(f"{path}: damaged (not JSON); remove it to start the run again") from None
        self.data.setdefault("version", __version__)
        self.data.setdefault("done", {})

    def done(self, key: str) -> dict | None:
        return self.data["done"].get(key)

    def mark(self, key: str, **info) -> None:
        self.data["done"][key] = info or {"ok": True}
        write_atomic(self.path, json.dumps(self.data, indent=2) + "\n")

    def forget(self, *prefixes: str) -> None:
        self.data["done"] = {k: v for k, v in self.data["done"].items() if not k.startswith(prefixes)}
        write_atomic(self.path, json.dumps(self.data, indent=2) + "\n")


def default_patch(ndim: int) -> int:
    """The noise patches' edge: 16 voxels in 3-D, 32 pixels in 2-D (on the simulated micrographs 64 found 3
    background patches per stack, 32 about 600: enough to learn the noise from)."""
    return 16 if ndim == 3 else 32


# ---------------------------------------------------------------- stages, each usable alone


def enhance(volume_path: Path, model_dir: Path, out: Path, settings: Settings, client: Client) -> None:
    """``volume_path`` through the model in ``model_dir``, block by block, into the OME-Zarr ``out``."""
    from tomocare.model import Model
    from tomocare.predict.engine import plan_run, run_blocks, task_memory
    from tomocare.predict.network import NetworkOperator

    operator = NetworkOperator.from_settings(Model.read(model_dir), settings.predict)
    memory = task_memory(client) if settings.predict.block is None else None
    planned = plan_run(operator, [volume_path], out, settings.predict, memory=memory)
    run_blocks(planned, client, overwrite=True, progress=settings.train.progress)


def extract_noise(raw: Volume, enhanced: Volume, out_dir: Path, name: str, *, ndim: int, settings: Settings,
                  client: Client) -> dict:
    """Find the background of ``enhanced`` and write the raw patches there: ``NAME_patches.npy`` (n, *patch),
    ``NAME_background.csv`` (every patch of the grid: corner, smallest SSIM, background or not) and
    ``NAME_background.png`` (where they were found). Returns counts for the report."""
    from tomocare.nt2c.background import choose, find_background, read_patches

    if raw.shape != enhanced.shape:
        raise TomocareError(f"{enhanced.path}: shape {enhanced.shape} differs from {raw.path} {raw.shape}")
    s = settings.nt2c
    patch = s.patch_size or default_patch(ndim)
    found = find_background(client, enhanced.array, patch=patch, ndim=ndim, threshold=s.threshold)
    corners = choose(found.found, s.max_patches, s.seed)
    if len(corners) < 2:
        raise TomocareError(f"{raw.path}: {len(found.found)} background patch(es) of {patch} voxels found among "
                            f"{len(found.corners)} (SSIM >= {s.threshold}); lower [nt2c] threshold or patch_size")
    patches = np.stack(client.gather(read_patches(client, raw.array, corners, patch, ndim)))
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, patches)
    write_atomic(out_dir / f"{name}_patches.npy", buffer.getvalue())
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    axes = ["z", "y", "x"] if ndim == 3 else ["image", "y", "x"]
    writer.writerow([*axes, "min_ssim", "background"])
    for corner, value, flag in zip(found.corners, found.ssim, found.background):
        writer.writerow([*corner.tolist(), f"{value:.4f}", int(flag)])
    write_atomic(out_dir / f"{name}_background.csv", table.getvalue())
    _background_picture(enhanced, found.found, patch, ndim, out_dir / f"{name}_background.png", name)
    return {"patch": patch, "grid": len(found.corners), "found": int(found.background.sum()), "kept": len(corners),
            "noise_std": float(patches.std())}


def _background_picture(enhanced: Volume, corners: np.ndarray, patch: int, ndim: int, path: Path, name: str) -> None:
    """The central section of the enhanced data with the footprints of the background patches that cross it."""
    from tomocare.nt2c.diagnostics import background_figure

    lead = enhanced.shape[0] // 2
    section = np.asarray(enhanced.array[lead : lead + 1], np.float32)[0]
    if ndim == 3:
        crossing = corners[(corners[:, 0] <= lead) & (corners[:, 0] + patch > lead)]
    else:
        crossing = corners[corners[:, 0] == lead]
    background_figure(section, crossing[:, 1:], patch, path,
                      f"{name}: {len(corners)} background patches, {len(crossing)} crossing section {lead}")


def load_patches(noise_dir: Path, names: list[str]) -> np.ndarray:
    """The noise patches of ``names`` pooled (each file holds at most max_patches)."""
    stacks = []
    for name in names:
        path = noise_dir / f"{name}_patches.npy"
        try:
            stacks.append(np.load(path))
        except (OSError, ValueError) as err:
            raise TomocareError(f"{path}: unreadable noise patches ({type(err).__name__})") from None
    shapes = {s.shape[1:] for s in stacks}
    if len(shapes) != 1:
        raise TomocareError(f"{noise_dir}: noise patches of different shapes {sorted(shapes)}")
    return np.concatenate(stacks)


def synthesise_pairs(synthesiser_dir: Path, raws: list[Volume], out_dir: Path, *, ndim: int, settings: Settings,
                     client: Client, enhanced: list[Volume] | None = None) -> dict:
    """Clean signal S and synthesised noise V, re-weighted to the real data's spectrum, written as
    ``pair_NNN_input.mrc`` (α·S + β·V + γ) and ``pair_NNN_target.mrc`` (α·S + γ), and ``reweight.json``.
    S is simulated (``[nt2c] signal = "simulated"``, NT2C's way) or crops of the ``enhanced`` data
    (``"coarse"``: the coarse denoiser's output of the data itself)."""
    import dask.array as da

    from tomocare.io.mrc import write_mrc
    from tomocare.nt2c.reweight import fit_weights
    from tomocare.nt2c.synthesiser import Synthesiser

    s = settings.nt2c
    synthesiser = Synthesiser.read(synthesiser_dir)
    voxel_size = float(raws[0].voxel_size[-1]) or 10.0
    rng = np.random.default_rng(s.seed)
    if s.signal == "coarse":
        if not enhanced:
            raise TomocareError("signal 'coarse' takes its signal from the coarse-denoised data: none given")
        for raw, volume in zip(raws, enhanced):
            if raw.shape != volume.shape:
                raise TomocareError(f"{volume.path}: shape {volume.shape} differs from {raw.path} {raw.shape}")
        signals = [_random_crop(enhanced[i % len(enhanced)], s.pair_shape, rng) for i in range(s.pairs)]
    else:
        signals = [simulated_signal(s.pair_shape, voxel_size, s.tilt_range, seed=s.seed * 1000 + i, ndim=ndim)
                   for i in range(s.pairs)]
    noises = [synthesiser.sample(1, v.shape, seed=s.seed + i)[0] if ndim == 3 else
              synthesiser.sample(v.shape[0], v.shape[1:], seed=s.seed + i) for i, v in enumerate(signals)]
    noises = [n - n.mean(dtype=np.float64).astype(np.float32) for n in noises]  # noise about the local mean
    fit = 2 * (s.patch_size or default_patch(ndim))
    real = np.concatenate([client.gather(_random_patches(client, raw, fit, ndim, 32, rng)) for raw in raws])
    real_mean = float(np.mean([np.mean(p) for p in real]))
    signal = np.concatenate([_crops(v, fit, ndim, 16, rng) for v in signals])
    noise = np.concatenate([_crops(v, fit, ndim, 16, rng) for v in noises])
    weights = fit_weights(real, signal, noise, real_mean=real_mean, signal_mean=float(np.mean(signals)))
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, (sig, noi) in enumerate(zip(signals, noises)):
        target = (weights.alpha * sig + weights.gamma).astype(np.float32)
        noisy = (target + weights.beta * noi).astype(np.float32)
        for kind, array in (("input", noisy), ("target", target)):
            write_mrc(da.from_array(array), out_dir / f"pair_{i:03d}_{kind}.mrc", voxel_size=voxel_size,
                      overwrite=True)
    info = {**weights.to_dict(), "pairs": s.pairs, "shape": list(s.pair_shape), "voxel_size": voxel_size,
            "fit_patch": fit}
    write_atomic(out_dir / "reweight.json", json.dumps(info, indent=2) + "\n")
    progress_log.info("re-weighting: alpha %.4g, beta %.4g, gamma %.4g (spectral misfit %.1f%%)", weights.alpha,
                      weights.beta, weights.gamma, 100 * weights.residual)
    return info


def _random_crop(volume: Volume, shape, rng: np.random.Generator) -> np.ndarray:
    """A crop of ``shape`` (clipped to the volume's) at a random place: bounded memory whatever the volume."""
    size = [min(a, b) for a, b in zip(shape, volume.shape)]
    corner = [int(rng.integers(0, n - m + 1)) for n, m in zip(volume.shape, size)]
    return np.asarray(volume.array[tuple(slice(c, c + m) for c, m in zip(corner, size))], np.float32)


def simulated_signal(shape, voxel_size: float, tilt_range: float, *, seed: int, ndim: int) -> np.ndarray:
    """Clean simulated signal of ``shape``: a tomogram with its missing wedge (3-D), or 2-D: projections
    (line integrals) of one, as a stack of ``shape[0]`` images."""
    from tomocare.simulate.tomogram import simulate_tomogram

    if ndim == 3:
        return np.asarray(simulate_tomogram(tuple(shape), seed=seed, tilt_range=tilt_range, voxel_size=voxel_size)
                          .clean.compute(), np.float32)
    from tomocare.simulate.tiltseries import simulate_tilt_series

    n, ny, nx = shape
    series = simulate_tilt_series((max(32, nx // 4), ny, nx), angles=np.linspace(-30, 30, max(n, 2))[:n]
                                  if n > 1 else np.array([0.0, 1.0]), voxel_size=voxel_size, seed=seed)
    return np.asarray(series.projections.compute(), np.float32)[:n]


def _random_patches(client: Client, volume: Volume, size: int, ndim: int, n: int, rng: np.random.Generator):
    """Futures of ``n`` patches of ``volume`` at random places, read by the workers."""
    from tomocare.nt2c.background import random_corners, read_patches

    try:
        corners = random_corners(volume.shape, size, ndim, n, rng)
    except TomocareError as err:
        raise TomocareError(f"{volume.path}: {err} (the re-weighting patches)") from None
    return read_patches(client, volume.array, corners, size, ndim)


def _crops(volume: np.ndarray, size: int, ndim: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` patches of an in-memory volume at random places."""
    from tomocare.nt2c.background import random_corners, read_patch

    corners = random_corners(volume.shape, size, ndim, n, rng)
    return np.stack([read_patch(volume, tuple(int(v) for v in c), size, ndim) for c in corners])


# ---------------------------------------------------------------- the chain


def denoise_single(dataset: str | os.PathLike, out_dir: str | os.PathLike, *, settings: Settings,
                   client: Client) -> list[dict]:
    """Run the chain on ``dataset`` into ``out_dir`` (rerun to resume); one summary row per tomogram."""
    from tomocare.model import Model
    from tomocare.pretrained import resolve

    dataset, out_dir = Path(dataset), Path(out_dir)
    paths = discover_single(dataset)
    refuse_inputs(out_dir, paths)
    coarse = resolve(settings.nt2c.coarse)
    coarse_model = Model.read(coarse)
    ndim = coarse_model.ndim
    raws = [open_volume(p, images=ndim == 2) for p in paths]
    names = [volume_name(p) for p in paths]
    if len(set(names)) != len(names):
        raise TomocareError(f"{dataset}: several tomograms are named alike ({', '.join(sorted(names))})")
    voxel = {round(float(v.voxel_size[-1]), 3) for v in raws}
    if len(voxel) > 1:
        raise TomocareError(f"{dataset}: tomograms of different voxel sizes ({', '.join(map(str, sorted(voxel)))} Å): "
                            "run them as separate datasets")
    work = out_dir / "work"
    (out_dir / "report").mkdir(parents=True, exist_ok=True)
    state = State(out_dir / STATE)
    run_config = {"version": __version__, "dataset": str(dataset), **settings.model_dump(mode="json")}
    if state.data.get("settings") not in (None, _what(run_config)):
        raise TomocareError(f"{out_dir}: an earlier run used other settings; use another --out, or the same settings "
                            "to resume")
    state.data["settings"] = _what(run_config)
    write_atomic(out_dir / "config.json", json.dumps(run_config, indent=2) + "\n")

    counts = {}
    for raw, name in zip(raws, names):
        enhanced_path = work / "coarse" / f"{name}.zarr"
        if not state.done(f"coarse/{name}"):
            progress_log.info("%s: coarse denoising with %s", name, coarse)
            enhance(raw.path, coarse, enhanced_path, settings, client)
            state.mark(f"coarse/{name}")
        if not state.done(f"noise/{name}"):
            progress_log.info("%s: looking for background patches", name)
            info = extract_noise(raw, open_volume(enhanced_path, images=ndim == 2), work / "noise", name, ndim=ndim,
                                 settings=settings, client=client)
            progress_log.info("%s: %d background patches of %d (%d kept)", name, info["found"], info["grid"],
                              info["kept"])
            state.mark(f"noise/{name}", **info)
        counts[name] = state.done(f"noise/{name}")

    synth_dir = work / "synthesiser"
    if not state.done("synthesiser"):
        from tomocare.nt2c.synthesiser import SynthesiserConfig, train_synthesiser

        patches = load_patches(work / "noise", names)
        s = settings.nt2c
        progress_log.info("training the noise synthesiser on %d patches for %.0f s", len(patches), s.synthesiser_time)
        train_synthesiser(patches, synth_dir, SynthesiserConfig(ndim=ndim, seed=s.seed, time_limit=s.synthesiser_time),
                          resume=True)
        state.mark("synthesiser")
    if not state.done("pairs"):
        enhanced = [open_volume(work / "coarse" / f"{name}.zarr") for name in names]
        info = synthesise_pairs(synth_dir, raws, work / "pairs", ndim=ndim, settings=settings, client=client,
                                enhanced=enhanced)
        state.mark("pairs", **info)
    model_dir = out_dir / "model"
    if not state.done("fine"):
        _train_fine(work / "pairs", model_dir, coarse, settings, client, ndim=ndim)
        state.mark("fine")

    rows = []
    final = final_settings(settings)
    for raw, name in zip(raws, names):
        output = out_dir / f"{name}.zarr"
        if not state.done(f"predict/{name}"):
            progress_log.info("%s: denoising with the fine model (%d orientations)", name,
                              final.predict.orientations)
            enhance(raw.path, model_dir, output, final, client)
            if settings.denoise.mrc:
                from tomocare.io.convert import export_mrc

                export_mrc(output, out_dir / f"{name}_denoised.mrc", overwrite=True)
            state.mark(f"predict/{name}")
        rows.append({"name": name, "status": "done", "output": str(output), **(counts[name] or {})})
    _report(out_dir, rows, state)
    return rows


#: The fine denoiser's loss unless ``[train] loss`` is set: its targets are the coarse model's output, whose
#: errors a mean absolute error weighs less; on the tuning tomogram 38.00 dB against 37.73 with mse.
FINE_LOSS = "l1"

#: Orientations of the final prediction unless ``[predict] orientations`` is set: one tomogram seen in two
#: costs the network time ``denoise`` spends on two halves; on the tuning tomogram (seed 40 of
#: benchmarks/nt2c.py) the fine model gained 0.07 dB over one orientation (four: 0.11 dB at twice that).
FINAL_ORIENTATIONS = 2


def final_settings(settings: Settings) -> Settings:
    """``settings`` for the fine model's prediction: ``FINAL_ORIENTATIONS`` unless orientations were given."""
    if "orientations" in settings.predict.model_fields_set:
        return settings
    predict = settings.predict.model_copy(update={"orientations": FINAL_ORIENTATIONS})
    return settings.model_copy(update={"predict": predict})


def _what(run_config: dict) -> dict:
    """The settings that decide the results (not how the machine runs them), as JSON: what a rerun must share."""
    machine = {"device", "threads", "prefetch", "progress"}
    return {**run_config, "version": None, "train": {k: v for k, v in run_config["train"].items() if k not in machine}}


def _train_fine(pairs_dir: Path, model_dir: Path, coarse: Path, settings: Settings, client: Client, *,
                ndim: int) -> None:
    """The fine denoiser: supervised on the synthesised pairs (``FINE_LOSS``), starting from the coarse model."""
    from tomocare.train.loop import train

    s = settings.nt2c
    files = [(pairs_dir / f"pair_{i:03d}_input.mrc", pairs_dir / f"pair_{i:03d}_target.mrc") for i in range(s.pairs)]
    images = ndim == 2
    volumes = [(open_volume(a, images=images), open_volume(b, images=images)) for a, b in files]
    update: dict[str, Any] = {"mode": "supervised", "init": str(coarse)}
    if settings.train.time_limit is None:
        update["time_limit"] = s.fine_time
    if "loss" not in settings.train.model_fields_set:
        update["loss"] = FINE_LOSS
    config = type(settings.train).model_validate({**settings.train.model_dump(exclude_unset=True), **update})
    resume = (model_dir / "checkpoint.pt").exists()
    progress_log.info("training the fine denoiser on %d synthesised pairs, from %s", len(files), coarse)
    train([(a.array, b.array) for a, b in volumes], model_dir, config=config, client=client,
          voxel_size=float(volumes[0][0].voxel_size[-1]), names=[a.path.name for a, _ in volumes], resume=resume,
          overwrite=not resume)
    (model_dir / "checkpoint.pt").unlink(missing_ok=True)


def _report(out_dir: Path, rows: list[dict], state: State) -> None:
    """``report/summary.md``: the patches found, the re-weighting, the synthesiser, the outputs."""
    pairs = state.done("pairs") or {}
    lines = ["# tomocare denoise-single (noise-model transfer)", "",
             "| tomogram | patches on the grid | background found | kept | noise std | output |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r.get('grid', '')} | {r.get('found', '')} | {r.get('kept', '')} | "
                     f"{r.get('noise_std', float('nan')):.4g} | {r['output']} |")
    nan = float("nan")
    lines += ["", f"Re-weighting: alpha {pairs.get('alpha', nan):.4g}, beta {pairs.get('beta', nan):.4g}, "
              f"gamma {pairs.get('gamma', nan):.4g}, spectral misfit {100 * pairs.get('residual', 0):.1f} %.",
              "", "Pictures of where the background was found: work/noise/NAME_background.png."]
    write_atomic(out_dir / "report" / "summary.md", "\n".join(lines) + "\n")
