"""Prediction speed per GPU (or on the CPU), engine vs bare network, fp32 vs bf16, projected job time.

    python benchmarks/gpu.py [--shape 256 1024 1024] [--precision fp32 bf16]

* network: the training default (``TrainConfig``: depth 2, 16 channels), random weights.
* engine: ``predict_speed.engine_speed``: the default plan (blocks sized to the GPU's free memory by
  ``task_memory``) from zarr inputs to a zarr output (reading, padding, both halves, writing,
  pyramid) with one worker: one GPU (LocalCUDACluster) on a GPU machine, or on the CPU a
  LocalCluster of one single-threaded worker per core (the whole machine).
* bare network: ``predict_speed.bare_speed`` on the device at the planned tile: an even and an odd
  pass per block, host-to-device copies included.
* bf16: speeds, and the largest deviation of the engine's bf16 output from its fp32 output divided
  by the fp32 output's standard deviation.
* projection: time for a 1024x4096x4096 even/odd pair = its voxels / engine voxels per second,
  per GPU and for all GPUs of the machine assuming linear scaling (workers share nothing).

Defaults: 256x1024x1024 on a GPU machine, 128x256x256 on the CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import zarr
from _measure import save
from predict_speed import bare_speed, engine_speed, make_inputs

from tomocare.cluster import gpu_count
from tomocare.model import save_model
from tomocare.nn.device import prepare
from tomocare.nn.unet import UNet
from tomocare.train.config import TrainConfig

PAIR = (1024, 4096, 4096)


def default_network() -> UNet:
    torch.manual_seed(0)
    return UNet(TrainConfig().network())


def relative_deviation(reference: Path, other: Path, slab: int = 64) -> float:
    """max |other - reference| / std(reference) over two zarr outputs, read slab by slab."""
    a, b = (zarr.open_group(str(p), mode="r")["0"] for p in (reference, other))
    worst, n, s1, s2 = 0.0, 0, 0.0, 0.0
    for z in range(0, a.shape[0], slab):
        x, y = np.asarray(a[z:z + slab], np.float64), np.asarray(b[z:z + slab], np.float64)
        worst = max(worst, float(np.abs(y - x).max()))
        n, s1, s2 = n + x.size, s1 + x.sum(), s2 + (x * x).sum()
    return worst / np.sqrt(s2 / n - (s1 / n) ** 2)


def hours(voxels_per_s: float) -> float:
    return float(np.prod(PAIR)) / voxels_per_s / 3600


def main() -> None:
    gpus = gpu_count()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(256, 1024, 1024) if gpus else (128, 256, 256),
                        help="z y x of the even and odd volumes")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"],
                        choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=20 if gpus else 2,
                        help="bare-network calls timed (after one warm-up)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tomocare-bench-gpu"))
    args = parser.parse_args()
    precisions = sorted(set(args.precision), key=lambda p: p != "fp32")  # fp32 first
    args.workdir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if gpus else "cpu")
    cores = os.cpu_count() or 1
    workers = 1 if gpus else cores

    net = default_network()
    model = args.workdir / "model"
    shutil.rmtree(model, ignore_errors=True)
    save_model(model, net, mean=0.0, std=1.0, voxel_size=10.0, patch_size=64, trained_on=["benchmark"])
    inputs = make_inputs(args.workdir / "volume", tuple(args.shape))
    warmup = make_inputs(args.workdir / "warmup", (64, 64, 64))
    bare_net = prepare(net.to(device))
    name = torch.cuda.get_device_name(0) if gpus else f"CPU, {cores} cores"
    print(f"device: {name}; network {net.config.model_dump()} halo {net.halo}; volume {tuple(args.shape)}; "
          f"engine: {'1 worker = 1 GPU' if gpus else f'{workers} workers x 1 thread'}")

    results: dict = {"device": name, "gpus": gpus, "network": net.config.model_dump(), "halo": net.halo,
                     "shape": list(args.shape), "engine_workers": workers, "precision": {}}
    for precision in precisions:
        out = args.workdir / f"out_{precision}.zarr"
        run = engine_speed(model, inputs, warmup, out, workers, precision)
        block, tile = run["plan"]["block"][-1], run["plan"]["tile"][-1]
        bare = bare_speed(bare_net, tile, block, cores, precision, args.repeats)
        if gpus:
            torch.cuda.empty_cache()
        warm = run["voxels_per_s"]
        row = {"block": run["plan"]["block"], "tile": run["plan"]["tile"], "bare_voxels_per_s": round(bare),
               "engine_voxels_per_s": round(warm), "engine_to_bare_ratio": round(warm / bare, 3),
               "peak_bytes": run["peak_bytes"], "pair_1024x4096x4096_hours_per_device": round(hours(warm), 2)}
        if gpus:
            row["pair_1024x4096x4096_hours_all_gpus"] = round(hours(warm * gpus), 2)
        if precision != "fp32" and "fp32" in precisions:
            row["max_abs_deviation_over_std_vs_fp32"] = float(
                f"{relative_deviation(args.workdir / 'out_fp32.zarr', out):.3g}"
            )
        results["precision"][precision] = row
        per = "per GPU" if gpus else "whole CPU"
        line = (f"{precision}: block {block}, tile {tile}: engine {warm / 1e6:.3f} Mvoxel/s {per}; bare network "
                f"{bare / 1e6:.3f} -> engine/bare {warm / bare:.2f}; 1024x4096x4096 pair: {hours(warm):.1f} h {per}")
        if gpus > 1:
            line += f", {hours(warm * gpus):.2f} h on {gpus} GPUs"
        if "max_abs_deviation_over_std_vs_fp32" in row:
            line += f"; max |{precision} - fp32| / std = {row['max_abs_deviation_over_std_vs_fp32']:.3g}"
        print(line, flush=True)
    save(results, "gpu" if gpus else "gpu_cpu_fallback")


if __name__ == "__main__":
    main()
