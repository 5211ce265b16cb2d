"""Denoising quality on simulated data: tomocare N2N against tuned classical filters.

    python benchmarks/quality.py [--shape 96 192 192] [--snr 0.1] [--time-limit 600]

One simulated tomogram (``tomocare.simulate``) is denoised four ways and compared with its clean
volume by PSNR after a least-squares scale-and-offset fit:

* raw: the average of the even and odd halves;
* Gaussian: the average filtered with the sigma that maximises PSNR against the clean volume
  (an oracle-tuned baseline: no real user can tune it this well);
* median: likewise, the best window size;
* tomocare: a model trained on the even/odd pair for at most ``--time-limit`` seconds of wall
  time on this machine, then even and odd predicted on the cluster and averaged.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from _measure import save
from tomocare.cluster import dask_client
from tomocare.evaluate.metrics import psnr
from tomocare.io.volume import open_volume
from tomocare.predict.engine import predict, setup_prediction
from tomocare.simulate import simulate_dataset
from tomocare.train.config import TrainConfig
from tomocare.train.loop import train


def best_filter(avg: np.ndarray, clean: np.ndarray, apply, params) -> tuple[float, object]:
    scores = [(psnr(apply(avg, p), clean), p) for p in params]
    return max(scores, key=lambda s: s[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(96, 192, 192))
    parser.add_argument("--snr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=600.0, help="training wall-clock budget, s")
    parser.add_argument("--config", type=str, default="{}", help="TrainConfig overrides as JSON")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tomocare-bench-quality"))
    args = parser.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    settings = {"time_limit": args.time_limit, "progress": False, **json.loads(args.config)}
    config = TrainConfig(**settings)
    workers = os.cpu_count() or 1

    with dask_client(n_workers=workers, threads_per_worker=1) as client:
        (entry,) = simulate_dataset(args.workdir / "data", n_tomograms=1, shape=tuple(args.shape), seed=args.seed, snr=args.snr)
        even, odd = open_volume(entry["even"]), open_volume(entry["odd"])
        t = time.perf_counter()
        train([(even.array, odd.array)], args.workdir / "model", config=config, client=client,
              voxel_size=even.voxel_size[-1], names=[entry["name"]])
        t_train = time.perf_counter() - t
        setup = setup_prediction(args.workdir / "model", [entry["even"], entry["odd"]], args.workdir / "den.zarr")
        t = time.perf_counter()
        predict(setup, client)
        t_predict = time.perf_counter() - t

    clean = np.asarray(open_volume(entry["clean"]).array[...], dtype=np.float32)
    avg = (np.asarray(even.array[...]) + np.asarray(odd.array[...])) / 2
    denoised = np.asarray(open_volume(args.workdir / "den.zarr").array[...])
    history = json.loads((args.workdir / "model" / "history.json").read_text())
    rows = {"raw average": (psnr(avg, clean), "")}
    g, sigma = best_filter(avg, clean, ndimage.gaussian_filter, [0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 4.0])
    rows["best Gaussian"] = (g, f"sigma={sigma}")
    m, size = best_filter(avg, clean, lambda v, s: ndimage.median_filter(v, size=s), [3, 5, 7, 9])
    rows["best median"] = (m, f"size={size}")
    steps = history[-1]["step"] if history else 0
    rows["tomocare N2N"] = (psnr(denoised, clean), f"{t_train:.0f} s training, {steps} steps")

    print(f"\nsimulated {tuple(args.shape)}, SNR {args.snr}, seed {args.seed}; PSNR vs clean (dB, after affine fit)")
    print(f"{'method':<16}{'PSNR':>8}  notes")
    for name, (value, note) in rows.items():
        print(f"{name:<16}{value:>8.2f}  {note}")
    gain = rows["tomocare N2N"][0] - g
    print(f"tomocare over best Gaussian: {gain:+.2f} dB; prediction {np.prod(args.shape) / t_predict / 1e6:.3f} Mvoxel/s "
          f"end to end on {workers} workers")
    save({"shape": args.shape, "snr": args.snr, "seed": args.seed, "train_config": config.model_dump(),
          "train_seconds": round(t_train, 1), "train_steps": steps, "predict_seconds": round(t_predict, 1),
          "psnr_db": {k: round(v[0], 3) for k, v in rows.items()}, "notes": {k: v[1] for k, v in rows.items()},
          "gain_over_best_gaussian_db": round(gain, 3)}, "quality")


if __name__ == "__main__":
    main()
