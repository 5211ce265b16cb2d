"""Peak resident memory of prediction against volume size: it must stay flat.

    python benchmarks/predict_memory.py --gib 0.0625 0.25 1            # the default network
    python benchmarks/predict_memory.py --network small --gib 0.25 1 4 16

For each size, an even and an odd float32 MRC of that size are written (slab by slab), then
predicted with the default plan (``task_memory`` of the cluster: the block from the workers'
memory; precision auto) on a LocalCluster of single-threaded worker processes, one per core; the
peak is the summed resident memory of this process and all its children, sampled every 50 ms.
``--network default`` is the network ``tomocare train`` builds (about 0.5 Mvoxel/s here, so
volumes of a few GiB take hours); ``small`` measures the engine with a tiny network, fast.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import mrcfile
import numpy as np
import torch
from _measure import PeakRSS, gib, save

from tomocare.cluster import dask_client, usable_cores
from tomocare.config import PredictSettings
from tomocare.model import Model, save_model
from tomocare.nn.unet import UNet
from tomocare.predict.engine import plan_run, run_blocks, task_memory
from tomocare.predict.network import NetworkOperator
from tomocare.train import TrainConfig


def shape_for(size_gib: float, nz: int = 128) -> tuple[int, int, int]:
    """A (128, ny, nx) volume of about ``size_gib``: every block is a full 128³, so the volumes
    differ only in how many blocks they have (not in the size of the tasks)."""
    ny = max(128, int(np.sqrt(size_gib * 2**30 / (4 * nz) / 2) // 128 * 128))
    nx = max(128, int(size_gib * 2**30 / (4 * nz * ny)) // 128 * 128)
    return nz, ny, nx


def make_mrc(path: Path, size_gib: float, seed: int) -> tuple[int, int, int]:
    nz, ny, nx = shape_for(size_gib)
    if path.exists() and path.stat().st_size == 1024 + nz * ny * nx * 4:
        return nz, ny, nx
    rng = np.random.default_rng(seed)
    with mrcfile.new_mmap(path, (nz, ny, nx), mrc_mode=2, overwrite=True) as mrc:
        mrc.voxel_size = 10.0
        for z in range(nz):
            mrc.data[z] = rng.normal(size=(ny, nx)).astype(np.float32)
    return nz, ny, nx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, nargs="+", default=[0.0625, 0.25, 1])
    parser.add_argument("--network", choices=["default", "small"], default="default")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tomocare-bench-mem"))
    parser.add_argument("--keep-inputs", action="store_true")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    if args.network == "small":  # the measure is the engine, not the network
        net = UNet(depth=1, base_channels=2, n_conv=1, residual=True)
    else:
        net = UNet(TrainConfig().network())
    model = args.workdir / "model"
    shutil.rmtree(model, ignore_errors=True)
    save_model(model, net, mean=0.0, std=1.0, voxel_size=10.0, patch_size=32, trained_on=["benchmark"])
    rows = []
    workers = usable_cores()
    with dask_client(n_workers=workers, threads_per_worker=1) as client:
        client.wait_for_workers(workers)
        memory = task_memory(client)
        for size in args.gib:
            halves = [args.workdir / f"in_{size:g}_{half}.mrc" for half in ("even", "odd")]
            shape = [make_mrc(src, size, seed) for seed, src in enumerate(halves)][0]
            out = args.workdir / "out.zarr"
            shutil.rmtree(out, ignore_errors=True)
            settings = PredictSettings()
            operator = NetworkOperator.from_settings(Model.read(model), settings)
            setup = plan_run(operator, halves, out, settings, memory=memory)
            client.run(lambda: __import__("gc").collect())
            with PeakRSS() as rss:
                t = time.perf_counter()
                run_blocks(setup, client, overwrite=True)
                elapsed = time.perf_counter() - t
            rows.append({"gib": size, "shape": shape, "plan": setup.describe(), "blocks": setup.plan.n_blocks,
                         "seconds": round(elapsed, 1),
                         "voxels_per_s": round(np.prod(shape) / elapsed), "peak_rss_bytes": rss.peak})
            print(f"{size:>6g} GiB {shape} (each half): {setup.plan.n_blocks} blocks of {setup.plan.block} in "
                  f"{elapsed:.0f} s, peak RSS {gib(rss.peak)}", flush=True)
            if not args.keep_inputs:
                for src in halves:
                    src.unlink()
            shutil.rmtree(out, ignore_errors=True)
    ratio = rows[-1]["peak_rss_bytes"] / rows[0]["peak_rss_bytes"]
    print(f"peak RSS, largest / smallest volume: {ratio:.2f}")
    save({"network": net.config.model_dump(), "task_memory": memory.budget, "workers": workers, "rows": rows,
          "largest_to_smallest_peak_ratio": round(ratio, 3)}, "predict_memory")


if __name__ == "__main__":
    main()
