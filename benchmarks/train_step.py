"""Seconds per training step of the default network, by patch, batch and precision.

    python benchmarks/train_step.py [--sizes 32x8 48x4 64x2] [--steps 6]

One step as ``tomocare train`` makes it and its planner times it (``train.plan.time_steps``): the
forward pass under the precision's autocast on a channels-last batch, the MSE loss in fp32,
backward and an Adam update; random data (the cost does not depend on it), all cores in one
process. The median of ``--steps`` steps after a warm-up step. fp32 is the network without
reduced precision (before bf16 training); the precision ``auto`` chooses on this machine is
printed beside it. The default training plan on
this CPU chose 32^3 patches in batches of 4 or 8 (README, quality benchmark).
"""

from __future__ import annotations

import argparse

import torch
from _measure import save

from tomocare.nn.device import channels_last, pick_device, resolve_precision
from tomocare.nn.unet import UNet
from tomocare.train import TrainConfig
from tomocare.train.plan import time_steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["32x8", "48x4", "64x2"], help="PATCHxBATCH")
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--name", default="train_step", help="results/NAME.json")
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    net = channels_last(UNet(TrainConfig().network()).to(device))
    chosen = resolve_precision("auto", device)
    rows = []
    for size in args.sizes:
        patch, batch = (int(v) for v in size.split("x"))
        seconds = {p: time_steps(net, device, p, patch, batch, net.ndim, n=args.steps)
                   for p in dict.fromkeys(("fp32", chosen))}
        rows.append({"patch": patch, "batch": batch, "seconds": seconds})
        line = ", ".join(f"{p} {s:.3f} s" for p, s in seconds.items())
        ratio = f"; {chosen} {seconds['fp32'] / seconds[chosen]:.2f}x faster than fp32" if chosen != "fp32" else ""
        print(f"patch {patch}^3, batch {batch}: {line}{ratio}", flush=True)
    save({"device": str(device), "threads": torch.get_num_threads(), "network": net.config.model_dump(),
          "chosen": chosen, "rows": rows}, args.name)


if __name__ == "__main__":
    main()
