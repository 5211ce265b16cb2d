"""The supervised 3-D denoising study's table on this machine: every variant, the same data and budget.

    python benchmarks/supervised.py [--budget 150] [--target phantom] [--variants NAME ...]

Data (``tomocare.simulate``, 6 Å voxels, tilt range ±60°, WBP-coloured noise at SNR 0.1 per half):
four training tomograms (seeds 200-203, 64×128×128) from which the particle kind "barrel" is left
out, and held-back tomograms (seeds 300, 301) for four tests:

* **held-back**: the training distribution (new seeds);
* **salt-and-pepper**: the same clean volumes, degraded instead by salt-and-pepper noise on 10 % of
  the voxels at the same SNR (``simulate.degrade``): a noise never seen in training;
* **unseen particle**: tomograms whose only particles are barrels, the kind left out of training;
* **10 Å, crowded**: 10 Å voxels instead of 6 (objects 40 % smaller in voxels, 4.6× as many
  particles per voxel volume).

Every supervised variant trains on the pairs (even half -> target) and (odd half -> target) of the
training tomograms with ``tomocare train --input ... --target ... --time-limit BUDGET`` and a
settings file holding only what makes the variant (``VARIANTS``: the plan, learning rate and all
else are the defaults); Noise2Noise trains on the same halves, ``--even/--odd``, same budget. The
target is ``--target``: ``phantom`` (before the missing wedge: noise and wedge restoration, as in the
study) or ``clean`` (after it: denoising). Predictions run through the block engine on the even
half of each test tomogram.

Scores: for each 32³ sub-volume of a test tomogram (32 tile each; particle-centred crops were too
few: 4-5 particles in a tomogram this small), SSIM, PSNR, MSE and NRMSE of the prediction against
the target after a least-squares scale-and-offset fit (``tomocare.evaluate.metrics``; PSNR's peak
and SSIM's range: the crop's target max - min; NRMSE by the target's std); the table gives their
5th / 50th / 95th percentiles over the sub-volumes of both tomograms. Reference rows:
the input, and a Gaussian filter whose sigma is tuned against the target on the first tomogram of
each test (an oracle).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _measure import save

from tomocare.baselines.filters import make_filter
from tomocare.cluster import dask_client
from tomocare.evaluate.metrics import affine_fit, mse, nrmse, psnr
from tomocare.evaluate.ssim import ssim
from tomocare.io.mrc import write_mrc
from tomocare.io.volume import open_volume
from tomocare.model import Model
from tomocare.predict.engine import plan_run, run_blocks
from tomocare.predict.network import NetworkOperator
from tomocare.simulate import simulate_tomogram
from tomocare.simulate.dataset import write_particles
from tomocare.simulate.degrade import degradation, degrade_lazy, volume_mean
from tomocare.simulate.objects import KIND_NAMES, make_phantom

SHAPE = (64, 128, 128)
SNR, TILT, VOXEL = 0.1, 60.0, 6.0
HELD_OUT_KIND = "barrel"
TRAIN_KINDS = tuple(k for k in KIND_NAMES if k != HELD_OUT_KIND)
TRAIN_SEEDS, TEST_SEEDS = (200, 201, 202, 203), (300, 301)
TESTS = {  # name: (voxel size, particle kinds, noise)
    "held-back": (VOXEL, TRAIN_KINDS, "wbp"),
    "salt-and-pepper": (VOXEL, TRAIN_KINDS, "salt-and-pepper"),
    "unseen particle": (VOXEL, (HELD_OUT_KIND,), "wbp"),
    "10 Å, crowded": (10.0, TRAIN_KINDS, "wbp"),
}
VARIANTS = {  # name: [train] settings that make it (all else default)
    "auto-encoder": {"architecture": "autoencoder"},
    "U-Net, MSE": {},
    "U-Net, L1": {"loss": "l1"},
    "U-Net, SSIM": {"loss": "ssim"},
    "U-Net + cGAN": {"adversarial": "gan"},
    "U-Net + WGAN-GP": {"adversarial": "wgan-gp"},
    "Noise2Noise": None,  # even/odd halves, no target
}
CROP = 32
SIGMAS = (0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
METRICS = ("ssim", "psnr_db", "mse", "nrmse")


def write_tomogram(out: Path, seed: int, voxel: float, kinds, noise: str, target: str) -> dict:
    """Even and odd halves (``noise``), the target and the particles of one simulated tomogram."""
    files = {k: out / f"{k}.mrc" for k in ("even", "odd", "target")} | {"particles": out / "particles.csv"}
    if all(p.exists() for p in files.values()):
        return files
    out.mkdir(parents=True, exist_ok=True)
    sim = simulate_tomogram(SHAPE, seed=seed, snr=SNR, tilt_range=TILT, voxel_size=voxel, chunks=64, kinds=kinds)
    halves = [sim.even, sim.odd]
    if noise != "wbp":
        phantom = make_phantom(SHAPE, voxel, seed, kinds)
        halves = [degrade_lazy(sim.clean, degradation(noise, seed=seed + 7919 * half, snr=SNR,
                                                      signal_var=sim.noise_std**2 * SNR, mean=volume_mean(phantom),
                                                      tilt_range=TILT)) for half in (0, 1)]
    wanted = sim.phantom if target == "phantom" else sim.clean
    for name, volume in (("even", halves[0]), ("odd", halves[1]), ("target", wanted)):
        write_mrc(volume, files[name], voxel_size=voxel, overwrite=True)
    write_particles(sim.particles, files["particles"], overwrite=True)
    return files


def load(path) -> np.ndarray:
    return np.asarray(open_volume(path).array[...], dtype=np.float32)


def crops() -> list[tuple[slice, ...]]:
    """The 32³ sub-volumes tiling the volume (2 × 4 × 4 of a 64×128×128 tomogram). Particle-centred crops
    were too few: a tomogram this small holds only 4-5 particles at the simulator's density."""
    return [(slice(z, z + CROP), slice(y, y + CROP), slice(x, x + CROP)) for z in range(0, SHAPE[0] - CROP + 1, CROP)
            for y in range(0, SHAPE[1] - CROP + 1, CROP) for x in range(0, SHAPE[2] - CROP + 1, CROP)]


def scores(volumes, targets, boxes) -> dict:
    """5th, 50th and 95th percentiles over the particles of all tomograms of a test (``boxes`` per
    tomogram) of SSIM, PSNR, MSE and NRMSE against the target, after a fit per crop."""
    values: dict[str, list[float]] = {k: [] for k in METRICS}
    for volume, target, crops_of in zip(volumes, targets, boxes):
        for box in crops_of:
            x, t = volume[box], target[box]
            fitted = affine_fit(x, t)
            values["ssim"].append(ssim(fitted, t, data_range=float(t.max() - t.min())))
            values["psnr_db"].append(psnr(x, t))
            values["mse"].append(mse(fitted, t))
            values["nrmse"].append(nrmse(x, t))
    return {k: [round(float(np.percentile(v, q)), 5) for q in (5, 50, 95)] for k, v in values.items()} | {
        "particles": len(values["ssim"])}


def train(name: str, settings: dict | None, data: list[dict], work: Path, budget: float) -> tuple[Path, dict]:
    """``tomocare train`` for one variant, as a user runs it; the model and its training summary."""
    model = work / "models" / name.replace(" ", "_").replace(",", "").replace("+", "plus")
    if not (model / "model.json").exists():
        if settings is None:
            files = [a for d in data for a in ("--even", str(d["even"]), "--odd", str(d["odd"]))]
        else:
            files = [a for d in data for half in ("even", "odd") for a in ("--input", str(d[half]),
                                                                            "--target", str(d["target"]))]
        config = work / "models" / f"{model.name}.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({"train": settings or {}}))
        command = [sys.executable, "-m", "tomocare", "train", *files, "--out", str(model), "--time-limit",
                   f"{budget:g}", "--config", str(config), "--overwrite"]
        t = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{name}: tomocare train failed ({done.returncode}):\n{done.stderr[-3000:]}")
        print(f"  {name}: trained in {time.perf_counter() - t:.0f} s", flush=True)
    return model, json.loads((model / "model.json").read_text())["extra"]["training"]


def predict(model: Path, volume: Path, out: Path, client) -> np.ndarray:
    run_blocks(plan_run(NetworkOperator(Model.read(model)), [volume], out), client, overwrite=True)
    return load(out)


def gaussian_oracle(noisy: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray]:
    best = max(SIGMAS, key=lambda s: psnr(make_filter("gaussian", sigma=s).reference(noisy), target))
    return best, make_filter("gaussian", sigma=best).reference(noisy)


def table(results: dict) -> str:
    lines = []
    for test, rows in results["tests"].items():
        lines += [f"\n### {test} ({next(iter(rows.values()))['particles']} sub-volumes)", "",
                  "| method | SSIM p5 / p50 / p95 | PSNR (dB) | MSE | NRMSE |", "|---|---|---|---|---|"]
        for name, row in rows.items():
            cells = [" / ".join(f"{v:.3f}" if k != "psnr_db" else f"{v:.2f}" for v in row[k]) for k in METRICS]
            if "mse" in row:
                cells[2] = " / ".join(f"{v:.2e}" for v in row["mse"])
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=150.0, help="training seconds per variant")
    parser.add_argument("--target", choices=("phantom", "clean"), default="phantom")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tomocare-bench-supervised"))
    args = parser.parse_args()
    work = args.workdir / args.target
    t0 = time.perf_counter()
    workers = os.cpu_count() or 1
    with dask_client(n_workers=workers, threads_per_worker=1):
        training = [write_tomogram(work / f"train{s}", s, VOXEL, TRAIN_KINDS, "wbp", args.target) for s in TRAIN_SEEDS]
        tests = {name: [write_tomogram(work / f"test_{name.split()[0].strip(',')}_{s}", s, voxel, kinds, noise,
                                       args.target) for s in TEST_SEEDS]
                 for name, (voxel, kinds, noise) in TESTS.items()}
    print(f"data ready ({time.perf_counter() - t0:.0f} s); training {len(args.variants)} variants for "
          f"{args.budget:g} s each", flush=True)
    models = {name: train(name, VARIANTS[name], training, work, args.budget) for name in args.variants}
    results: dict = {"budget_s": args.budget, "target": args.target, "snr": SNR, "voxel_size": VOXEL,
                     "variants": {n: VARIANTS[n] for n in args.variants},
                     "training": {n: {k: t.get(k) for k in ("step", "seconds", "stop_reason", "best_val_loss")}
                                  for n, (_, t) in models.items()}, "tests": {}}
    with dask_client(n_workers=workers, threads_per_worker=1) as client:
        for test, files in tests.items():
            noisy = [load(f["even"]) for f in files]
            target = [load(f["target"]) for f in files]
            boxes = [crops() for _ in files]

            sigma, _ = gaussian_oracle(noisy[0], target[0])
            rows = {"input (even half)": scores(noisy, target, boxes),
                    f"Gaussian, oracle sigma {sigma:g}": scores(
                        [make_filter("gaussian", sigma=sigma).reference(v) for v in noisy], target, boxes)}
            for name, (model, _) in models.items():
                predicted = [predict(model, f["even"], work / "pred.zarr", client) for f in files]
                rows[name] = scores(predicted, target, boxes)
            results["tests"][test] = rows
            print(table({"tests": {test: rows}}), flush=True)
            save(results, f"supervised_{args.target}")
    print(json.dumps(results["training"], indent=1))
    print(f"total {time.perf_counter() - t0:.0f} s")



if __name__ == "__main__":
    main()
