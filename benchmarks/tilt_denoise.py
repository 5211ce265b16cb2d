"""From a tilt series to a denoised tomogram with the command line only, and what the report says.

    python benchmarks/tilt_denoise.py [--shape 64 160 160] [--dose 10] [--time-limit 240] [--seed 3]

Runs, in a fresh working directory, exactly the commands a user runs:

    tomocare simulate-tilts data --shape Z Y X --dose D --seed S
    tomocare reconstruct data/ts_000.mrc rec/ts_000.mrc --angles data/ts_000.tlt \\
        --order data/ts_000_order.csv --split even-odd --thickness Z
    tomocare reconstruct data/ts_000_clean.mrc rec/ts_000_clean.mrc --angles data/ts_000.tlt --thickness Z
    tomocare denoise rec --out den --time-limit T --config train.toml

The second ``reconstruct`` is the ground truth of denoising: the same back-projection of the
noise-free tilt series (same missing wedge, same contrast), which ``denoise``'s report uses for
PSNR because it is named ``NAME_clean.mrc``. ``train.toml`` holds the demo's short-budget
training settings. Prints the report's FSC of the even vs odd halves, raw and denoised (0.5 and
0.143 crossings and a few shells), and the PSNR against the noise-free reconstruction.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _measure import machine, save

from tomocare.evaluate.fsc import FSC

TRAINING = ("[train]\npatch_size = 32\nbatch_size = 8\nn_patches = 2000\nn_val_patches = 64\n"
            "steps_per_epoch = 100\nlr = 1e-3\n")


def tomocare(*args: str, cwd: Path) -> float:
    """Run one tomocare command; return its wall time in seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "tomocare", *args], cwd=cwd, check=True)
    return time.perf_counter() - t0


def run(shape=(64, 160, 160), dose=10.0, seed=3, time_limit=240.0, workdir=Path("/tmp/tomocare-bench-tilt")) -> dict:
    shutil.rmtree(workdir, ignore_errors=True)
    (workdir / "rec").mkdir(parents=True)
    (workdir / "train.toml").write_text(TRAINING)
    z = str(shape[0])
    seconds = {
        "simulate": tomocare("simulate-tilts", "data", "--shape", *map(str, shape), "--dose", str(dose),
                             "--seed", str(seed), cwd=workdir),
        "reconstruct_halves": tomocare("reconstruct", "data/ts_000.mrc", "rec/ts_000.mrc",
                                       "--angles", "data/ts_000.tlt", "--order", "data/ts_000_order.csv",
                                       "--split", "even-odd", "--thickness", z, cwd=workdir),
        "reconstruct_clean": tomocare("reconstruct", "data/ts_000_clean.mrc", "rec/ts_000_clean.mrc",
                                      "--angles", "data/ts_000.tlt", "--thickness", z, cwd=workdir),
        "denoise": tomocare("denoise", "rec", "--out", "den", "--time-limit", str(time_limit),
                            "--config", "train.toml", cwd=workdir),
    }
    summary = json.loads((workdir / "den" / "report" / "summary.json").read_text())
    row = next(r for r in summary if r["name"] == "ts_000")
    with open(workdir / "den" / "report" / "ts_000_fsc.csv") as f:
        shells = list(csv.DictReader(f))
    history = json.loads((workdir / "den" / "model" / "history.json").read_text())
    return {"shape": list(shape), "dose_per_tilt": dose, "seed": seed, "time_limit_s": time_limit, "seconds": seconds,
            "training_steps": history[-1]["step"] if history else 0, "report": row,
            "fsc": [{k: float(v) for k, v in s.items()
                     if k in ("frequency_per_A", "resolution_A", "fsc_raw", "fsc_denoised_consistency")}
                    for s in shells],
            "machine": machine()}


def crossing(shells: list[dict], key: str, threshold: float) -> float | None:
    """Resolution (Å) where the report's curve ``key`` first falls below ``threshold``."""
    curve = FSC(np.array([s["frequency_per_A"] for s in shells]), np.array([s[key] for s in shells]),
                n_voxels=np.ones(len(shells)))
    return curve.crossing(threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 160, 160))
    parser.add_argument("--dose", type=float, default=10.0, help="electrons per pixel per tilt")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--time-limit", type=float, default=240.0, help="training wall-clock budget, s")
    args = parser.parse_args()
    r = run(tuple(args.shape), args.dose, args.seed, args.time_limit)
    fsc = r["fsc"]
    print(f"\n{'x'.join(map(str, r['shape']))} phantom, {r['dose_per_tilt']:g} e/px per tilt, "
          f"{r['training_steps']} training steps in {r['time_limit_s']:g} s; times (s): "
          + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()))
    print("FSC even vs odd | 0.5 crossing | 0.143 crossing")
    for key in ("fsc_raw", "fsc_denoised_consistency"):
        c5, c143 = crossing(fsc, key, 0.5), crossing(fsc, key, 0.143)
        print(f"{key[4:]:22s} | {c5 and f'{c5:.1f} Å'} | {c143 and f'{c143:.1f} Å'}")
    print("shell (Å) | raw | denoised (consistency of the denoised halves, not resolution)")
    for s in fsc[2:16:2]:
        print(f"{s['resolution_A']:7.1f} | {s['fsc_raw']:.3f} | {s['fsc_denoised_consistency']:.3f}")
    rep = r["report"]
    print(f"PSNR against the noise-free reconstruction: raw (even+odd)/2 {rep['psnr_raw_db']:.2f} dB -> "
          f"denoised {rep['psnr_denoised_db']:.2f} dB")
    save(r, f"tilt_denoise_dose{args.dose:g}_{args.time_limit:g}s")


if __name__ == "__main__":
    main()
