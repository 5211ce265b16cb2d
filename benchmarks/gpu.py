"""Prediction speed per GPU (or on the CPU), engine vs bare network, fp32 vs bf16, projected job time.

    python benchmarks/gpu.py [--shape 256 1024 1024] [--block 128] [--precision fp32 bf16]

* network: the training default (``TrainConfig``: depth 2, 16 channels), random weights.
* bare network: ``run_tiles`` on in-memory tiles of the engine's tile size (block + halo), an even
  and an odd tile per call as the engine does, host-to-device copies included; output voxels per
  second = block voxels / time per pair of tiles. On the CPU the reference of
  ``predict_speed.py``: the better of all cores in one process and one core times the cores.
* engine: ``plan_run`` + ``run_blocks`` (the network's operator) from zarr inputs to a zarr output (reading, padding,
  averaging, writing, pyramid) with one worker: one GPU (LocalCUDACluster) on a GPU machine, or
  on the CPU a LocalCluster of one single-threaded worker per core (the whole machine).
* bf16 (CUDA only): speeds, and the largest deviation of the engine's bf16 output from its fp32
  output divided by the fp32 output's standard deviation.
* projection: time for a 1024x4096x4096 even/odd pair = its voxels / engine voxels per second,
  per GPU and for all GPUs of the machine assuming linear scaling (workers share nothing).

Defaults: 256x1024x1024 on a GPU machine, 128x256x256 and fp32 only on the CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from _measure import save
from predict_speed import bare_speed as cpu_bare_speed
from predict_speed import engine_speed, make_inputs

from tomocare.cluster import gpu_count
from tomocare.model import save_model
from tomocare.nn.device import prepare
from tomocare.nn.unet import UNet
from tomocare.predict.tiles import run_tiles
from tomocare.train.config import TrainConfig

PAIR = (1024, 4096, 4096)


def default_network() -> UNet:
    torch.manual_seed(0)
    return UNet(TrainConfig().network())


def bare_speed(net: UNet, block: int, precision: str, repeats: int) -> float:
    """Output voxels/s of the network alone on one GPU, an even+odd pair of tiles of the engine's size.

    On the CPU, ``predict_speed.bare_speed``'s reference instead: the better of all cores in one
    process and one core times the number of cores.
    """
    if next(net.parameters()).device.type == "cpu":
        cores = os.cpu_count() or 1
        return max(cpu_bare_speed(net, block, cores, repeats), cpu_bare_speed(net, block, 1, repeats) * cores)
    tile = block + 2 * net.halo
    x = np.random.default_rng(0).normal(size=(2, tile, tile, tile)).astype(np.float32)
    run_tiles(net, x, mean=0.0, std=1.0, precision=precision)  # warm-up (and cuDNN/oneDNN setup)
    t = time.perf_counter()
    for _ in range(repeats):
        run_tiles(net, x, mean=0.0, std=1.0, precision=precision)
    return block**3 * repeats / (time.perf_counter() - t)


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
                        help="multiples of --block keep every tile equal to the bare network's")
    parser.add_argument("--block", type=int, default=128)
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"] if gpus else ["fp32"],
                        choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--repeats", type=int, default=20 if gpus else 1,
                        help="bare-network calls timed (after one warm-up)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tomocare-bench-gpu"))
    args = parser.parse_args()
    precisions = sorted(set(args.precision), key=lambda p: p != "fp32") if gpus else ["fp32"]  # fp32 first
    args.workdir.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if gpus else "cpu")
    cores = os.cpu_count() or 1
    workers = 1 if gpus else cores

    net = default_network()
    model = args.workdir / "model"
    shutil.rmtree(model, ignore_errors=True)
    save_model(model, net, mean=0.0, std=1.0, voxel_size=10.0, patch_size=64, trained_on=["benchmark"])
    inputs = make_inputs(args.workdir, tuple(args.shape))
    bare_net = prepare(net.to(device))
    name = torch.cuda.get_device_name(0) if gpus else f"CPU, {cores} cores"
    print(f"device: {name}; network {net.config.model_dump()} halo {net.halo}; volume {tuple(args.shape)}, "
          f"block {args.block}, tile {args.block + 2 * net.halo}; "
          f"engine: {'1 worker = 1 GPU' if gpus else f'{workers} workers x 1 thread'}")

    results: dict = {"device": name, "gpus": gpus, "network": net.config.model_dump(), "halo": net.halo,
                     "shape": list(args.shape), "block": args.block, "engine_workers": workers, "precision": {}}
    for precision in precisions:
        bare = bare_speed(bare_net, args.block, precision, args.repeats)
        if gpus:
            torch.cuda.empty_cache()  # leave the GPU to the engine's worker
        out = args.workdir / f"out_{precision}.zarr"
        cold, warm, _ = engine_speed(model, inputs, out, workers, args.block, precision)
        row = {"bare_voxels_per_s": round(bare), "engine_voxels_per_s": round(warm),
               "engine_cold_voxels_per_s": round(cold), "engine_to_bare_ratio": round(warm / bare, 3),
               "pair_1024x4096x4096_hours_per_device": round(hours(warm), 2)}
        if gpus:
            row["pair_1024x4096x4096_hours_all_gpus"] = round(hours(warm * gpus), 2)
        if precision != "fp32" and "fp32" in precisions:
            row["max_abs_deviation_over_std_vs_fp32"] = float(
                f"{relative_deviation(args.workdir / 'out_fp32.zarr', out):.3g}"
            )
        results["precision"][precision] = row
        per = "per GPU" if gpus else "whole CPU"
        line = (f"{precision}: engine {warm / 1e6:.3f} Mvoxel/s {per} warm ({cold / 1e6:.3f} cold); bare network "
                f"{bare / 1e6:.3f} -> engine/bare {warm / bare:.2f}; 1024x4096x4096 pair: {hours(warm):.1f} h {per}")
        if gpus > 1:
            line += f", {hours(warm * gpus):.2f} h on {gpus} GPUs"
        if "max_abs_deviation_over_std_vs_fp32" in row:
            line += f"; max |{precision} - fp32| / std = {row['max_abs_deviation_over_std_vs_fp32']:.3g}"
        print(line)
    save(results, "gpu" if gpus else "gpu_cpu_fallback")


if __name__ == "__main__":
    main()
