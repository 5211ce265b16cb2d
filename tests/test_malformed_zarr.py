"""Damaged or foreign OME-Zarr metadata, generated case by case: a result (with a warning where a
stored attribute is dropped) or one line naming the store, never a traceback; the store unchanged."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
import torch
from helpers import write_test_mrc

from tomocare.cli import main
from tomocare.io.convert import convert_to_zarr
from tomocare.model import save_model
from tomocare.nn import UNet


def _group(meta):
    return meta["attributes"]


def _set(path_keys, value):
    def change(meta):
        target = meta
        for key in path_keys[:-1]:
            target = target[key]
        target[path_keys[-1]] = value
    return change


def _drop(path_keys):
    def change(meta):
        target = meta
        for key in path_keys[:-1]:
            target = target[key]
        del target[path_keys[-1]]
    return change


MS = ["attributes", "ome", "multiscales"]
DS = MS + [0, "datasets"]
SCALE = DS + [0, "coordinateTransformations", 0, "scale"]
TC = ["attributes", "tomocare"]
GROUP_CASES = {
    "no ome": _drop(["attributes", "ome"]),
    "ome string": _set(["attributes", "ome"], "x"),
    "no multiscales": _drop(MS),
    "multiscales empty": _set(MS, []),
    "multiscales string": _set(MS, "x"),
    "multiscales of numbers": _set(MS, [1]),
    "datasets empty": _set(DS, []),
    "datasets string": _set(DS, "abc"),
    "dataset path number": _set(DS + [0, "path"], 5),
    "dataset path outside": _set(DS + [0, "path"], "../elsewhere"),
    "dataset path missing level": _set(DS + [0, "path"], "7"),
    "no transforms": _set(DS + [0, "coordinateTransformations"], []),
    "scale short": _set(SCALE, [1.0, 1.0]),
    "scale strings": _set(SCALE, ["a", "b", "c"]),
    "scale zero": _set(SCALE, [0, 1, 1]),
    "scale negative": _set(SCALE, [-1, 1, 1]),
    "scale booleans": _set(SCALE, [True, True, True]),
    "scale nan": _set(SCALE, [float("nan"), 1, 1]),
    "stats empty": _set(TC + ["stats"], {}),
    "stats string": _set(TC + ["stats"], "x"),
    "stats strings": _set(TC + ["stats"], {k: "a" for k in ("mean", "std", "min", "max", "count", "nonfinite")}),
    "header empty": _set(TC + ["mrc_header"], {}),
    "header bad base64": _set(TC + ["mrc_header", "header_b64"], "!!not base64!!"),
    "header short voxel": _set(TC + ["mrc_header", "voxel_size"], [1.0]),
    "tomocare string": _set(TC, "x"),
}
ARRAY_CASES = {
    "dtype bool": _set(["data_type"], "bool"),
    "dtype complex": _set(["data_type"], "complex64"),
    "dtype int64": _set(["data_type"], "int64"),
    "shape zero": _set(["shape"], [0, 32, 32]),
    "shape huge": _set(["shape"], [10**6, 10**6, 10**6]),
    "shape 2-D": _set(["shape"], [32, 32]),
    "chunks zero": _set(["chunk_grid", "configuration", "chunk_shape"], [0, 16, 16]),
    "level is a group": lambda meta: meta.update({"node_type": "group"}) or [meta.pop(k, None) for k in list(meta)
                                                                             if k not in ("zarr_format", "node_type")],
}
CASES = [("group", n, f) for n, f in GROUP_CASES.items()] + [("array", n, f) for n, f in ARRAY_CASES.items()]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    d = tmp_path_factory.mktemp("zarr")
    data = np.random.default_rng(0).normal(size=(24, 32, 32)).astype(np.float32)
    convert_to_zarr(write_test_mrc(d / "v.mrc", data, voxel_size=(10.0,) * 3), d / "v.zarr", chunks=16, levels=1)
    torch.manual_seed(0)
    save_model(d / "model", UNet(depth=1, base_channels=2, residual=False), mean=0.0, std=1.0, voxel_size=10.0,
               patch_size=16, trained_on=["t"])
    return d


def _snapshot(path):
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where,name,change", CASES, ids=[f"{w}: {n}" for w, n, _ in CASES])
def test_damaged_metadata_one_line_or_a_sane_answer(tmp_path, store, capsys, where, name, change):
    path = tmp_path / "v.zarr"
    shutil.copytree(store / "v.zarr", path)
    meta_file = path / "zarr.json" if where == "group" else path / "0" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    changed = copy.deepcopy(meta)
    change(changed)
    meta_file.write_text(json.dumps(changed))
    before = _snapshot(path)
    for argv in (["info", str(path)], ["predict", "-m", str(store / "model"), "--input", str(path), "--out",
                                       str(tmp_path / "o.zarr"), "--dry-run"]):
        code = main(argv)
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err and code in (0, 2), (argv, captured.err)
        errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
        if code == 2:
            assert len(errors) == 1 and errors[0].startswith(f"error: {path}"), captured.err
        elif argv[0] == "info":
            assert "nan" not in captured.out.lower() and "voxel 10 x 10 x 10" in captured.out, captured.out
    assert _snapshot(path) == before
