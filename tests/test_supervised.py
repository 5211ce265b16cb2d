"""Supervised (paired) training: input -> target, never swapped, through the Noise2Noise machinery."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import write_test_mrc
from pydantic import ValidationError

import tomocare.cli.train as cli_train
import tomocare.train.loop as loop
from tomocare.cli import main
from tomocare.evaluate.metrics import psnr
from tomocare.io.mrc import open_mrc
from tomocare.simulate import simulate_dataset
from tomocare.train import TrainConfig
from tomocare.train.loop import objective
from tomocare.train.sampler import Augment, extract_batch

SHAPE = (32, 64, 64)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory, client):
    """One small simulated tomogram: its even half (a noisy input) and its clean volume."""
    d = tmp_path_factory.mktemp("sim")
    # 128 along y and x: at 64 the validation slab held structure the training region lacked
    (row,) = simulate_dataset(d, n_tomograms=1, shape=(32, 128, 128), snr=0.3, seed=5, chunks=32)
    return Path(row["even"]), Path(row["clean"])


# ---------------------------------------------------------------- settings


def test_mode_and_loss_settings():
    assert (TrainConfig().mode, TrainConfig().swap, TrainConfig().loss) == ("noise2noise", True, "mse")
    cfg = TrainConfig(mode="supervised", loss="l1")
    assert cfg.swap is False and cfg.roles == ("input", "target")
    assert TrainConfig.model_validate(cfg.model_dump()) == cfg  # saved and resumed as it was
    assert TrainConfig(mode="supervised", swap=False).swap is False
    with pytest.raises(ValidationError, match="swap exchanges input and target"):
        TrainConfig(mode="supervised", swap=True)
    for bad in ({"mode": "n2v"}, {"loss": "huber"}):
        with pytest.raises(ValidationError):
            TrainConfig(**bad)
    assert objective(cfg) | {"validation_loss": ""} == {
        "mode": "supervised", "loss": "l1", "pairs": "input -> target (never swapped)", "validation_loss": ""}
    assert "against the target" in objective(cfg)["validation_loss"]
    assert objective(TrainConfig())["mode"] == "noise2noise"


def test_supervised_augmentation_never_swaps():
    """The sampler's augmentation draws no swap in supervised mode: inputs come from the input volume."""
    cfg = TrainConfig(mode="supervised")
    aug = Augment(flip=cfg.flip, swap=cfg.swap, rot90=cfg.rot90)
    params = aug.draw(np.random.default_rng(0), 1000)
    assert not params[:, 3].any() and params[:, :3].any(axis=0).all()  # flips on every axis, never a swap
    rng = np.random.default_rng(1)
    inp, tgt = rng.standard_normal((2, *SHAPE)).astype(np.float32)
    items = np.array([[0, 0, 0, 0]] * 16)
    x, y, _ = extract_batch({0: (inp, tgt)}, items, 16, 0.0, 1.0, params[:16])
    for row, (a, b) in enumerate(zip(x[:, 0], y[:, 0])):
        axes = tuple(int(k) for k in np.flatnonzero(params[row, :3]))
        np.testing.assert_array_equal(a, np.flip(inp[:16, :16, :16], axes))
        np.testing.assert_array_equal(b, np.flip(tgt[:16, :16, :16], axes))
    # Noise2Noise keeps its swaps
    assert Augment(swap=TrainConfig().swap).draw(np.random.default_rng(0), 1000)[:, 3].any()


# ---------------------------------------------------------------- end to end


class _RecordingAugment(Augment):
    drawn: list[np.ndarray] = []

    def draw(self, rng, n):
        params = super().draw(rng, n)
        _RecordingAugment.drawn.append(params)
        return params


def test_supervised_training_beats_the_input(simulated, client, tmp_path, monkeypatch):
    """train --input NOISY --target CLEAN, then predict --input: closer to the clean volume than the input was."""
    noisy, clean = simulated
    monkeypatch.setattr(loop, "Augment", _RecordingAugment)
    _RecordingAugment.drawn.clear()
    settings = tmp_path / "settings.toml"
    settings.write_text("[train]\nlr = 1e-3\nsteps_per_epoch = 100\nn_val_patches = 64\nthreads = 2\n"
                        'precision = "fp32"\nschedule = "cosine"\n')
    model = tmp_path / "model"
    address = client.scheduler.address
    assert main(["train", "--input", str(noisy), "--target", str(clean), "--out", str(model), "--config",
                 str(settings), "--depth", "2", "--channels", "8", "--patch-size", "16", "--batch-size", "8",
                 "--n-patches", "400", "--max-steps", "600", "--time-limit", "90",
                 "--scheduler", address]) == 0
    meta = json.loads((model / "model.json").read_text())
    extra = meta["extra"]
    assert extra["objective"]["mode"] == "supervised" and extra["objective"]["loss"] == "mse"
    assert "against the target" in extra["objective"]["validation_loss"]
    assert extra["config"]["mode"] == "supervised" and extra["config"]["swap"] is False
    assert [Path(p).name for p in meta["trained_on"]] == [noisy.name, clean.name]
    assert json.loads((model / "train_config.json").read_text())["objective"]["mode"] == "supervised"
    assert _RecordingAugment.drawn and not any(p[:, 3].any() for p in _RecordingAugment.drawn)  # never swapped

    out = tmp_path / "pred.zarr"
    assert main(["predict", "--model", str(model), "--input", str(noisy), "--out", str(out), "--chunks", "32",
                 "--scheduler", address]) == 0
    pred = zarr.open_group(str(out), mode="r")["0"][:]
    truth, given = np.asarray(open_mrc(clean)[:]), np.asarray(open_mrc(noisy)[:])
    before, after = psnr(given, truth), psnr(pred, truth)
    print(f"PSNR against clean: input {before:.2f} dB, supervised prediction {after:.2f} dB")
    assert after > before + 3  # 28.9 -> 35.4..37.3 dB over 4 runs (at lr 3e-3, 300 steps: 31.5..37.3)


def test_cli_input_target_sets_supervised_mode_and_loss(simulated, client, tmp_path, monkeypatch):
    """--input/--target sets mode supervised; --loss reaches the settings; normalised by the inputs only."""
    noisy, clean = simulated
    seen = {}

    def fake_train(pairs, out, *, config, mean, std, names, **kwargs):
        seen.update(config=config, mean=mean, std=std, names=names, n=len(pairs))

    monkeypatch.setattr(loop, "train", fake_train)
    assert main(["train", "--input", str(noisy), "--target", str(clean), "--loss", "l1", "--out",
                 str(tmp_path / "m"), "--scheduler", client.scheduler.address]) == 0
    assert (seen["config"].mode, seen["config"].loss, seen["config"].swap, seen["n"]) == ("supervised", "l1", False, 1)
    given = np.asarray(open_mrc(noisy)[:], dtype=np.float64)
    if seen["mean"] is not None:  # from the header statistics: the input's, not the target's
        assert seen["mean"] == pytest.approx(given.mean(), rel=1e-3)
        assert seen["std"] == pytest.approx(given.std(), rel=1e-3)


# ---------------------------------------------------------------- command-line errors


@pytest.fixture
def no_cluster(monkeypatch):
    """The checks must come before any cluster starts."""
    def refuse(*args, **kwargs):
        raise AssertionError("a cluster was started")
    monkeypatch.setattr(cli_train, "open_client", refuse)


def _mrc(path, shape=(16, 32, 32), voxel_size=(3.3, 3.2, 3.1)) -> str:
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    return str(write_test_mrc(path, data, voxel_size=voxel_size))


@pytest.mark.parametrize(("argv", "message"), [
    (["--input", "{a}", "--target", "{small}"], "differs from its input"),
    (["--input", "{a}", "--target", "{coarse}"], "voxel size"),
    (["--input", "{a}", "--input", "{b}", "--target", "{b}"], "as many --input as --target volumes (got 2 and 1)"),
    (["--target", "{b}"], "as many --input as --target volumes (got 0 and 1)"),
    (["--input", "{a}", "--target", "{b}", "--even", "{a}", "--odd", "{b}"], "not both"),
    (["{dir}", "--input", "{a}", "--target", "{b}"], "not both"),
    (["--input", "{a}", "--target", "{b}", "--tilt-series", "{a}"], "not both"),
    (["--even", "{a}", "--odd", "{b}", "--config", "{supervised}"], "mode 'supervised' trains on --input/--target"),
    (["--input", "{a}", "--target", "{b}", "--config", "{swap}"], "swap exchanges input and target"),
    (["--input", "{a}", "--target", "{b}", "--loss", "huber"], "--loss"),
])
def test_cli_refuses_bad_supervised_input_in_one_line(argv, message, tmp_path, capsys, no_cluster):
    files = {"a": _mrc(tmp_path / "a.mrc"), "b": _mrc(tmp_path / "b.mrc"),
             "small": _mrc(tmp_path / "small.mrc", (16, 32, 16)),
             "coarse": _mrc(tmp_path / "coarse.mrc", voxel_size=(6.6, 6.4, 6.2)), "dir": str(tmp_path)}
    (tmp_path / "supervised.toml").write_text('[train]\nmode = "supervised"\n')
    (tmp_path / "swap.toml").write_text("[train]\nswap = true\n")
    files |= {"supervised": str(tmp_path / "supervised.toml"), "swap": str(tmp_path / "swap.toml")}
    assert main(["train", *(a.format(**files) for a in argv), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "m").exists()


def test_denoise_refuses_supervised_mode(tmp_path, capsys):
    (tmp_path / "supervised.toml").write_text('[train]\nmode = "supervised"\n')
    assert main(["denoise", str(tmp_path), "--out", str(tmp_path / "o"), "--config",
                 str(tmp_path / "supervised.toml")]) == 2
    err = capsys.readouterr().err
    assert "mode 'supervised'" in err and len(err.strip().splitlines()) == 1
