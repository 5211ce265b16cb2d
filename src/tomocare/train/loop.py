"""The training loop (Noise2Noise, or supervised input -> target): Adam, LR reduction on plateau,
early stopping, checkpoints, resume.

The loop consumes numpy batches from :class:`~tomocare.train.sampler.PatchStream`; it knows
nothing of files or workers, so a data-parallel version only needs one stream per rank.
Everything is written into ``out_dir``: the best model (``model.json`` + weights), the last
``checkpoint.pt``, ``train_config.json``, and the history (``history.csv``/``.json``, ``loss.png``).
Adversarial training (supervised) adds a critic (``tomocare.train.adversarial``), kept in the
checkpoint only: the model files hold the generator.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from tomocare.errors import TomocareError
from tomocare.io.atomic import atomic_path, write_atomic
from tomocare.model import MODEL_JSON, Model, save_model, update_extra
from tomocare.nn import UNet
from tomocare.nn.device import autocast, channels_last, default_threads, device_name, pick_device
from tomocare.progress import ProgressBar, progress_log, write_history
from tomocare.train.adversarial import Adversary
from tomocare.train.config import RESUMABLE, TrainConfig
from tomocare.train.losses import LOSSES
from tomocare.train.plan import DEFAULT_BUDGET, TrainingPlan, lr_factor, plan_training, smallest_patch
from tomocare.train.sampler import (
    Augment,
    Batch,
    LazyArray,
    Pair,
    PatchStream,
    Standardised,
    check_pairs,
    coarse_mask,
    dataset_stats,
    describe,
    plan_patches,
)

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
# relative; a smaller drop of the validation loss does not reset the patience (as in ReduceLROnPlateau)
MIN_IMPROVEMENT = 1e-4
CONFIG_JSON = "train_config.json"


@dataclass
class _State:
    """Progress of a run: what a checkpoint holds besides network, optimizer and scheduler."""

    step: int = 0
    epoch: int = 0
    best_val: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    seconds: float = 0.0  # time spent in the training loop (steps, validations, checkpoints), all sessions
    history: list[dict] = field(default_factory=list)


def _check_out_dir(out_dir: Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse to resume without a checkpoint, or to replace a run (or anything else) unasked."""
    if resume and overwrite:
        raise TomocareError(f"{out_dir}: choose resume or overwrite, not both")
    if resume:
        if not (out_dir / CHECKPOINT).is_file():
            raise TomocareError(f"{out_dir}: no {CHECKPOINT} to resume from")
        return
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise TomocareError(f"{out_dir}: exists and is not a directory")
    contents = {p.name for p in out_dir.iterdir()}
    if contents <= {CONFIG_JSON}:
        return  # empty, or a run that stopped before its first checkpoint
    if not overwrite:
        raise TomocareError(f"{out_dir}: exists (overwrite to replace it, or resume to continue training)")
    if not contents & {CHECKPOINT, MODEL_JSON, CONFIG_JSON}:
        raise TomocareError(f"{out_dir}: not a tomocare training directory; refusing to replace it")


def _load_checkpoint(path: Path, config: TrainConfig) -> tuple[dict, TrainConfig]:
    """The checkpoint and the run's settings: those saved (the plan included), with the resumable
    ones given now; a different value of any other given setting is refused."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        saved = checkpoint["config"]
    except Exception as err:
        raise TomocareError(f"{path}: unreadable checkpoint ({type(err).__name__})") from None
    given = config.model_fields_set
    changed = sorted(k for k in given if k not in RESUMABLE and saved.get(k) != getattr(config, k))
    if changed:
        raise TomocareError(
            f"{path}: cannot resume with different settings: "
            + ", ".join(f"{k} {saved.get(k)!r} -> {getattr(config, k)!r}" for k in changed)
        )
    resumed = TrainConfig.model_validate({**saved, **{k: getattr(config, k) for k in given if k in RESUMABLE}})
    return checkpoint, resumed


def _fine_tuning(config: TrainConfig) -> tuple[TrainConfig, Model | None]:
    """The model ``config.init`` names, and the settings with its network (and, for a model normalised
    per volume, that normalisation) where not given; a given network setting that differs is refused."""
    if config.init is None:
        return config, None
    from tomocare.pretrained import resolve

    model = Model.read(resolve(config.init))
    arch = model.architecture
    own = {"ndim": arch.ndim, "depth": arch.depth, "base_channels": arch.base_channels, "n_conv": arch.n_conv,
           "residual": arch.residual, "upsample": arch.upsample,
           "architecture": "unet" if arch.skips else "autoencoder"}
    given = config.model_fields_set
    clash = [f"{k} {getattr(config, k)!r} (the model's is {v!r})" for k, v in own.items()
             if k in given and getattr(config, k) != v]
    if clash:
        raise TomocareError(f"init {config.init}: fine-tuning keeps the model's network; leave out " + ", ".join(clash))
    update: dict[str, Any] = {k: v for k, v in own.items() if k not in given}
    if model.per_volume and "normalization" not in given:
        update["normalization"] = "per-volume"
    config = config.model_copy(update=update)
    TrainConfig.model_validate(config.model_dump())  # still consistent (patch size and depth)
    if config.network() != arch:
        raise TomocareError(f"{model.path}: its network {arch.model_dump()} cannot be fine-tuned by these settings")
    return config, model


def _standardised(client: Client, pairs: Sequence[Pair], roles: Sequence[str]) -> list[Pair]:
    """Each pair read through its own normalisation: the mean and std of its volumes in ``roles``."""
    out: list[Pair] = []
    for pair in pairs:
        mean, std = dataset_stats(client, [pair], roles)
        out.append((Standardised(pair[0], mean, std), Standardised(pair[1], mean, std)))
    return out


@dataclass
class _Run:
    """One training run's objects, and what it does with them."""

    net: UNet
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    state: _State
    config: TrainConfig
    plan: TrainingPlan
    device: torch.device
    out_dir: Path
    model_args: dict  # normalisation, voxel size, patch size and data, for save_model
    end: float = math.inf  # monotonic time by which this session must have finished, everything included
    reserve: float = 1.0  # seconds kept for the last validation and checkpoint
    _session: tuple[float, float] = (0.0, 0.0)  # (monotonic start of this session's loop, seconds before it)
    _seconds_total: float = math.inf  # loop seconds of the whole run, earlier sessions included
    data_wait: float = 0.0  # seconds this session's steps waited for patches from the workers
    adversary: Adversary | None = None  # the critic of adversarial training
    # this epoch's adversarial losses: the generator's (unweighted) and the critic's, per step
    adversarial_losses: tuple[list[float], list[float]] = field(default_factory=lambda: ([], []))

    def elapsed(self) -> float:
        """Seconds in the training loop so far, earlier sessions of a resumed run included."""
        start, before = self._session
        return before + time.monotonic() - start

    def left(self) -> float:
        """Seconds left of this session's limit and of the planned budget."""
        start, before = self._session
        return max(0.0, min(self.end, start + self.plan.budget_seconds - before) - time.monotonic())

    def _predict(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input, target and prediction of a batch on the device."""
        x, y = (channels_last(torch.from_numpy(a).to(self.device, non_blocking=True)) for a in batch)
        with autocast(self.device, self.config.precision):
            pred = self.net(x)
        return x, y, pred

    def _loss(self, batch: Batch) -> torch.Tensor:
        _, y, pred = self._predict(batch)
        return LOSSES[self.config.loss](pred.float(), y)

    def _adversarial_loss(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """``critic_steps`` updates of the critic, then the generator's loss, pixel + weighted adversarial,
        and the pixel loss alone; the adversarial losses of the step are kept for the epoch's record."""
        assert self.adversary is not None
        x, y, pred = self._predict(batch)
        pixel = LOSSES[self.config.loss](pred.float(), y)
        critic = [self.adversary.critic_step(x, y, pred.detach()) for _ in range(self.config.critic_steps)]
        adversarial = self.adversary.generator_loss(x, pred)
        self._check_finite(critic=critic[-1], adversarial=adversarial.item())
        self.adversarial_losses[0].append(adversarial.item())
        self.adversarial_losses[1].append(sum(critic) / len(critic))
        return pixel + self.config.adversarial_weight * adversarial, pixel

    def _check_finite(self, **losses: float) -> None:
        """A non-finite loss ends training: one line naming the step."""
        for name, value in losses.items():
            if not math.isfinite(value):
                raise TomocareError(f"training diverged: the {name} loss is {value} at step {self.state.step + 1}; "
                                    "lower the learning rate (or the adversarial weight) and train again")

    def progress(self, seconds: float) -> float:
        """Fraction of the run done after ``seconds`` in the loop, by steps or by time: the time
        is the planned budget, or less when this session's limit ends it sooner."""
        by_time = seconds / max(1e-9, self._seconds_total - self.reserve)
        return max(self.state.step / self.config.max_steps, by_time)

    def train_steps(self, batches: Iterator[Batch], n: int, bar: ProgressBar) -> list[float]:
        """Up to ``n`` optimiser steps, fewer when the run's time is up; their losses."""
        self.net.train()
        losses: list[float] = []
        cosine = self.config.schedule == "cosine"
        while len(losses) < n:
            progress = self.progress(self.elapsed())
            if losses and (progress >= 1 or time.monotonic() >= self.end - self.reserve):
                break
            if cosine:
                for group in self.optimizer.param_groups:
                    group["lr"] = self.config.lr * lr_factor(progress, self.config.warmup)
            t = time.monotonic()
            batch = next(batches)
            self.data_wait += time.monotonic() - t
            if self.adversary is None:
                loss = pixel = self._loss(batch)
            else:
                loss, pixel = self._adversarial_loss(batch)
            losses.append(pixel.item())  # the history's train_loss is the pixel loss
            self._check_finite(pixel=losses[-1])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.state.step += 1
            bar.update(self.state.step, loss=losses[-1], lr=self.optimizer.param_groups[0]["lr"], left=self.left())
        return losses

    @torch.no_grad()
    def validate(self, stream: PatchStream) -> float:
        """Mean loss over all validation patches."""
        self.net.eval()
        total, count = 0.0, 0
        for batch in stream.batches():
            total += self._loss(batch).item() * len(batch.inputs)
            count += len(batch.inputs)
        return total / count

    def summary(self, reason: str | None = None) -> dict:
        s = self.state
        out: dict[str, Any] = {"step": s.step, "epoch": s.epoch, "best_val_loss": s.best_val,
                               "best_epoch": s.best_epoch, "seconds": round(s.seconds, 3)}
        if reason is not None:
            out |= {"stop_reason": reason, "under_trained": under_trained(s.history)}
        return out

    def save_best(self) -> None:
        extra = {"objective": objective(self.config), "training": self.summary(), "config": self.config.model_dump(),
                 "plan": self.plan.to_dict()}
        save_model(self.out_dir, self.net, extra=extra, **self.model_args)

    def save_checkpoint(self) -> None:
        checkpoint = {
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": asdict(self.state),
            "config": self.config.model_dump(),
            "plan": self.plan.to_dict(),
            "normalization": {"mean": self.model_args["mean"], "std": self.model_args["std"]},
            "torch_rng": torch.get_rng_state(),
        }
        if self.adversary is not None:
            checkpoint["adversary"] = self.adversary.state_dict()
        with atomic_path(self.out_dir / CHECKPOINT, overwrite=True) as tmp:
            torch.save(checkpoint, tmp)

    def restore(self, checkpoint: dict) -> None:
        self.net.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        self.state = _State(**checkpoint["state"])
        torch.set_rng_state(checkpoint["torch_rng"])
        if self.adversary is not None:
            if "adversary" not in checkpoint:
                raise TomocareError(f"{self.out_dir / CHECKPOINT}: holds no critic to resume adversarial training")
            self.adversary.load_state_dict(checkpoint["adversary"])

    def stop_reason(self, seconds: float) -> str | None:
        if self.state.step >= self.config.max_steps:
            return f"step limit reached ({self.config.max_steps} steps)"
        if self.state.bad_epochs >= self.config.patience:
            return f"converged: no better validation loss for {self.state.bad_epochs} validations"
        if self.progress(seconds) >= 1 or time.monotonic() >= self.end - self.reserve:
            return f"time budget spent ({self.elapsed():.0f} s of training)"
        return None

    def run(self, train_stream: PatchStream, val_stream: PatchStream) -> str:
        """Epochs of training, each followed by validation, checkpoint and history, until a stop;
        returns why it stopped."""
        config, state = self.config, self.state
        now = time.monotonic()
        self._session = (now, state.seconds)
        self._seconds_total = state.seconds + min(self.plan.budget_seconds - state.seconds, self.end - now)
        batches = train_stream.batches(start=state.step)
        with ProgressBar(min(config.max_steps, self.plan.steps), state.step, config.progress) as bar, \
                contextlib.closing(batches):
            # at least one epoch (a validated, saved model) however small the budget; then until a stop
            reason = self.stop_reason(self.elapsed()) if state.history else None
            while reason is None:
                n = max(1, min(config.steps_per_epoch, config.max_steps - state.step))
                losses = self.train_steps(batches, n, bar)
                t_val = time.monotonic()
                val = self.validate(val_stream)
                if config.schedule == "plateau":
                    self.scheduler.step(val)
                state.epoch += 1
                record = {
                    "epoch": state.epoch,
                    "step": state.step,
                    "train_loss": sum(losses) / len(losses),
                    "val_loss": val,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "seconds": round(self.elapsed(), 3),
                }
                if self.adversary is not None:  # the generator's adversarial loss (unweighted) and the critic's
                    generator, critic = self.adversarial_losses
                    record |= {"adversarial_loss": sum(generator) / len(generator),
                               "critic_loss": sum(critic) / len(critic)}
                    generator.clear()
                    critic.clear()
                self._check_finite(validation=val)
                state.history.append(record)
                if val < state.best_val:  # kept even when only a little better: late, low-lr weights
                    significant = val < state.best_val * (1 - MIN_IMPROVEMENT)
                    state.bad_epochs = 0 if significant else state.bad_epochs + 1  # patience wants real progress
                    state.best_val, state.best_epoch = val, state.epoch
                    self.save_best()
                else:
                    state.bad_epochs += 1
                state.seconds = self.elapsed()
                self.save_checkpoint()
                write_history(self.out_dir, state.history)
                # keep enough time for one more validation and checkpoint (a quarter more, for safety)
                self.reserve = 1.25 * (time.monotonic() - t_val) + 0.5
                state.seconds = self.elapsed()
                bar.update(state.step, loss=record["train_loss"], val=val, lr=record["lr"], left=self.left(),
                           force=not config.progress)
                log.info("epoch %(epoch)d, step %(step)d: train %(train_loss).5g, val %(val_loss).5g, lr %(lr).3g",
                         record)
                reason = self.stop_reason(self.elapsed())
        if train_stream.nonfinite:
            log.warning("%d non-finite voxels were replaced by 0 in training patches", train_stream.nonfinite)
        return reason


def objective(config: TrainConfig) -> dict[str, str]:
    """What was learned and what the validation loss measures, for ``model.json``."""
    if config.mode == "supervised":
        out = {"mode": "supervised", "loss": config.loss, "pairs": "input -> target (never swapped)",
               "validation_loss": f"{config.loss} of the prediction from the input against the target "
                                  "(the clean volume)"}
        if config.adversarial != "none":
            out["adversarial"] = (f"{config.adversarial} against a conditional PatchGAN critic, weight "
                                  f"{config.adversarial_weight:g} (the pixel loss's 1); not in the validation loss")
        return out
    return {"mode": "noise2noise", "loss": config.loss, "pairs": "even <-> odd halves"
            + (" (randomly swapped)" if config.swap else ""),
            "validation_loss": f"{config.loss} of the prediction from one half against the other noisy half"}


def under_trained(history: Sequence[dict]) -> bool:
    """Whether the validation loss was still falling at the end: the last validation is the best
    and improved on the one before by more than 5% of the run's whole improvement."""
    vals = [h["val_loss"] for h in history]
    if len(vals) < 3:
        return len(vals) == 2 and vals[1] < vals[0]
    total = vals[0] - min(vals)
    return vals[-1] == min(vals) and total > 0 and vals[-2] - vals[-1] > 0.05 * total


def train(
    pairs: Sequence[Pair],
    out_dir: str | os.PathLike,
    *,
    config: TrainConfig,
    client: Client,
    mean: float | None = None,
    std: float | None = None,
    voxel_size: float | None = None,
    masks: Sequence[LazyArray | None] | None = None,
    names: Sequence[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
) -> Path:
    """Train a U-Net on ``pairs``; return ``out_dir``, the model directory.

    ``config.mode`` says what the pairs are: ``"noise2noise"`` (the default) even/odd half
    tomograms with independent noise, each predicting the other (their roles randomly swapped);
    ``"supervised"`` (input, target) pairs, e.g. a simulated noisy volume and its clean one: the
    network learns input -> target, the roles are never swapped, the validation loss is against
    the target, and the normalisation is the inputs' (prediction sees an input).

    With ``config.ndim == 2`` the pairs are stacks of 2-D images (n, y, x), or single images
    (y, x), with independent noise (P2P pairings: two acquisitions, even/odd frame sums,
    adjacent tilts), and the network is the 2-D U-Net.

    ``mean``/``std`` (one pair for the whole dataset) are computed on the cluster when not given
    (a resumed run reuses the checkpoint's; for supervised pairs they are the inputs'). ``masks``
    (optional, one per pair, None for none) restrict patches to non-zero regions. ``names``
    label the pairs in messages (default: the arrays' paths).

    Settings not given explicitly are planned (:func:`~tomocare.train.plan.plan_training`) from
    a timed trial on the device and the time budget (``time_limit``, which counts everything from
    this call on, or ``DEFAULT_BUDGET``). Training stops when the planned budget or step count is
    spent, at ``time_limit``, or by early stopping, each time after a validation, a checkpoint
    and, if it improved, saving the best model; ``model.json`` and ``training_summary.json`` say why.
    """
    started = time.monotonic()
    out_dir = Path(out_dir)
    if config.ndim == 2:
        from tomocare.tilt.pairs import as_image_stack

        pairs = [(as_image_stack(even), as_image_stack(odd)) for even, odd in pairs]
    init = None
    if not resume:  # fine-tuning: the network is the init model's (a resumed run: the checkpoint's)
        config, init = _fine_tuning(config)
    given_patch = "patch_size" in config.model_fields_set  # else planned (a resumed run: the checkpoint's, below)
    roles = config.roles
    check_pairs(pairs, config.patch_size if given_patch else smallest_patch(config), masks, ndim=config.ndim,
                roles=roles)
    names = list(names) if names else [describe(even, f"pair {i}") for i, (even, _) in enumerate(pairs)]
    device = pick_device(config.device)
    _check_out_dir(out_dir, resume=resume, overwrite=overwrite)
    checkpoint = None
    if resume:
        checkpoint, config = _load_checkpoint(out_dir / CHECKPOINT, config)
        roles = config.roles  # the checkpoint's mode
        if not given_patch:
            check_pairs(pairs, config.patch_size, masks, ndim=config.ndim, roles=roles)
        mean, std = checkpoint["normalization"]["mean"], checkpoint["normalization"]["std"]
    counted = ("input",) if config.mode == "supervised" else ("even half", "odd half")
    if mean is None or std is None:  # (a resumed run has the checkpoint's)
        log.info("computing the normalisation over %d pairs", len(pairs))
        mean, std = dataset_stats(client, pairs, counted)
    per_volume = config.normalization == "per-volume"
    if per_volume:  # each pair by its own statistics; mean and std above are then only recorded
        pairs = _standardised(client, pairs, counted)
    trained_on = [
        describe(volume, f"{names[i]} ({half})")
        for i, pair in enumerate(pairs)
        for half, volume in zip(roles, pair)
    ]
    if config.mode == "supervised":
        progress_log.info("supervised training (%s loss): input -> target, never swapped; the validation loss is "
                          "against the target", config.loss)
    if config.time_limit is None and "max_steps" not in config.model_fields_set:
        progress_log.info("no time limit given: training is planned for %.0f s (set one with --time-limit)",
                          DEFAULT_BUDGET)
    limit = config.time_limit or (DEFAULT_BUDGET if "max_steps" not in config.model_fields_set else math.inf)

    old_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads or default_threads())
    try:
        if checkpoint is not None:
            plan = TrainingPlan.from_dict(checkpoint["plan"]) if "plan" in checkpoint else None
        else:
            budget = limit - (time.monotonic() - started) - 1.0  # one second for the last save
            config, plan = plan_training(config, device, [tuple(even.shape) for even, _ in pairs],
                                         budget=budget if math.isfinite(budget) else DEFAULT_BUDGET)
        if plan is None:  # a checkpoint of an older version: its settings as they were
            plan = TrainingPlan(config.patch_size, config.batch_size, config.precision, 0.0, limit, config.max_steps,
                                config.steps_per_epoch, config.lr, config.warmup, config.schedule,
                                device_name(device), ())
        progress_log.info("%s", plan.describe())
        p = config.patch_size
        check_pairs(pairs, p, masks, ndim=config.ndim, roles=roles)
        coarse = [None if m is None else coarse_mask(client, m, max(1, p // 4)) for m in masks] if masks else None
        patch_plan = plan_patches(
            [tuple(even.shape) for even, _ in pairs],
            patch_size=p,
            n_train=config.n_patches,
            n_val=config.val_patches,
            val_fraction=config.val_fraction,
            seed=config.seed,
            masks=coarse,
            names=names,
            ndim=config.ndim,
        )
        if not resume:
            if out_dir.exists():
                shutil.rmtree(out_dir)  # _check_out_dir allowed it: nothing of value, or ours and overwrite
            out_dir.mkdir(parents=True)
        provenance = {"objective": objective(config), "config": config.model_dump(), "plan": plan.to_dict(),
                      "mean": mean, "std": std, "voxel_size": voxel_size, "trained_on": trained_on,
                      "validation_start_y": list(patch_plan.val_start)}
        write_atomic(out_dir / CONFIG_JSON, json.dumps(provenance, indent=2) + "\n")

        torch.manual_seed(config.seed)
        net = channels_last(UNet(config.network()).to(device))
        optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=config.lr_factor, patience=config.lr_patience, min_lr=config.min_lr
        )
        if init is not None:
            net.load_state_dict(init.network(device).state_dict())
            log.info("fine-tuning %s (weights %s)", init.path, init.weights_sha256[:12])
        model_args = dict(mean=mean, std=std, voxel_size=voxel_size, patch_size=p, trained_on=trained_on,
                          per_volume=per_volume)
        adversary = None
        if config.adversarial != "none":
            adversary = Adversary.build(config.adversarial, ndim=config.ndim, channels=config.critic_channels,
                                        patch_size=p, seed=config.seed, device=device, gp_weight=config.gp_weight,
                                        precision=config.precision)
        run = _Run(net, optimizer, scheduler, _State(), config, plan, device, out_dir, model_args,
                   end=started + limit, adversary=adversary)
        if checkpoint is not None:
            run.restore(checkpoint)
            log.info("resuming %s at step %d (epoch %d)", out_dir, run.state.step, run.state.epoch)
        def stream(items, **kw) -> PatchStream:
            return PatchStream(client, pairs, items, patch_size=p, mean=0.0 if per_volume else mean,
                               std=1.0 if per_volume else std, batch_size=config.batch_size,
                               seed=config.seed, prefetch=config.prefetch, ndim=config.ndim, **kw)

        augment = Augment(flip=config.flip, swap=config.swap, rot90=config.rot90)
        reason = run.run(stream(patch_plan.train, augment=augment), stream(patch_plan.val, shuffle=False))
    finally:
        torch.set_num_threads(old_threads)
    summary = run.summary(reason)
    if (out_dir / MODEL_JSON).exists():
        update_extra(out_dir, {"training": summary})
    write_atomic(out_dir / "training_summary.json", json.dumps(summary, indent=2) + "\n")
    progress_log.info("training stopped at step %d (%s); best validation loss%s %.5g at validation %d of %d "
                      "(%.0f s, %.0f s of it waiting for patches)", run.state.step, reason,
                      " (against the target)" if config.mode == "supervised" else "", run.state.best_val,
                      run.state.best_epoch, run.state.epoch, time.monotonic() - started, run.data_wait)
    if summary["under_trained"]:
        log.warning("%s: under-trained: the validation loss was still falling when training stopped (%s); "
                    "give it more time (--time-limit)", out_dir, reason)
    return out_dir
