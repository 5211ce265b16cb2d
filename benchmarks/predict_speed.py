"""End-to-end prediction speed vs the bare network, worker scaling, and the halo overhead.

    python benchmarks/predict_speed.py [--shape 128 384 384] [--depth 2 --channels 8 --n-conv 2]

* bare network: the same network on in-memory tiles of the engine's tile size (block + halo),
  an even and an odd tile per forward pass as the engine does, in one process using all cores;
  output voxels per second = block voxels / time per pair of tiles.
* engine: ``plan_run`` + ``run_blocks`` (the network's operator) from zarr inputs to a zarr output on a LocalCluster
  of worker processes (1 thread each), including reading, padding, averaging, writing and the pyramid.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import dask.array as da
import numpy as np
import torch
from _measure import save

from tomocare.cluster import dask_client
from tomocare.config import PredictSettings
from tomocare.io.omezarr import write_ome_zarr
from tomocare.io.volume import open_volume
from tomocare.model import Model, save_model
from tomocare.nn.device import prepare
from tomocare.nn.unet import UNet
from tomocare.predict.engine import plan_run, run_blocks
from tomocare.predict.network import NetworkOperator
from tomocare.predict.tiles import run_tiles
from tomocare.train import TrainConfig


def make_inputs(workdir: Path, shape: tuple[int, ...]) -> list[Path]:
    paths = []
    for i, name in enumerate(("even", "odd")):
        path = workdir / f"{name}.zarr"
        if not path.exists() or open_volume(path).shape != tuple(shape):
            shutil.rmtree(path, ignore_errors=True)
            vol = da.random.RandomState(i).normal(size=shape, chunks=128).astype(np.float32)
            write_ome_zarr(vol, path, voxel_size=(10.0,) * 3, levels=1)
        paths.append(path)
    return paths


def bare_speed(net: UNet, block: int, threads: int, repeats: int = 3) -> float:
    torch.set_num_threads(threads)
    net = prepare(net)
    tile = block + 2 * net.halo
    x = np.random.default_rng(0).normal(size=(2, tile, tile, tile)).astype(np.float32)
    run_tiles(net, x, mean=0.0, std=1.0)
    t = time.perf_counter()
    for _ in range(repeats):
        run_tiles(net, x, mean=0.0, std=1.0)
    return block**3 * repeats / (time.perf_counter() - t)


def engine_speed(model: Path, inputs: list[Path], out: Path, workers: int, block: int,
                 precision: str = "fp32") -> tuple[float, float, dict]:
    """Voxels/s of a cold run (workers load torch and the model) and of a second, warm run."""
    settings = PredictSettings(chunks=block, precision=precision)
    setup = plan_run(NetworkOperator.from_settings(Model.read(model), settings), inputs, out, settings)
    speeds = []
    with dask_client(n_workers=workers, threads_per_worker=1) as client:
        client.wait_for_workers(workers)
        for _ in range(2):
            shutil.rmtree(out, ignore_errors=True)
            t = time.perf_counter()
            run_blocks(setup, client, overwrite=True)
            speeds.append(int(np.prod(setup.plan.shape)) / (time.perf_counter() - t))
    return speeds[0], speeds[1], setup.describe()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(128, 256, 512),
                        help="multiples of --block keep every tile equal to the bare network's")
    parser.add_argument("--block", type=int, default=128)
    default = TrainConfig()  # the network 'tomocare train' builds unless told otherwise
    parser.add_argument("--depth", type=int, default=default.depth)
    parser.add_argument("--channels", type=int, default=default.base_channels)
    parser.add_argument("--n-conv", type=int, default=default.n_conv)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tomocare-bench-speed"))
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = UNet(depth=args.depth, base_channels=args.channels, n_conv=args.n_conv, residual=False)
    model = args.workdir / "model"
    shutil.rmtree(model, ignore_errors=True)
    save_model(model, net, mean=0.0, std=1.0, voxel_size=10.0, patch_size=64, trained_on=["benchmark"])
    inputs = make_inputs(args.workdir, tuple(args.shape))
    cores = os.cpu_count() or 1

    # The bare network gets the best of: all cores in one process, or one core scaled by the
    # number of cores (perfect scaling) -- the stricter reference for the engine.
    bare_threads = bare_speed(net, args.block, cores)
    bare_one = bare_speed(net, args.block, 1)
    bare = max(bare_threads, bare_one * cores)
    cold2, eng2, plan = engine_speed(model, inputs, args.workdir / "out.zarr", cores, args.block)
    cold1, eng1, _ = engine_speed(model, inputs, args.workdir / "out.zarr", 1, args.block)
    results = {
        "network": net.config.model_dump(),
        "halo": net.halo,
        "plan": plan,
        "bare_network_output_voxels_per_s": round(bare),
        f"bare_network_{cores}_threads_voxels_per_s": round(bare_threads),
        "bare_network_1_thread_voxels_per_s": round(bare_one),
        f"engine_{cores}_workers_voxels_per_s": round(eng2),
        "engine_1_worker_voxels_per_s": round(eng1),
        f"engine_{cores}_workers_cold_voxels_per_s": round(cold2),
        "engine_1_worker_cold_voxels_per_s": round(cold1),
        "engine_to_bare_ratio": round(eng2 / bare, 3),
        "speedup_workers": round(eng2 / eng1, 3),
    }
    print(f"network {net.config.model_dump()} halo {net.halo}; volume {tuple(plan['shape'])}, block {args.block}, "
          f"tile {plan['tile']}")
    print(f"computed-to-output voxel ratio: {plan['computed_to_output_ratio']}")
    print(f"bare network, even+odd tiles: {bare_threads / 1e6:.3f} Mvoxel/s with {cores} threads, "
          f"{bare_one / 1e6:.3f} with 1 thread; reference = {bare / 1e6:.3f} Mvoxel/s")
    print(f"engine, {cores} workers: {eng2 / 1e6:.3f} Mvoxel/s warm ({cold2 / 1e6:.3f} cold, workers loading torch "
          f"and the model)  -> engine/bare = {eng2 / bare:.2f}")
    print(f"engine, 1 worker: {eng1 / 1e6:.3f} Mvoxel/s  -> speed-up of {cores} workers = {eng2 / eng1:.2f}x")
    save(results, "predict_speed")


if __name__ == "__main__":
    main()
