"""Patch sampling on dask workers, wedge-safe augmentation, and the training loop (tiny runs)."""

from __future__ import annotations

import json
import logging
import re

import numpy as np
import pytest
import torch
import zarr
from scipy import ndimage

from tomocare.errors import TomocareError
from tomocare.model import Model
from tomocare.train import TrainConfig, train
from tomocare.train.sampler import (
    Augment,
    CoarseMask,
    PatchStream,
    augment,
    check_pairs,
    coarse_mask,
    dataset_stats,
    extract_batch,
    plan_patches,
    validation_start,
)

SHAPE = (32, 64, 64)


def _zarr(path, data: np.ndarray) -> zarr.Array:
    z = zarr.create_array(store=str(path), shape=data.shape, chunks=(16, 32, 32), dtype=data.dtype)
    z[:] = data
    return zarr.open_array(str(path), mode="r")


@pytest.fixture
def pair(tmp_path):
    """A smooth random signal plus independent noise in each half, as zarr arrays."""
    rng = np.random.default_rng(0)
    clean = ndimage.gaussian_filter(rng.standard_normal(SHAPE), 2.0)
    clean *= 3.0 / clean.std()
    return tuple(
        _zarr(tmp_path / f"{half}.zarr", (clean + 2.0 * rng.standard_normal(SHAPE) + 10).astype(np.float32))
        for half in ("even", "odd")
    )


def _config(**changes) -> TrainConfig:
    settings = dict(
        patch_size=16, n_patches=64, n_val_patches=8, batch_size=4, base_channels=4, lr=2e-3,
        max_steps=40, steps_per_epoch=10, threads=1, progress=False,
    )
    return TrainConfig(**{**settings, **changes})


# ---------------------------------------------------------------- planning and extraction


@pytest.mark.parametrize(("shape", "fraction"), [((32, 64, 64), 0.1), ((40, 200, 48), 0.25), ((16, 100, 16), 0.3)])
def test_training_patches_never_overlap_the_validation_slab(shape, fraction, caplog):
    p = 16
    with caplog.at_level(logging.INFO):
        plan = plan_patches([shape], patch_size=p, n_train=500, n_val=50, val_fraction=fraction, seed=1)
    start = plan.val_start[0]
    assert start == validation_start(shape[1], p, fraction)
    assert shape[1] - start >= max(p, round(shape[1] * fraction))
    assert ("enlarged to one patch" in caplog.text) == (round(shape[1] * fraction) < p)
    assert (plan.train[:, 2] + p <= start).all() and (plan.train[:, 2] >= 0).all()
    assert (plan.val[:, 2] >= start).all()
    for corners in (plan.train, plan.val):
        assert (corners[:, 1:] >= 0).all() and (corners[:, 1:] + p <= np.array(shape)).all()


def test_extracted_training_patches_stay_out_of_the_slab(client, tmp_path):
    """End to end on workers: a volume whose value is its y index."""
    y_index = np.broadcast_to(np.arange(SHAPE[1], dtype=np.float32)[None, :, None], SHAPE).copy()
    vol = _zarr(tmp_path / "y.zarr", y_index)
    plan = plan_patches([SHAPE], patch_size=16, n_train=40, n_val=8, val_fraction=0.1, seed=0)
    kw = dict(patch_size=16, mean=0.0, std=1.0, batch_size=8, shuffle=False)
    train_y = np.concatenate([b.inputs for b in PatchStream(client, [(vol, vol)], plan.train, **kw).batches()])
    val_y = np.concatenate([b.inputs for b in PatchStream(client, [(vol, vol)], plan.val, **kw).batches()])
    assert train_y.shape == (40, 1, 16, 16, 16)
    assert train_y.max() < plan.val_start[0] <= val_y.min()


def test_plan_is_deterministic_by_seed():
    kw = dict(patch_size=16, n_train=50, n_val=5, val_fraction=0.1)
    a = plan_patches([SHAPE, SHAPE], seed=3, **kw)
    b = plan_patches([SHAPE, SHAPE], seed=3, **kw)
    c = plan_patches([SHAPE, SHAPE], seed=4, **kw)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    assert not np.array_equal(a.train, c.train)
    assert np.array_equal(a.train[a.train[:, 0] == 0], plan_patches([SHAPE], seed=3, **kw).train)


def test_mask_restricts_patch_centres(client, tmp_path, caplog):
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[8:24, 4:40, 30:60] = 1
    coarse = coarse_mask(client, _zarr(tmp_path / "mask.zarr", mask), step=4)
    assert coarse.values.shape == (8, 16, 16)
    with caplog.at_level(logging.WARNING):
        plan = plan_patches([SHAPE], patch_size=16, n_train=300, n_val=10, val_fraction=0.1, seed=0, masks=[coarse])
    assert "the mask selects nothing in the validation slab; validating unmasked" in caplog.text
    centres = plan.train[:, 1:] + 8
    assert mask[tuple(centres.T)].mean() > 0.9  # centres jitter within a grid cell of a masked point
    assert (np.abs(centres - [16, 22, 45]) <= [8 + 2, 18 + 2, 15 + 2]).all()
    empty = CoarseMask(np.zeros((8, 16, 16), dtype=bool), 4)
    with pytest.raises(TomocareError, match="pair 0: the mask selects nothing in the training region"):
        plan_patches([SHAPE], patch_size=16, n_train=3, n_val=1, val_fraction=0.1, seed=0, masks=[empty])


def test_extraction_normalises_and_replaces_nonfinite():
    even = np.full(SHAPE, 5.0, dtype=np.float32)
    odd = even.copy()
    odd[0, 0, :3] = [np.nan, np.inf, -np.inf]
    items = np.array([[0, 0, 0, 0], [0, 16, 40, 48]])
    inputs, targets, nonfinite = extract_batch({0: (even, odd)}, items, 16, 1.0, 2.0, None)
    assert inputs.dtype == np.float32 and inputs.shape == (2, 1, 16, 16, 16)
    assert (inputs == 2.0).all()
    assert nonfinite == 3
    assert (targets[0, 0, 0, 0, :3] == 0).all() and (targets[0, 0, 0, 0, 3:] == 2).all()


def test_stream_continues_the_same_sequence_from_any_batch(client, pair):
    plan = plan_patches([SHAPE], patch_size=16, n_train=10, n_val=2, val_fraction=0.1, seed=0)
    stream = PatchStream(client, [pair], plan.train, patch_size=16, mean=10, std=3, batch_size=4, augment=Augment())
    gen = stream.batches()
    first = [next(gen) for _ in range(5)]  # crosses two passes over the 10 patches
    gen.close()
    gen = stream.batches(start=3)
    again = next(gen)
    gen.close()
    assert np.array_equal(first[3].inputs, again.inputs) and np.array_equal(first[3].targets, again.targets)
    rows = np.concatenate([stream.batch_items(b) for b in range(5)])
    assert sorted(map(tuple, rows[:10])) == sorted(map(tuple, plan.train))  # a pass is a permutation


def test_dataset_stats(client, pair):
    both = np.stack([pair[0][:], pair[1][:]]).astype(np.float64)
    mean, std = dataset_stats(client, [pair])
    assert mean == pytest.approx(both.mean(), rel=1e-6) and std == pytest.approx(both.std(), rel=1e-6)


# ---------------------------------------------------------------- augmentation and the missing wedge


def _missing_wedge(p: int) -> np.ndarray:
    """Fourier region of a ±60° tilt series about y: |kz| > tan(60°)·|kx|, for every ky."""
    kz, _, kx = np.meshgrid(*(np.fft.fftfreq(p),) * 3, indexing="ij")
    return np.abs(kz) > np.tan(np.radians(60)) * np.abs(kx)


@pytest.mark.parametrize("rot90", [False, True])
def test_augmentation_keeps_the_missing_wedge_unless_rotating(rot90):
    p = 16
    wedge = _missing_wedge(p)
    rng = np.random.default_rng(0)
    even, odd = (np.real(np.fft.ifftn(np.fft.fftn(rng.standard_normal((p, p, p))) * ~wedge)) for _ in range(2))
    params = Augment(rot90=rot90).draw(rng, 64)
    leaked = []
    for row in params:
        inp, tgt = augment(even, odd, row)
        source = odd if row[3] else even  # the input is the (flipped, turned) odd half when swapped
        assert np.array_equal(np.sort(inp, axis=None), np.sort(source, axis=None))
        leaked.append(np.abs(np.fft.fftn(inp))[wedge].max() / np.abs(np.fft.fftn(inp)).max())
    if rot90:
        assert max(leaked) > 0.1  # quarter turns move the wedge: the test can see it
    else:
        assert max(leaked) < 1e-10
        assert params[:, :4].any(axis=0).all() and not params[:, 4].any()  # flips on all axes, swaps, no turns


def test_default_augmentation_is_flips_and_swaps_only():
    cfg = TrainConfig()
    assert (cfg.flip, cfg.swap, cfg.rot90) == (True, True, False)


# ---------------------------------------------------------------- bad inputs


def test_bad_pairs_raise_one_line_errors(pair, tmp_path):
    small = _zarr(tmp_path / "small.zarr", np.zeros((8, 64, 64), np.float32))
    other = _zarr(tmp_path / "other.zarr", np.zeros((32, 64, 48), np.float32))
    cases = [
        ([(small, small)], "patch size 16 is larger than the volume (8, 64, 64)"),
        ([(pair[0], other)], "even (32, 64, 64) and odd (32, 64, 48) halves differ in shape"),
        ([(np.zeros((32, 24, 32)),) * 2], "cannot hold a training patch and a validation slab"),
        ([], "no even/odd pairs"),
    ]
    for pairs, message in cases:
        with pytest.raises(TomocareError, match=re.escape(message)) as err:
            check_pairs(pairs, 16)
        assert "\n" not in str(err.value)
    assert str(tmp_path / "small.zarr") in str(pytest.raises(TomocareError, check_pairs, [(small, small)], 16).value)
    with pytest.raises(TomocareError, match="mask shape"):
        check_pairs([pair], 16, masks=[other])


def test_train_refuses_bad_input_before_writing(client, pair, tmp_path):
    with pytest.raises(TomocareError, match="larger than the volume"):
        train([pair], tmp_path / "m", config=_config(patch_size=64), client=client)
    assert not (tmp_path / "m").exists()
    with pytest.raises(TomocareError, match="no checkpoint.pt to resume from"):
        train([pair], tmp_path / "m", config=_config(), client=client, resume=True)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "notes.txt").write_text("mine")
    with pytest.raises(TomocareError, match="exists"):
        train([pair], tmp_path / "m", config=_config(), client=client)
    with pytest.raises(TomocareError, match="not a tomocare training directory"):
        train([pair], tmp_path / "m", config=_config(), client=client, overwrite=True)
    assert (tmp_path / "m" / "notes.txt").read_text() == "mine"
    (tmp_path / "aborted").mkdir()
    (tmp_path / "aborted" / "train_config.json").write_text("{}")  # stopped before its first checkpoint
    train([pair], tmp_path / "aborted", config=_config(max_steps=1, n_conv=1), client=client, mean=10.0, std=3.6)
    assert Model.read(tmp_path / "aborted").network().config.n_conv == 1  # [train] n_conv reaches the network
    with pytest.raises(ValueError, match="multiple of 2\\*\\*depth"):
        _config(patch_size=18)


# ---------------------------------------------------------------- the loop


def test_training_loss_falls_and_outputs_are_written(client, pair, tmp_path):
    out = train([pair], tmp_path / "model", config=_config(), client=client, voxel_size=10.0)
    history = json.loads((out / "history.json").read_text())
    assert [h["step"] for h in history] == [10, 20, 30, 40]
    assert history[-1]["train_loss"] < 0.95 * history[0]["train_loss"]
    assert min(h["val_loss"] for h in history) < 0.95 * history[0]["val_loss"]
    for name in ("history.csv", "loss.png", "checkpoint.pt", "train_config.json", "model.json"):
        assert (out / name).is_file()
    info = Model.read(out)
    net = info.network()
    assert (info.patch_size, info.voxel_size, info.halo) == (16, 10.0, net.halo)
    assert info.mean == pytest.approx(10.0, abs=0.3) and info.std == pytest.approx(3.6, rel=0.1)
    assert info.extra["training"]["best_val_loss"] == min(h["val_loss"] for h in history)
    # the best, kept
    assert info.extra["training"]["best_epoch"] == 1 + int(np.argmin([h["val_loss"] for h in history]))
    assert info.trained_on == (str(tmp_path / "even.zarr"), str(tmp_path / "odd.zarr"))


def test_resume_continues_from_the_checkpoint(client, pair, tmp_path):
    norm = dict(mean=10.0, std=3.6)
    # a schedule that does not depend on max_steps, so 20 + 10 steps equal 30
    config = dict(schedule="plateau", precision="fp32")
    whole = train([pair], tmp_path / "whole", config=_config(max_steps=30, **config), client=client, **norm)
    part = train([pair], tmp_path / "part", config=_config(max_steps=20, **config), client=client, **norm)
    assert [h["step"] for h in json.loads((part / "history.json").read_text())] == [10, 20]
    with pytest.raises(TomocareError, match="cannot resume with different settings: lr"):
        train([pair], part, config=_config(max_steps=30, lr=1e-3, **config), client=client, resume=True)
    train([pair], part, config=_config(max_steps=30, **config), client=client, resume=True)
    resumed = json.loads((part / "history.json").read_text())
    expected = json.loads((whole / "history.json").read_text())
    assert [h["step"] for h in resumed] == [10, 20, 30] and [h["epoch"] for h in resumed] == [1, 2, 3]
    for got, want in zip(resumed, expected):  # same data, same order, same optimiser state
        assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-4)
        assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-4)
    assert torch.load(part / "checkpoint.pt", weights_only=True)["state"]["step"] == 30


def test_plateau_reduces_lr_then_stops_early(client, pair, tmp_path):
    config = _config(lr=1e-7, min_lr=0, lr_patience=1, patience=2, max_steps=100, schedule="plateau")  # lr too small
    out = train([pair], tmp_path / "m", config=config, client=client, mean=10.0, std=3.6)
    history = json.loads((out / "history.json").read_text())
    assert [h["lr"] for h in history] == [1e-7, 1e-7, 5e-8]
    info = Model.read(out)
    info.network()  # the weights load
    training = info.extra["training"]
    assert training["best_epoch"] == 1 and training["stop_reason"].startswith("converged")  # the first is the best


def test_time_limit_stops_cleanly_and_saves(client, pair, tmp_path):
    out = train([pair], tmp_path / "m", config=_config(time_limit=1e-3), client=client, mean=10.0, std=3.6)
    history = json.loads((out / "history.json").read_text())
    assert len(history) == 1 and history[0]["step"] == 1
    Model.read(out).network()
