"""The command line: help everywhere, one-line errors with exit code 2, outputs only when complete."""

from __future__ import annotations

import json
import subprocess
import sys

import mrcfile
import numpy as np
import pytest
from helpers import write_test_mrc

from tomocare.cli import app, main

COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)


@pytest.mark.parametrize("command", COMMANDS)
def test_help(command, capsys):
    assert main([command, "--help"]) == 0
    assert "Usage" in capsys.readouterr().out


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "tomocare.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("tomocare ")


def test_convert_export_info(tmp_path, client, capsys):
    data = np.arange(20 * 24 * 28, dtype=np.float32).reshape(20, 24, 28)
    src = write_test_mrc(tmp_path / "t.mrc", data)
    assert main(["convert", str(src), str(tmp_path / "t.zarr"), "--chunks", "16"]) == 0
    assert main(["export", str(tmp_path / "t.zarr"), str(tmp_path / "back.mrc")]) == 0
    with mrcfile.open(tmp_path / "back.mrc") as m:
        assert np.array_equal(m.data, data)
    assert main(["info", str(tmp_path / "t.zarr")]) == 0
    out = capsys.readouterr().out
    assert "shape (20, 24, 28)" in out and f"mean {data.mean():.4g}" in out  # the statistics convert stored


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["convert", "{tmp}/missing.mrc", "{tmp}/o.zarr"], "missing.mrc: no such file"),
        (["convert", "{tmp}/trunc.mrc", "{tmp}/o.zarr"], "trunc.mrc: truncated MRC file"),
        (["convert", "{tmp}/good.mrc", "{tmp}/exists.zarr"], "exists.zarr: output exists"),
        (["export", "{tmp}/good.mrc", "{tmp}/exists.zarr"], "exists.zarr: output exists"),
        (["convert", "{tmp}/good.mrc", "{tmp}/o.zarr", "--compression", "lzma"], "unknown compression"),
        (["info", "{tmp}/notadir"], "notadir: no such file"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path, capsys, args, expected):
    good = write_test_mrc(tmp_path / "good.mrc", np.zeros((8, 8, 8), np.float32))
    (tmp_path / "trunc.mrc").write_bytes(good.read_bytes()[:1100])
    (tmp_path / "exists.zarr").mkdir()
    before = sorted(p.name for p in tmp_path.iterdir())
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    assert expected in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_simulate_then_info_finds_the_pair(tmp_path, client, capsys):
    assert main(["simulate", str(tmp_path / "d"), "--n", "1", "--shape", "16", "32", "32", "--chunks", "16"]) == 0
    line = capsys.readouterr().out.strip()  # every number labelled
    assert line.startswith("tomo_000: seed ") and ", noise std " in line and f"even {tmp_path / 'd'}" in line
    names = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert names == ["tomo_000_clean.mrc", "tomo_000_even.mrc", "tomo_000_odd.mrc", "tomo_000_particles.csv"]
    assert main(["info", str(tmp_path / "d")]) == 0
    assert "1 pairs" in capsys.readouterr().out
    assert main(["simulate", str(tmp_path / "d"), "--n", "1", "--shape", "16", "32", "32"]) == 2
    assert "output exists" in capsys.readouterr().err


def test_config_example_is_valid_and_bad_values_are_one_line(tmp_path, capsys):
    example = tmp_path / "settings.toml"
    assert main(["config", "--example", "--out", str(example)]) == 0
    text = example.read_text()
    assert "[train]" in text and "[predict]" in text and "[denoise]" in text and "# edge of the cubic patches" in text
    capsys.readouterr()
    assert main(["config", str(example)]) == 0
    resolved = json.loads(capsys.readouterr().out)
    assert resolved["train"]["patch_size"] == 64 and resolved["predict"]["chunks"] == 128
    bad = tmp_path / "bad.toml"
    bad.write_text("[train]\npatch_size = 2\n[predict]\nsmoothing = 1\n")
    assert main(["config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.patch_size" in err and "predict.smoothing" in err
    assert main(["config", "--example", "--out", str(example)]) == 2  # exists: not overwritten


def _commands() -> list[str]:
    from tomocare.cli import app

    return sorted(c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands)


@pytest.mark.parametrize("command", _commands())
def test_usage_errors_are_two_lines_and_exit_2(command, capsys):
    assert main([command, "--no-such-option"]) == 2
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage: tomocare") and lines[1].startswith("error: ")
    assert "--no-such-option" in lines[1] and "Traceback" not in err


@pytest.mark.parametrize("argv", [
    ["denoise", "data"],  # --out missing
    ["predict", "--out", "o.zarr"],  # --model missing
    ["simulate", "d", "--n", "two"],  # not a number
    ["simulate", "d", "--shape", "64,128,128"],  # three numbers expected
    ["nosuch"],
])
def test_missing_options_and_bad_values_exit_2_without_traceback(argv, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(("usage:", "error:")) and "Traceback" not in err and len(err.strip().splitlines()) <= 2


@pytest.mark.parametrize(("command", "model", "fields"), [
    ("predict", "PredictSettings", ("chunks", "dtype", "precision", "orientations")),
    ("baseline", "PredictSettings", ("chunks",)),
    ("denoise", "PredictSettings", ("chunks",)),
    ("train", "TrainConfig", ("patch_size", "n_patches", "batch_size", "depth", "base_channels", "max_steps", "seed")),
])
def test_help_shows_the_defaults_of_the_settings(command, model, fields, capsys):
    from tomocare import config

    model = getattr(config, model)
    assert main([command, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # the help is wrapped
    for name in fields:
        assert f"[{model.model_fields[name].default}]." in text, name


@pytest.mark.parametrize(("argv", "expected"), [
    (["denoise", "{tmp}", "--out", "{tmp}/o", "--block", "0"], "--block: Input should be greater"),
    (["denoise", "{tmp}", "--out", "{tmp}/o", "--chunks", "4"], "--chunks: Input should be greater"),
    (["baseline", "median", "{tmp}/a.mrc", "{tmp}/o.zarr", "--block", "0"], "--block: Input should be greater"),
    (["baseline", "median", "{tmp}/a.mrc", "{tmp}/o.zarr", "--chunks", "4"], "--chunks: Input should be greater"),
])
def test_denoise_and_baseline_block_and_chunks_are_checked_as_settings(tmp_path, capsys, argv, expected):
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2  # before any cluster starts
    assert expected in _error_line(capsys)
