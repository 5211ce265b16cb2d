"""How the shipped general model is made, as one command:

    python -m tomocare.pretrained.recipe --out general-model [--pairs 32] [--time-limit 2400] [--seed 1000]

1. ``tomocare simulate-pairs``: ``--pairs`` simulated tomograms of ``SHAPE`` voxels with parameters
   drawn per pair from ``--seed`` (the "general" spec: voxel size 4-20 Å, SNR 0.02-0.3 log-uniform,
   tilt range ±40-70°, one noise model each of gaussian, WBP-coloured, salt-and-pepper (10 % of
   voxels) and Poisson in the projections of a tilt series reconstructed by WBP); the target is the
   clean volume with its missing wedge (denoising, not wedge filling).
2. ``tomocare train --input ... --target ...``: supervised, mean squared error, each pair normalised
   by its input's own mean and std (``normalization = "per-volume"``), the default network, for
   ``--time-limit`` seconds (planned as any training run).
3. The model card (``model.json``'s ``extra.card``): what it was trained on and what it is bad at;
   the weights stored as float16 (0.78 MB; ``tomocare.model.store_half``).

The model in ``tomocare/pretrained/general`` was made by this command with its defaults on the
2-core CPU of the project's CI machine; copy ``--out`` there to replace it. Seeds below 1000 are left
to the benchmarks, so held-out tomograms are never among the training pairs.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

from tomocare.cli import main as tomocare
from tomocare.model import store_half, update_extra

SHAPE = (64, 160, 160)
NOISES = ("gaussian", "wbp", "salt-and-pepper", "poisson")
NOT_FOR = [
    "real data unlike the simulator: no CTF, no ice contamination, gold fiducials or crowded cytoplasm was "
    "simulated; fine-tune on the data's even/odd halves (train --init general) where they exist",
    "voxel sizes outside 4-20 Å and SNRs outside 0.02-0.3 (per half tomogram, as simulated)",
    "filling the missing wedge: it was trained to keep it (target = clean volume with its wedge)",
    "2-D images (it is a 3-D network)",
]


def card(pairs: list[dict], seed: int, time_limit: float) -> dict:
    """The model card: training data, budget, limits and the command that remakes it."""
    values = {k: [float(p[k]) for p in pairs] for k in ("voxel_size", "snr", "tilt_range")}
    return {
        "summary": "3-D denoiser for cryo-electron tomograms of any scale (per-volume normalisation), trained "
                   "supervised on simulated noisy -> clean pairs; a start for fine-tuning, or zero-shot use",
        "trained_on": {
            "pairs": len(pairs), "shape": list(SHAPE), "seed": seed,
            "noise_models": {n: sum(p["noise"] == n for p in pairs) for n in NOISES},
            **{f"{k}_range": [round(min(v), 3), round(max(v), 3)] for k, v in values.items()},
            "target": "clean volume with the missing wedge (denoising only)",
        },
        "time_limit_s": time_limit,
        "not_for": NOT_FOR,
        "command": f"python -m tomocare.pretrained.recipe --pairs {len(pairs)} --seed {seed} "
                   f"--time-limit {time_limit:g}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="model directory to write")
    parser.add_argument("--data", type=Path, default=None, help="where the pairs go (default OUT.data)")
    parser.add_argument("--pairs", type=int, default=32)
    parser.add_argument("--seed", type=int, default=1000)
    parser.add_argument("--time-limit", type=float, default=2400.0, help="training seconds")
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args(argv)
    data = args.data or args.out.with_name(args.out.name + ".data")
    cluster = [] if args.workers is None else ["--workers", str(args.workers)]
    if not (data / "pairs.csv").exists():
        noise = [a for n in NOISES for a in ("--noise", n)]
        code = tomocare(["simulate-pairs", str(data), "--n", str(args.pairs), "--seed", str(args.seed), "--shape",
                         *map(str, SHAPE), *noise, *cluster])
        if code:
            return code
    with (data / "pairs.csv").open() as f:
        pairs = list(csv.DictReader(f))
    settings = data / "train.toml"
    settings.write_text('[train]\nnormalization = "per-volume"\n')
    files = [a for p in pairs for a in ("--input", str(data / f"{p['name']}_input.mrc"),
                                        "--target", str(data / f"{p['name']}_target.mrc"))]
    code = tomocare(["train", *files, "--out", str(args.out), "--config", str(settings), "--seed", str(args.seed),
                     "--time-limit", f"{args.time_limit:g}", "--allow-mixed", *cluster])
    if code:
        return code
    update_extra(args.out, {"card": card(pairs, args.seed, args.time_limit)})
    store_half(args.out)  # 0.78 MB instead of 1.55
    print(json.dumps(card(pairs, args.seed, args.time_limit), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
