"""The training plan: patch size, batch size, precision, validation and step count chosen from the
device and the time budget, measured, not guessed.

A few timed optimiser steps of the real network on the real device, for each candidate
(patch size, batch size) from small to large, give the cost of a step. The plan takes the
largest candidate that still affords ``TARGET_STEPS`` steps in the budget (small budgets on slow
devices get small, many steps; large budgets on GPUs get large batches), within the device's
memory. The learning rate warms up, then decays on a cosine to the end of the budget, so a run
of any length ends annealed instead of waiting for a plateau it never reaches. Settings given
explicitly are kept as they are; only the others are planned.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from tomocare.nn import UNet
from tomocare.nn.device import autocast, channels_last, device_name, resolve_precision
from tomocare.train.config import PLANNED, TrainConfig

log = logging.getLogger("tomocare.progress")

#: Without --time-limit (and without max_steps) a run is planned for this many seconds.
DEFAULT_BUDGET = 3600.0
#: Steps a plan aims for: enough for a small U-Net to converge with an annealed learning rate.
#: The largest (patch, batch) that affords them in the budget is chosen.
TARGET_STEPS = 3000
#: Validations in a planned run (one per "epoch"), and their share of the budget at most.
N_VALIDATIONS = 10
VALIDATION_SHARE = 0.05
MAX_VAL_PATCHES = 256
#: Training memory on CPUs (activations and their gradients) at most; GPUs use their free memory.
CPU_TRAIN_MEMORY = 640 * 2**20
CANDIDATES = {
    3: [(32, 4), (32, 8), (48, 4), (48, 8), (64, 4), (64, 8), (64, 16), (96, 8), (96, 16)],
    2: [(64, 4), (64, 8), (128, 4), (128, 8), (128, 16), (192, 16), (256, 16), (256, 32)],
}


@dataclass(frozen=True)
class TrainingPlan:
    """What a run will do, and why; saved with the checkpoint and the model."""

    patch_size: int
    batch_size: int
    precision: str  # "fp32" or "bf16"
    step_seconds: float  # measured on the device (0 when nothing was measured)
    budget_seconds: float  # wall-clock seconds for the steps and validations
    steps: int  # optimiser steps expected in the budget (a given max_steps: that limit)
    steps_per_epoch: int  # steps between validations
    lr: float
    warmup: float  # fraction of the run
    schedule: str
    device: str
    chosen: tuple[str, ...]  # the settings the plan chose (the others were given)

    def describe(self) -> str:
        """The plan in one line."""
        budget = f"{self.budget_seconds:.0f} s budget"
        speed = f", {self.step_seconds:.3g} s/step measured" if self.step_seconds else ""
        return (f"training plan on {self.device}: patches {self.patch_size}, batch {self.batch_size}, {self.precision}"
                f"{speed}; {budget}, ~{self.steps} steps, validation every {self.steps_per_epoch}; "
                f"lr {self.lr:g} {self.schedule}"
                + (f" after {self.warmup:.0%} warm-up" if self.schedule == "cosine" else "")
                + (f" (planned: {', '.join(self.chosen)})" if self.chosen else " (all given)"))

    def to_dict(self) -> dict:
        return asdict(self) | {"chosen": list(self.chosen)}

    @classmethod
    def from_dict(cls, data: dict) -> TrainingPlan:
        return cls(**{**data, "chosen": tuple(data.get("chosen", ()))})


def train_bytes_per_voxel(config: TrainConfig, precision: str) -> int:
    """Rough training memory per input voxel of a batch: activations kept for backward and their
    gradients, ~10 full-resolution feature maps per convolution of the first level."""
    return (2 if precision == "bf16" else 4) * config.base_channels * (6 + 5 * config.n_conv)


def time_steps(net: UNet, device: torch.device, precision: str, patch: int, batch: int, ndim: int,
               n: int = 3) -> float:
    """Seconds per optimiser step (median of ``n`` after one warm-up) on random data."""
    shape = (batch, 1) + (patch,) * ndim
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-6)
    x = channels_last(torch.randn(shape, device=device))
    y = torch.randn(shape, device=device)
    times = []
    for _ in range(n + 1):
        t = time.perf_counter()
        with autocast(device, precision):
            out = net(x)
        loss = torch.nn.functional.mse_loss(out.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[len(times[1:]) // 2]


def _fits_gpu(device: torch.device, share: float = 0.8) -> bool:
    """Whether the last measured steps' peak stayed within ``share`` of the memory torch could have."""
    free, _ = torch.cuda.mem_get_info(device)
    return torch.cuda.max_memory_allocated(device) <= share * (free + torch.cuda.memory_reserved(device))


def _fits(config: TrainConfig, device: torch.device, precision: str, patch: int, batch: int) -> bool:
    if device.type == "cuda":
        return True  # measured: an out-of-memory step rules the candidate out
    return batch * patch**config.ndim * train_bytes_per_voxel(config, precision) <= CPU_TRAIN_MEMORY


def smallest_patch(config: TrainConfig) -> int:
    """The smallest patch a plan may choose."""
    factor = 2**config.depth
    return min((p for p, _ in CANDIDATES[config.ndim] if p % factor == 0), default=config.patch_size)


def _candidates(config: TrainConfig, shapes: Sequence[tuple[int, ...]]) -> list[tuple[int, int]]:
    """(patch, batch) pairs to try, smallest step first; a given patch or batch size is kept."""
    given = config.model_fields_set
    factor = 2**config.depth
    smallest = min(min(s[3 - config.ndim:]) for s in shapes)
    smallest_y = min(s[1] for s in shapes)
    usable = [(p, b) for p, b in CANDIDATES[config.ndim] if p % factor == 0 and p <= smallest and 2 * p <= smallest_y]
    if "patch_size" in given:
        usable = [(config.patch_size, b) for b in sorted({b for _, b in CANDIDATES[config.ndim]})]
    if "batch_size" in given:
        patches = sorted({p for p, _ in usable}) or [config.patch_size]
        usable = [(p, config.batch_size) for p in patches]
    if not usable:  # volumes smaller than every candidate: the configured size (check_pairs says if it fits)
        usable = [(config.patch_size, config.batch_size)]
    return sorted(set(usable), key=lambda pb: (pb[1] * pb[0] ** config.ndim, pb[0]))


def plan_training(
    config: TrainConfig, device: torch.device, shapes: Sequence[tuple[int, ...]], *, budget: float
) -> tuple[TrainConfig, TrainingPlan]:
    """Fill in the settings not given explicitly; return the resolved config and its plan.

    ``budget`` is the wall-clock seconds left for the steps and validations. ``shapes`` are the
    training volumes (or image stacks): a patch must fit in each beside a validation slab.
    """
    given = config.model_fields_set
    chosen = [name for name in PLANNED if name not in given and not (name == "lr" and config.schedule != "cosine")]
    precision = resolve_precision(config.precision, device)
    candidates = [c for c in _candidates(config, shapes) if _fits(config, device, precision, *c)]
    candidates = candidates or _candidates(config, shapes)[:1]
    target = config.max_steps if "max_steps" in given else TARGET_STEPS

    choice, step_seconds = candidates[0], 0.0
    if len(candidates) > 1 or "max_steps" not in given:
        net = channels_last(UNet(config.network()).to(device))
        for candidate in candidates:
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            try:
                seconds = time_steps(net, device, precision, *candidate, config.ndim)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                break
            if device.type == "cuda" and not _fits_gpu(device):
                break
            if step_seconds and budget / seconds < target:
                break  # the previous candidate is the largest that affords the target
            choice, step_seconds = candidate, seconds
        del net
    patch, batch = choice

    updates: dict = {"precision": precision, "patch_size": patch, "batch_size": batch}
    steps = config.max_steps  # a planned run is ended by its time budget; max_steps stays a cap
    if "max_steps" not in given and step_seconds:
        steps = max(1, min(config.max_steps, int(budget / step_seconds)))
    if "steps_per_epoch" not in given:
        updates["steps_per_epoch"] = max(1, math.ceil(steps / N_VALIDATIONS))
    if "lr" in chosen:  # Adam's step for batch 8 of 32^3, scaled with the square root of the batch
        updates["lr"] = round(1e-3 * math.sqrt(batch / 8), 6) if config.ndim == 3 else config.lr
    n_pairs = len(shapes)
    if "n_patches" not in given:  # each patch seen about twice; at least cryo-CARE's 1200
        updates["n_patches"] = min(100_000, max(1200, math.ceil(steps * batch / (2 * n_pairs))))
    if "n_val_patches" not in given:
        if step_seconds:  # validation (forward passes, ~1/3 of a step each) within its share of the budget
            total = VALIDATION_SHARE * budget / N_VALIDATIONS / (step_seconds / 3) * batch
        else:
            total = MAX_VAL_PATCHES
        total = min(MAX_VAL_PATCHES, max(4 * batch, total))
        updates["n_val_patches"] = max(4, math.ceil(total / n_pairs))
    resolved = config.model_copy(update={k: v for k, v in updates.items() if k not in given or k == "precision"})
    plan = TrainingPlan(
        patch_size=patch, batch_size=batch, precision=precision, step_seconds=round(step_seconds, 4),
        budget_seconds=round(budget, 1), steps=steps, steps_per_epoch=resolved.steps_per_epoch,
        lr=resolved.lr, warmup=config.warmup, schedule=config.schedule, device=device_name(device),
        chosen=tuple(c for c in chosen if c != "precision" or config.precision == "auto"),
    )
    return resolved, plan


def lr_factor(progress: float, warmup: float) -> float:
    """Learning-rate multiplier of the cosine schedule at ``progress`` in [0, 1] of the run:
    linear warm-up over the first ``warmup`` fraction, then a cosine decay to 1% at the end."""
    progress = min(max(progress, 0.0), 1.0)
    if warmup > 0 and progress < warmup:
        return 0.01 + 0.99 * progress / warmup
    span = max(1e-9, 1.0 - warmup)
    return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * (progress - warmup) / span))
