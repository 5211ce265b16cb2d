"""A newcomer's first hour (issue 17, item 6): what the commands print and promise is readable and true."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import write_test_mrc

from tomocare.cli import main


@pytest.fixture
def volume(tmp_path):
    rng = np.random.default_rng(0)
    return write_test_mrc(tmp_path / "v.mrc", rng.normal(size=(24, 32, 32)).astype(np.float32))


def test_dry_run_is_a_short_summary_and_json_on_request(tmp_path, volume, capsys):
    args = ["baseline", "gaussian", str(volume), str(tmp_path / "o.zarr"), "-p", "sigma=1.5", "--dry-run"]
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) <= 8 and not lines[0].startswith("{")
    text = "\n".join(lines)
    for expected in ("blocks: 1 of 24 x 32 x 32", "halo 6 x 6 x 6", "voxels computed per voxel written",
                     "memory per task", "filter gaussian (sigma=1.5)", f"inputs: {volume}", "o.zarr (float32"):
        assert expected in text, expected
    assert main([*args, "--json"]) == 0
    described = json.loads(capsys.readouterr().out)
    assert described["blocks"] == 1 and described["operator"]["method"] == "gaussian"
    assert main(args[:-1] + ["--json"]) == 2  # --json without --dry-run
    assert "--json goes with --dry-run" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()


def _click_commands() -> dict:
    import typer

    from tomocare.cli import app

    return typer.main.get_command(app).commands  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(_click_commands()))
def test_each_command_opens_with_a_short_complete_sentence(name):
    """The top-level help lists each command by the first paragraph of its help, cut at ~45 characters:
    that paragraph is one sentence that fits."""
    command = _click_commands()[name]
    first = command.help.split("\n\n")[0].strip()
    assert first.endswith(".") and "\n" not in first, first
    assert command.get_short_help_str(limit=45) == first


def test_top_level_help_cuts_nothing(capsys):
    assert main(["--help"]) == 0
    listing = capsys.readouterr().out.split("Commands:")[1]
    assert "..." not in listing


def test_info_shows_statistics_as_its_help_says(volume, capsys):
    assert main(["info", "--help"]) == 0
    assert "--stats" in " ".join(capsys.readouterr().out.split())
    assert main(["info", str(volume)]) == 0
    assert "mean" not in capsys.readouterr().out  # an MRC file stores none: not read unless asked
    assert main(["info", "--stats", str(volume)]) == 0
    line = capsys.readouterr().out.strip()
    data = np.random.default_rng(0).normal(size=(24, 32, 32)).astype(np.float32)
    assert f"mean {data.mean():.4g}, std {data.std():.4g}, min {data.min():.4g}, max {data.max():.4g}" in line
    assert main(["info", "--stats", "--json", str(volume)]) == 0
    assert json.loads(capsys.readouterr().out)[0]["stats"]["count"] == data.size


def test_baseline_help_lists_every_parameter_with_its_default_and_unit(capsys):
    from dataclasses import fields

    from tomocare.baselines import FILTERS

    assert main(["baseline", "--help"]) == 0
    text = capsys.readouterr().out
    for method, cls in FILTERS.items():
        assert f"{method}:" in text
        for f in fields(cls):
            shown = "auto" if f.default is None else f"{f.default:g}"
            line = next((ln for ln in text.splitlines() if f" {f.name}={shown} " in ln), None)
            assert line is not None, (method, f.name)
            assert f.metadata["help"] in line  # the meaning: unit and range
    assert "cutoff=0.3" in text and "fraction of Nyquist" in text


def test_evaluate_a_volume_against_itself_says_identical_without_a_warning(tmp_path, capsys, recwarn):
    rng = np.random.default_rng(1)
    same = write_test_mrc(tmp_path / "s.mrc", rng.normal(size=(64, 64, 64)).astype(np.float32))
    for fit in ("--fit", "--no-fit"):
        out = tmp_path / f"ev{fit}"
        assert main(["evaluate", str(same), str(same), "--reference", str(same), fit, "--out", str(out)]) == 0
        captured = capsys.readouterr()
        assert "warning" not in captured.err and not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
        assert captured.out.count("s.mrc vs s.mrc: identical to the reference (MSE 0)") == 2, captured.out
        assert "inf" not in captured.out and "nan" not in captured.out
        assert json.loads((out / "metrics.json").read_text())["reference"]["A"]["whole"]["psnr_db"] is None


def test_psnr_of_identical_volumes_is_infinite_not_an_error():
    from tomocare.evaluate.metrics import psnr

    x = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    assert psnr(x, x) == float("inf")


@pytest.mark.parametrize("command", ["train", "denoise"])
def test_device_option_is_a_checked_setting(tmp_path, volume, capsys, command):
    argv = {"train": ["train", "--even", str(volume), "--odd", str(volume)],
            "denoise": ["denoise", str(tmp_path)]}[command]
    assert main([command, "--help"]) == 0
    assert "--device" in capsys.readouterr().out
    assert main([*argv, "-o", str(tmp_path / "out"), "--device", "gpu"]) == 2  # before any cluster starts
    err = capsys.readouterr().err.strip()
    assert err == "error: --device: unknown device 'gpu' (use auto, cpu, cuda or cuda:N)"
    if not __import__("torch").cuda.is_available():
        assert main([*argv, "-o", str(tmp_path / "out"), "--device", "cuda:0"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_device_in_a_settings_file_is_checked_too(tmp_path, capsys):
    settings = tmp_path / "s.toml"
    settings.write_text('[train]\ndevice = "cuda:x"\n')
    assert main(["config", str(settings)]) == 2
    assert "train.device: unknown device 'cuda:x'" in capsys.readouterr().err


def test_the_training_plan_names_the_device():
    import torch

    from tomocare.nn.device import device_name

    assert device_name(torch.device("cpu")) == "cpu"
    if torch.cuda.is_available():
        assert device_name(torch.device("cuda")).startswith("cuda:0 (")


@pytest.mark.parametrize(("mask", "expected"), [
    ("missing", "missing.mrc: no such file"),
    ("small", "small.mrc: mask shape (12, 32, 32) differs from v's (24, 32, 32)"),
    ("zero", "zero.mrc: the mask is all zero"),
    ("two", "give one --mask per tomogram: 1 to train on, 2 masks"),
])
def test_a_bad_training_mask_is_one_line(tmp_path, volume, capsys, mask, expected):
    shape = (24, 32, 32)
    write_test_mrc(tmp_path / "small.mrc", np.ones((12, 32, 32), np.uint8))
    write_test_mrc(tmp_path / "zero.mrc", np.zeros(shape, np.uint8))
    write_test_mrc(tmp_path / "ok.mrc", np.ones(shape, np.uint8))
    masks = {"two": ["ok.mrc", "ok.mrc"]}.get(mask, [f"{mask}.mrc"])
    argv = ["train", "--even", str(volume), "--odd", str(volume), "-o", str(tmp_path / "m")]
    assert main(argv + [a for m in masks for a in ("--mask", str(tmp_path / m))]) == 2  # before any cluster starts
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0], err
    assert not (tmp_path / "m").exists()


def test_the_training_mask_reaches_the_sampler(tmp_path, volume, monkeypatch):
    import contextlib

    import tomocare.cli.train as cli_train
    import tomocare.train.loop as loop

    given = {}
    monkeypatch.setattr(cli_train, "open_client", lambda *a: contextlib.nullcontext())
    monkeypatch.setattr(loop, "train", lambda pairs, out, **kw: given.update(kw, pairs=pairs))
    mask = np.zeros((24, 32, 32), np.uint8)
    mask[4:20, 8:24, 8:24] = 1
    path = write_test_mrc(tmp_path / "mask.mrc", mask)
    assert main(["train", "--even", str(volume), "--odd", str(volume), "-o", str(tmp_path / "m"),
                 "--mask", str(path)]) == 0
    (got,) = given["masks"]
    assert np.array_equal(np.asarray(got[:]), mask) and len(given["pairs"]) == 1
