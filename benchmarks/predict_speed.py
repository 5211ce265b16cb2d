"""Prediction speed as users get it: the default network, default settings, end to end.

    python benchmarks/predict_speed.py [--shape 128 512 512] [--workers 1 2 4]

* engine: ``plan_run`` + ``run_blocks`` from zarr halves (even and odd both predicted) to a zarr
  output with its pyramid, planned as ``tomocare predict`` plans (the block from the workers'
  memory, ``task_memory``; precision ``auto``), on a local cluster of N single-threaded worker
  processes; the headline is N = the machine's cores. Each cluster first predicts a small volume
  (workers load torch and the model), then the timed run. Peak memory: this process and all its
  children (scheduler in-process, workers), sampled over the cluster's whole life.
* bare network: the same network on one in-memory tile of the planned tile size, in one process
  with all cores, fp32 and the precision ``auto`` chose: output voxels per second = 2 passes (even,
  odd) over the block per tile.
* quality: the PSNR difference between fp32 and the chosen precision on the models
  ``benchmarks/quality.py`` trained (``benchmarks/precision.py``), when its work directory exists.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import dask.array as da
import numpy as np
import torch
from _measure import PeakRSS, gib, save
from precision import precision_gap, report

from tomocare.cluster import dask_client, usable_cores
from tomocare.config import Precision, PredictSettings
from tomocare.io.omezarr import write_ome_zarr
from tomocare.io.volume import open_volume
from tomocare.model import Model, save_model
from tomocare.nn.device import prepare, resolve_precision
from tomocare.nn.unet import UNet
from tomocare.predict.engine import plan_run, run_blocks, task_memory
from tomocare.predict.network import NetworkOperator
from tomocare.predict.tiles import run_network
from tomocare.train import TrainConfig


def make_inputs(workdir: Path, shape: tuple[int, ...]) -> list[Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(("even", "odd")):
        path = workdir / f"{name}.zarr"
        if not path.exists() or open_volume(path).shape != tuple(shape):
            shutil.rmtree(path, ignore_errors=True)
            vol = da.random.RandomState(i).normal(size=shape, chunks=128).astype(np.float32)
            write_ome_zarr(vol, path, voxel_size=(10.0,) * 3, levels=1)
        paths.append(path)
    return paths


def bare_speed(net: UNet, tile: int, block: int, threads: int, precision: str, repeats: int = 2) -> float:
    """Output voxels/s of the network alone: an even and an odd pass per block."""
    torch.set_num_threads(threads)
    net = prepare(net)
    x = np.random.default_rng(0).normal(size=(2, tile, tile, tile)).astype(np.float32)
    run_network(net, x, mean=0.0, std=1.0, precision=precision)
    t = time.perf_counter()
    for _ in range(repeats):
        run_network(net, x, mean=0.0, std=1.0, precision=precision)
    return block**3 * repeats / (time.perf_counter() - t)


def engine_speed(model: Path, inputs: list[Path], warmup: list[Path], out: Path, workers: int,
                 precision: Precision = "auto") -> dict:
    """The default plan for ``workers`` single-threaded workers (GPUs where the local cluster has them);
    voxels/s of the timed run, peak memory."""
    settings = PredictSettings(precision=precision)
    operator = NetworkOperator.from_settings(Model.read(model), settings)
    with PeakRSS() as peak, dask_client(n_workers=workers, threads_per_worker=1) as client:
        client.wait_for_workers(workers)
        memory = task_memory(client)
        run_blocks(plan_run(operator, warmup, out.with_name("warmup.zarr"), settings, memory=memory), client,
                   overwrite=True)
        setup = plan_run(operator, inputs, out, settings, memory=memory)
        t = time.perf_counter()
        run_blocks(setup, client, overwrite=True)
        seconds = time.perf_counter() - t
    return {"workers": workers, "voxels_per_s": int(np.prod(setup.plan.shape)) / seconds, "seconds": seconds,
            "peak_bytes": peak.peak, "plan": setup.describe(), "budget_mib": memory.budget // 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 512, 512))
    parser.add_argument("--workers", type=int, nargs="+", default=None,
                        help="worker counts to run (default: the cores, then 1 and twice the cores)")
    default = TrainConfig()  # the network 'tomocare train' builds unless told otherwise
    parser.add_argument("--depth", type=int, default=default.depth)
    parser.add_argument("--channels", type=int, default=default.base_channels)
    parser.add_argument("--n-conv", type=int, default=default.n_conv)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tomocare-bench-speed"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    cores = usable_cores()
    counts = args.workers or [cores, 1, 2 * cores]
    torch.manual_seed(0)
    net = UNet(depth=args.depth, base_channels=args.channels, n_conv=args.n_conv, residual=False)
    model = args.workdir / "model"
    shutil.rmtree(model, ignore_errors=True)
    save_model(model, net, mean=0.0, std=1.0, voxel_size=10.0, patch_size=64, trained_on=["benchmark"])
    inputs = make_inputs(args.workdir / "volume", tuple(args.shape))
    warmup = make_inputs(args.workdir / "warmup", (64, 64, 64))

    runs = [engine_speed(model, inputs, warmup, args.workdir / "out.zarr", n) for n in counts]
    head = runs[0]
    plan = head["plan"]
    chosen = resolve_precision("auto", torch.device("cpu"))
    block, tile = plan["block"][-1], plan["tile"][-1]
    bare = {p: bare_speed(net, tile, block, cores, p) for p in dict.fromkeys(("fp32", chosen))}
    gap = precision_gap()
    one = next((r for r in runs if r["workers"] == 1), None)
    results = {
        "network": net.config.model_dump(), "halo": net.halo, "plan": plan, "precision": chosen,
        "engine": [{k: v for k, v in r.items() if k != "plan"} for r in runs],
        "bare_network_output_voxels_per_s": bare, "precision_gap": gap,
    }
    print(f"network {net.config.model_dump()} halo {net.halo}; volume {tuple(plan['shape'])}")
    print(f"default plan on {head['workers']} workers: block {block}, tile {tile}, computed-to-output ratio "
          f"{plan['computed_to_output_ratio']}, {chosen}, task memory budget {head['budget_mib']} MiB "
          f"(estimated use {plan['estimated_memory_per_task_mib']} MiB)")
    for r in runs:
        speedup = r["voxels_per_s"] / one["voxels_per_s"] if one else None
        scaling = (f", {speedup:.2f}x one worker, parallel efficiency {speedup / min(r['workers'], cores):.0%} "
                   f"of {min(r['workers'], cores)} cores" if speedup and r is not one else "")
        print(f"engine, {r['workers']} workers: {r['voxels_per_s'] / 1e6:.3f} Mvoxel/s (even and odd, output written; "
              f"{r['seconds']:.0f} s){scaling}; peak memory of all processes {gib(r['peak_bytes'])}")
    print("bare network, all cores, output voxels/s at this tile: "
          + ", ".join(f"{p} {v / 1e6:.3f} Mvoxel/s" for p, v in bare.items())
          + f"; engine/bare ({chosen}) = {head['voxels_per_s'] / bare[chosen]:.2f}")
    print(report(gap))
    save(results, "predict_speed")


if __name__ == "__main__":
    main()
