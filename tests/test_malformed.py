"""Malformed MRC headers, generated field by field: every command that reads a header answers with a
result or one line naming the file (exit 2), never a traceback or a hang, and never changes the file."""

from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest
from helpers import write_test_mrc

from tomocare.cli import main
from tomocare.testing import tiny_model

SHAPE = (16, 24, 20)
INT_FIELDS = {"nx": 0, "ny": 4, "nz": 8, "mode": 12, "mx": 28, "my": 32, "mz": 36, "ispg": 88, "nsymbt": 92}
FLOAT_FIELDS = {"cella.x": 40, "cella.y": 44, "cella.z": 48}
INT_VALUES = [0, -1, 1, 2, 7, 401, 2**31 - 1, -(2**31)]
FLOAT_VALUES = [0.0, -10.0, float("nan"), float("inf"), 1e-30, 3e38]
CASES = ([(name, "<i", off, v) for name, off in INT_FIELDS.items() for v in INT_VALUES]
         + [(name, "<f", off, v) for name, off in FLOAT_FIELDS.items() for v in FLOAT_VALUES]
         + [("ispg+mz", "stack", 0, v) for v in (0, 8, 16, 3)])  # volume stacks: mz 0, two volumes, one, odd


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("m") / "model", base_channels=2)


def _mutate(path, fmt: str, offset: int, value) -> None:
    data = bytearray(path.read_bytes())
    if fmt == "stack":  # a volume-stack space group with mz = value
        struct.pack_into("<i", data, INT_FIELDS["ispg"], 401)
        struct.pack_into("<i", data, INT_FIELDS["mz"], value)
    else:
        struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name,fmt,offset,value", CASES, ids=[f"{c[0]}={c[3]}" for c in CASES])
def test_malformed_header_one_line_or_a_sane_answer(tmp_path, model, capsys, name, fmt, offset, value):
    path = write_test_mrc(tmp_path / "v.mrc", np.random.default_rng(0).normal(size=SHAPE).astype(np.float32),
                          voxel_size=(10.0,) * 3)
    _mutate(path, fmt, offset, value)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    for argv in (["info", str(path)], ["predict", "-m", str(model), "--input", str(path), "--out",
                                       str(tmp_path / "o.zarr"), "--dry-run"]):
        code = main(argv)
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err and code in (0, 2), (argv, captured.err)
        if code == 2:
            lines = captured.err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(f"error: {path}"), captured.err
        elif argv[0] == "info":  # an answer: a shape that fits the file, a finite voxel size
            assert "nan" not in captured.out.lower() and "inf" not in captured.out.lower(), captured.out
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert not (tmp_path / "o.zarr").exists()


def test_compressed_mrc_is_refused_with_a_reason(tmp_path, capsys):
    import gzip

    raw = write_test_mrc(tmp_path / "raw.mrc", np.zeros(SHAPE, np.float32))
    (tmp_path / "v.mrc").write_bytes(gzip.compress(raw.read_bytes()))
    assert main(["info", str(tmp_path / "v.mrc")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "compressed" in err


def test_absurd_architectures_and_nested_files_are_refused_before_anything_is_built(tmp_path, model, capsys):
    import json
    import shutil

    bad = tmp_path / "big"
    shutil.copytree(model, bad)
    meta = json.loads((bad / "model.json").read_text())
    meta["architecture"]["base_channels"] = 3000
    (bad / "model.json").write_text(json.dumps(meta))
    volume = write_test_mrc(tmp_path / "v.mrc", np.zeros(SHAPE, np.float32), voxel_size=(10.0,) * 3)
    assert main(["predict", "-m", str(bad), "--input", str(volume), "--out", str(tmp_path / "o.zarr"),
                 "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"error: {bad / 'model.json'}: architecture"), err
    assert "base_channels: Input should be less than or equal to 256" in err
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["config", str(tmp_path / "deep.json")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_an_all_nan_input_is_not_a_success(tmp_path, model, capsys):
    volume = write_test_mrc(tmp_path / "v.mrc", np.full(SHAPE, np.nan, np.float32), voxel_size=(10.0,) * 3)
    assert main(["predict", "-m", str(model), "--input", str(volume), "--out", str(tmp_path / "o.zarr"),
                 "--workers", "1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no finite voxel" in errors[0]
    assert not (tmp_path / "o.zarr").exists() and not (tmp_path / ".o.zarr.partial").exists()
