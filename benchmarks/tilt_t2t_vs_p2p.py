"""T2T against P2P on a simulated tilt series (cryo-CARE's comparison), PSNR against the phantom.

    python benchmarks/tilt_t2t_vs_p2p.py [--shape 64 128 128] [--dose 20] [--time-limit 120 | --steps 500]

One phantom is imaged as a tilt series (-60..60 by 3°, dose-symmetric order) whose every tilt is
recorded as two frame sums of half the dose each (so all methods get the same electrons):

* raw: weighted back-projection (WBP) of the full tilt series;
* T2T: WBP of the even and odd tilts (alternate in acquisition order) → 3-D Noise2Noise on the
  two half tomograms → both predicted and averaged;
* P2P-df: 2-D Noise2Noise on the even/odd frame sums of every tilt → restored projections
  (the two predictions summed) → WBP of all tilts;
* P2P-tap: 2-D Noise2Noise on adjacent tilts of the full series → restored projections → WBP.

PSNR (after a least-squares scale and offset: counts reconstruct with inverted contrast) is
measured in the centre of the volume (away from the x edges and the empty space above and below
the slab) against the phantom and against the phantom after the missing wedge.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

import dask
import numpy as np
import torch
from _measure import save

from tomocare.cluster import dask_client
from tomocare.evaluate.metrics import psnr
from tomocare.model import Model
from tomocare.simulate.tiltseries import poisson_noise, simulate_tilt_series
from tomocare.tilt.angles import even_odd_indices
from tomocare.tilt.pairs import adjacent_tilt_pairs
from tomocare.tilt.wbp import reconstruct_slab
from tomocare.train import TrainConfig, train


def load_model(directory: Path):
    """(the network with its weights, the model's description)."""
    info = Model.read(directory)
    return info.network(), info


@torch.inference_mode()
def apply_network(net, info, array: np.ndarray) -> np.ndarray:
    """The network on a whole image (2-D net: each image of a stack) or volume, reflect-padded."""
    h, f = info.halo, info.factor
    spatial = array.shape[1:] if net.ndim == 2 else array.shape
    pads = [(h, h + (-(n + 2 * h)) % f) for n in spatial]
    items = array if net.ndim == 2 else array[None]
    out = []
    for item in items:
        x = torch.from_numpy(np.pad((item - info.mean) / info.std, pads, mode="reflect").astype(np.float32))
        y = net(x[None, None])[0, 0].numpy() * info.std + info.mean
        out.append(y[tuple(slice(h, h + n) for n in spatial)])
    return np.stack(out) if net.ndim == 2 else out[0]


def compare(shape=(64, 128, 128), dose=20.0, seed=1, time_limit: float | None = 120.0, steps: int | None = None,
            workdir=Path("/tmp/tomocare-bench-t2t")) -> dict:
    """Run the comparison; return PSNR (dB) of each method against phantom and wedge-filtered phantom."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    sim = simulate_tilt_series(shape, dose=dose, seed=seed, y_chunk=32)
    half = sim.clean / np.float32(2)
    with dask.config.set(scheduler="threads", num_workers=2):
        frames_even, frames_odd, phantom, wedge = dask.compute(
            poisson_noise(half, seed, 31), poisson_noise(half, seed, 32), sim.phantom, sim.wedge_clean)
    full = frames_even + frames_odd
    angles, nz = sim.angles, shape[0]
    centre = (slice(nz // 8, nz - nz // 8), slice(None), slice(shape[2] // 5, shape[2] - shape[2] // 5))

    def score(volume: np.ndarray) -> dict:
        return {"psnr_phantom_db": round(psnr(volume[centre], phantom[centre]), 3),
                "psnr_wedge_db": round(psnr(volume[centre], wedge[centre]), 3)}

    results = {"shape": list(shape), "dose_per_tilt": dose, "tilts": len(angles), "time_limit_s": time_limit,
               "steps": steps}
    results["raw"] = score(reconstruct_slab(full, angles, nz))
    common = dict(progress=False, time_limit=None if steps else time_limit, lr=1e-3, base_channels=8, threads=1,
                  max_steps=steps or 100_000, steps_per_epoch=50, patience=100)
    with dask_client(n_workers=2, threads_per_worker=1) as client:
        t0 = time.perf_counter()
        e_idx, o_idx = even_odd_indices(len(angles), sim.ranks)
        halves = [reconstruct_slab(full[i], angles[i], nz) for i in (e_idx, o_idx)]
        cfg3 = TrainConfig(patch_size=32, batch_size=4, n_patches=1200, **common)
        net, info = load_model(train([tuple(halves)], workdir / "t2t", config=cfg3, client=client))
        t2t = np.mean([apply_network(net, info, h) for h in halves], axis=0)
        results["t2t"] = {**score(t2t), "seconds": round(time.perf_counter() - t0, 1),
                          "best_step": info.extra["training"]["step"]}

        cfg2 = TrainConfig(ndim=2, patch_size=64, batch_size=8, **common)
        for name, pair in (("p2p_df", (frames_even, frames_odd)), ("p2p_tap", adjacent_tilt_pairs(full))):
            t0 = time.perf_counter()
            net, info = load_model(train([pair], workdir / name, config=cfg2, client=client))
            if name == "p2p_df":
                restored = apply_network(net, info, frames_even) + apply_network(net, info, frames_odd)
            else:
                restored = apply_network(net, info, full)
            results[name] = {**score(reconstruct_slab(restored, angles, nz)),
                             "seconds": round(time.perf_counter() - t0, 1),
                             "best_step": info.extra["training"]["step"]}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 128, 128))
    parser.add_argument("--dose", type=float, default=20.0, help="electrons per pixel per tilt")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--time-limit", type=float, default=120.0, help="training wall-clock budget per model, s")
    parser.add_argument("--steps", type=int, default=None, help="train every model this many steps instead")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = compare(tuple(args.shape), args.dose, args.seed, args.time_limit, args.steps)
    for method in ("raw", "t2t", "p2p_df", "p2p_tap"):
        r = results[method]
        print(f"{method:8s} PSNR vs phantom {r['psnr_phantom_db']:6.2f} dB, vs wedge-filtered phantom "
              f"{r['psnr_wedge_db']:6.2f} dB"
              + (f" (best model at step {r['best_step']}, {r['seconds']} s)" if "best_step" in r else ""))
    save(results, f"tilt_t2t_vs_p2p_dose{args.dose:g}")


if __name__ == "__main__":
    main()
