"""Quality versus speed of U-Net variants, each trained for the same wall-clock time.

A simulated tomogram (``tomocare.simulate``) gives even/odd halves and the clean truth. Every
architecture is trained with :func:`tomocare.train.train` on a local dask cluster for
``--seconds``, then predicts both halves whole (reflect-padded by its halo); the average is
compared with the clean volume after a least-squares scale and offset fit (PSNR over the clean
volume's range). Speed is output voxels per second on CPU for ``--tile``³ tiles read with the
architecture's halo, as the block-wise prediction runs them (so it includes the halo overhead).

    python benchmarks/unet_tradeoff.py --seconds 120
    python benchmarks/unet_tradeoff.py --seconds 30 --arch 2,8,1 --arch 3,16,0   # depth,channels,residual

Prints a table and writes JSON (default ``benchmarks/results/unet_tradeoff.json``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import zarr
from distributed import Client, LocalCluster

from tomocare.model import Model
from tomocare.nn.device import default_threads
from tomocare.simulate import simulate_tomogram
from tomocare.train import TrainConfig, train

DEFAULT_ARCHS = [(d, c, r) for d, c, r in itertools.product((2, 3), (8, 16, 32), (True, False))]


def psnr_after_fit(estimate: np.ndarray, clean: np.ndarray) -> float:
    """PSNR (dB) of ``a·estimate + b`` against ``clean``, with a, b fitted by least squares."""
    x, y = estimate.ravel().astype(np.float64), clean.ravel().astype(np.float64)
    design = np.stack([x, np.ones_like(x)], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, y, rcond=None)
    mse = np.mean((a * x + b - y) ** 2)
    return float(10 * np.log10((y.max() - y.min()) ** 2 / mse))


@torch.inference_mode()
def inference_speed(net: torch.nn.Module, tile: int, halo: int, repeats: int = 3) -> float:
    """Output voxels per second for cubic tiles of edge ``tile`` read with ``halo`` (best of ``repeats``)."""
    x = torch.randn(1, 1, *(tile + 2 * halo,) * 3)
    net(x)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        net(x)
        best = min(best, time.perf_counter() - t0)
    return tile**3 / best


def _arch(text: str) -> tuple[int, int, bool]:
    depth, channels, residual = (int(v) for v in text.split(","))
    return depth, channels, bool(residual)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128), metavar=("Z", "Y", "X"))
    parser.add_argument("--snr", type=float, default=0.1, help="var(clean) / var(noise of one half)")
    parser.add_argument("--seconds", type=float, default=120.0, help="training time per architecture")
    parser.add_argument("--arch", type=_arch, action="append", help="depth,channels,residual (repeatable)")
    parser.add_argument("--patch-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tile", type=int, default=64, help="output tile edge for the speed measurement")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores but one)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "unet_tradeoff.json")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    sim = simulate_tomogram(tuple(args.shape), seed=0, snr=args.snr)
    clean, even, odd = (np.asarray(a.compute(), dtype=np.float32) for a in (sim.clean, sim.even, sim.odd))
    rows = [{"arch": "raw (even+odd)/2", "psnr_db": psnr_after_fit((even + odd) / 2, clean)}]
    print(f"volume {args.shape}, snr {args.snr}: raw average PSNR {rows[0]['psnr_db']:.2f} dB")

    with tempfile.TemporaryDirectory() as tmp, LocalCluster(
        n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0"
    ) as cluster, Client(cluster) as client:
        pair = []
        for name, data in (("even", even), ("odd", odd)):
            store = zarr.create_array(store=f"{tmp}/{name}.zarr", shape=data.shape, chunks=(32, 64, 64), dtype="f4")
            store[:] = data
            pair.append(zarr.open_array(f"{tmp}/{name}.zarr", mode="r"))
        mean, std = float(np.mean([even.mean(), odd.mean()])), float(np.sqrt((even.var() + odd.var()) / 2))
        for depth, channels, residual in args.arch or DEFAULT_ARCHS:
            config = TrainConfig(
                patch_size=args.patch_size, batch_size=args.batch_size, n_patches=600, n_val_patches=16, depth=depth,
                base_channels=channels, residual=residual, max_steps=10**6, steps_per_epoch=50,
                time_limit=args.seconds, patience=10**6, threads=args.threads, progress=False,
            )
            out = Path(tmp) / f"model-{depth}-{channels}-{int(residual)}"
            train([tuple(pair)], out, config=config, client=client, mean=mean, std=std, voxel_size=sim.voxel_size)
            info = Model.read(out)  # its normalisation: the mean and std given to train()
            net = info.network()
            torch.set_num_threads(config.threads or default_threads())
            denoised = (info.predict_whole(even, net=net) + info.predict_whole(odd, net=net)) / 2
            history = json.loads((out / "history.json").read_text())
            rows.append({
                "arch": f"depth {depth}, {channels} ch, {'residual' if residual else 'plain'}",
                "depth": depth, "base_channels": channels, "residual": residual,
                "parameters": sum(p.numel() for p in net.parameters()),
                "receptive_field": info.receptive_field, "halo": info.halo,
                "steps": history[-1]["step"], "best_val_loss": min(h["val_loss"] for h in history),
                "psnr_db": psnr_after_fit(denoised, clean),
                "voxels_per_s": inference_speed(net, args.tile, info.halo),
            })
            r = rows[-1]
            print(f"{r['arch']:<28} steps {r['steps']:>5}  val {r['best_val_loss']:.4f}  "
                  f"PSNR {r['psnr_db']:6.2f} dB  {r['voxels_per_s'] / 1e6:6.2f} Mvox/s", flush=True)

    print(f"\n{'architecture':<28} {'params':>8} {'RF':>4} {'halo':>4} {'steps':>6} {'PSNR dB':>8} {'Mvox/s':>7}")
    for r in rows[1:]:
        print(f"{r['arch']:<28} {r['parameters']:>8} {r['receptive_field']:>4} {r['halo']:>4} {r['steps']:>6} "
              f"{r['psnr_db']:>8.2f} {r['voxels_per_s'] / 1e6:>7.2f}")
    print(f"{rows[0]['arch']:<28} {'':>8} {'':>4} {'':>4} {'':>6} {rows[0]['psnr_db']:>8.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "shape": args.shape, "snr": args.snr, "seconds_per_arch": args.seconds, "patch_size": args.patch_size,
        "batch_size": args.batch_size, "tile": args.tile, "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
    }
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
