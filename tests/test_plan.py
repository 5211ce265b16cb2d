"""The training plan: chosen from a timed trial and the budget; given settings win; resume keeps it;
the budget counts everything; progress lines without a terminal; why training stopped."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import zarr
from helpers import write_test_mrc
from scipy import ndimage

from tomocare import progress as training_progress
from tomocare.cli import main
from tomocare.model import Model
from tomocare.train import TrainConfig, train
from tomocare.train.loop import under_trained
from tomocare.train.plan import CANDIDATES, lr_factor, plan_training

SHAPE = (32, 64, 64)


@pytest.fixture
def pair(tmp_path):
    rng = np.random.default_rng(0)
    clean = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 2.0) * 10
    halves = []
    for half in ("even", "odd"):
        z = zarr.create_array(store=str(tmp_path / f"{half}.zarr"), shape=SHAPE, chunks=(16, 32, 32), dtype="float32")
        z[:] = (clean + rng.standard_normal(SHAPE) + 10).astype(np.float32)
        halves.append(zarr.open_array(str(tmp_path / f"{half}.zarr"), mode="r"))
    return tuple(halves)


def test_cosine_schedule_warms_up_then_anneals_to_the_end():
    values = [lr_factor(p, 0.1) for p in np.linspace(0, 1, 101)]
    assert values[0] == pytest.approx(0.01) and values[10] == pytest.approx(1.0) and values[-1] == pytest.approx(0.01)
    assert all(a <= b for a, b in zip(values[:10], values[1:11]))  # warm-up rises
    assert all(a >= b for a, b in zip(values[10:], values[11:]))  # then only falls


def test_plan_picks_what_the_budget_affords_and_keeps_given_settings():
    shapes = [(96, 192, 192)]
    tiny, plan = plan_training(TrainConfig(base_channels=4), torch.device("cpu"), shapes, budget=1.0)
    assert (plan.patch_size, plan.batch_size) == CANDIDATES[3][0]  # a tiny budget: the smallest, cheapest steps
    assert {"patch_size", "batch_size", "lr", "n_val_patches"} <= set(plan.chosen) and plan.step_seconds > 0
    assert tiny.patch_size == plan.patch_size and plan.describe().startswith("training plan on cpu")
    big, plan = plan_training(TrainConfig(base_channels=4), torch.device("cpu"), shapes, budget=1e6)
    assert plan.batch_size * plan.patch_size**3 > tiny.batch_size * tiny.patch_size**3  # time to spare: larger steps
    given = TrainConfig(base_channels=4, patch_size=48, batch_size=2, lr=3e-4, n_val_patches=5)
    kept, plan = plan_training(given, torch.device("cpu"), shapes, budget=1e6)
    assert (kept.patch_size, kept.batch_size, kept.lr, kept.n_val_patches) == (48, 2, 3e-4, 5)
    assert not {"patch_size", "batch_size", "lr", "n_val_patches"} & set(plan.chosen)
    fp32, plan = plan_training(TrainConfig(base_channels=4, precision="fp32"), torch.device("cpu"), shapes, budget=10)
    assert fp32.precision == plan.precision == "fp32"


def test_patches_fit_small_volumes():
    config, plan = plan_training(TrainConfig(base_channels=4), torch.device("cpu"), [(40, 70, 90)], budget=1e6)
    assert plan.patch_size <= 35 and 2 * plan.patch_size <= 70


def test_time_limit_counts_everything_and_the_model_says_why_it_stopped(client, pair, tmp_path):
    config = TrainConfig(base_channels=4, patch_size=16, time_limit=6, threads=1, progress=False)
    t = time.monotonic()
    out = train([pair], tmp_path / "m", config=config, client=client)
    assert time.monotonic() - t <= 6 + 1.5  # statistics, plan, steps, validations and saves all inside
    info = Model.read(out)
    info.network()  # the weights load
    training = info.extra["training"]
    assert training["stop_reason"].startswith("time budget spent") and isinstance(training["under_trained"], bool)
    assert info.extra["plan"]["patch_size"] == 16 and "batch_size" in info.extra["plan"]["chosen"]
    assert json.loads((out / "training_summary.json").read_text())["stop_reason"] == training["stop_reason"]
    saved = json.loads((out / "train_config.json").read_text())
    assert saved["plan"]["batch_size"] == saved["config"]["batch_size"]


def test_resume_continues_the_same_plan(client, pair, tmp_path):
    config = TrainConfig(base_channels=4, patch_size=16, max_steps=6, n_val_patches=4, threads=1, progress=False)
    out = train([pair], tmp_path / "m", config=config, client=client)
    first = json.loads((out / "train_config.json").read_text())
    # the patch size not repeated: the checkpoint's (16) is used and checked, not the default (64 > the volume's 32)
    resumed = TrainConfig(base_channels=4, max_steps=12, threads=1, progress=False)
    train([pair], out, config=resumed, client=client, resume=True)
    again = json.loads((out / "train_config.json").read_text())
    assert again["plan"] == first["plan"]  # not planned anew: same batch, lr, validation, precision
    for key in ("batch_size", "lr", "n_val_patches", "steps_per_epoch", "precision"):
        assert again["config"][key] == first["config"][key]
    assert (again["config"]["max_steps"] == 12
            and torch.load(out / "checkpoint.pt", weights_only=True)["state"]["step"] == 12)


def test_under_trained_when_still_improving_at_the_end():
    falling = [{"val_loss": v} for v in (1.0, 0.8, 0.7, 0.6)]
    flat = [{"val_loss": v} for v in (1.0, 0.8, 0.7, 0.7)]
    assert under_trained(falling) and not under_trained(flat)


def test_train_without_a_terminal_logs_progress_lines(tmp_path, pair, capsys, monkeypatch):
    monkeypatch.setattr(training_progress, "LOG_INTERVAL", 0.0)
    even, odd = (str(write_test_mrc(tmp_path / f"t_{h}.mrc", np.asarray(v[:]), voxel_size=(10.0,) * 3))
                 for h, v in zip(("even", "odd"), pair))
    code = main(["train", "--even", even, "--odd", odd, "-o", str(tmp_path / "m"), "--patch-size", "16",
                 "--channels", "4", "--max-steps", "6", "--workers", "1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert json.loads((tmp_path / "m" / "train_config.json").read_text())["config"]["device"] == "cpu"
    lines = [line for line in err.splitlines() if " step " in line and "loss" in line]
    assert len(lines) >= 3 and "steps/s" in lines[0]
    assert "training plan on cpu" in err and "training stopped at step 6" in err
