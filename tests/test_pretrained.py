"""Models for data of any scale (per-volume normalisation), fine-tuning (--init) and the shipped models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import zarr
from helpers import write_test_mrc
from safetensors.torch import load_file

from tomocare.cli import main
from tomocare.errors import TomocareError
from tomocare.io.mrc import open_mrc
from tomocare.model import MODEL_JSON, WEIGHTS, Model, store_half
from tomocare.pretrained import PACKAGED, resolve
from tomocare.simulate import simulate_dataset

TINY = ["--depth", "1", "--channels", "4", "--patch-size", "16", "--batch-size", "4", "--n-patches", "64",
        "--time-limit", "60"]


@pytest.fixture(scope="module")
def data(tmp_path_factory, client):
    """A small simulated tomogram (even, odd, clean) and a supervised model normalised per volume."""
    d = tmp_path_factory.mktemp("pretrained")
    (row,) = simulate_dataset(d / "sim", n_tomograms=1, shape=(32, 64, 64), snr=0.3, seed=8, chunks=32)
    settings = d / "per_volume.toml"
    settings.write_text('[train]\nnormalization = "per-volume"\nsteps_per_epoch = 10\nn_val_patches = 8\n'
                        'precision = "fp32"\nthreads = 1\n')
    model = d / "model"
    assert main(["train", "--input", row["even"], "--target", row["clean"], "--out", str(model), "--config",
                 str(settings), "--max-steps", "20", *TINY, "--scheduler", client.scheduler.address]) == 0
    return {k: Path(v) for k, v in row.items() if k in ("even", "odd", "clean")} | {"model": model, "dir": d}


def _predict(model: str, volume: Path, out: Path, client) -> np.ndarray:
    assert main(["predict", "--model", model, "--input", str(volume), "--out", str(out), "--chunks", "32",
                 "--scheduler", client.scheduler.address]) == 0
    return np.asarray(zarr.open_group(str(out), mode="r")["0"][:])


def test_per_volume_model_follows_the_data_scale(data, client, tmp_path):
    """A per-volume model gives a·f(x) + b for the input a·x + b: it needs no data of the training scale."""
    meta = json.loads((data["model"] / MODEL_JSON).read_text())
    assert meta["normalization"]["per_volume"] is True
    assert Model.read(data["model"]).per_volume
    even = np.asarray(open_mrc(data["even"])[:], dtype=np.float32)
    scaled = write_test_mrc(tmp_path / "scaled.mrc", 250 * even + 40, voxel_size=(10.0,) * 3)
    plain = _predict(str(data["model"]), data["even"], tmp_path / "a.zarr", client)
    rescaled = _predict(str(data["model"]), scaled, tmp_path / "b.zarr", client)
    np.testing.assert_allclose(rescaled, 250 * plain + 40, rtol=0, atol=2e-3 * 250 * plain.std())


def test_dataset_normalised_models_read_as_before(data, tmp_path):
    """A model.json without per_volume (older files) is normalised by its training data's statistics."""
    old = tmp_path / "old"
    shutil.copytree(data["model"], old)
    meta = json.loads((old / MODEL_JSON).read_text())
    del meta["normalization"]["per_volume"]
    (old / MODEL_JSON).write_text(json.dumps(meta))
    assert not Model.read(old).per_volume
    meta["normalization"]["per_volume"] = "yes"
    (old / MODEL_JSON).write_text(json.dumps(meta))
    with pytest.raises(TomocareError, match="per_volume must be true or false"):
        Model.read(old)


def test_init_fine_tunes_from_the_model(data, client, tmp_path):
    """train --init M on even/odd halves: M's network and normalisation, its weights as the start."""
    start = load_file(str(data["model"] / WEIGHTS))
    out = tmp_path / "tuned"
    assert main(["train", "--even", str(data["even"]), "--odd", str(data["odd"]), "--init", str(data["model"]),
                 "--out", str(out), "--max-steps", "2", "--patch-size", "16", "--batch-size", "4", "--n-patches",
                 "16", "--time-limit", "60", "--scheduler", client.scheduler.address]) == 0
    tuned = Model.read(out)
    assert tuned.architecture == Model.read(data["model"]).architecture  # depth 1, 4 channels: the model's
    assert tuned.per_volume and tuned.extra["config"]["init"] == str(data["model"])
    weights = load_file(str(out / WEIGHTS))
    moved = max(float((weights[k] - start[k]).abs().max()) for k in start)
    spread = max(float(v.abs().max()) for v in start.values())
    assert 0 < moved < 0.1 * spread  # two small steps away from the start, not a fresh network


def test_init_refuses_a_different_network_in_one_line(data, tmp_path, capsys):
    assert main(["train", "--even", str(data["even"]), "--odd", str(data["odd"]), "--init", str(data["model"]),
                 "--channels", "8", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "fine-tuning keeps the model's network" in err and "base_channels 8" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_names_resolve_to_shipped_models_and_paths_stay_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("./general") == Path("general") and resolve(tmp_path / "m") == tmp_path / "m"
    for name in PACKAGED:
        assert resolve(name).parent == Path(__import__("tomocare.pretrained").pretrained.__file__).parent


def test_shipped_general_model_is_small_and_documented():
    model = Model.read(resolve("general"))
    size = sum(p.stat().st_size for p in model.path.iterdir())
    assert size < 2**20, size  # float16 weights (store_half)
    assert model.per_volume and model.ndim == 3
    card = model.extra["card"]
    assert {"trained_on", "not_for", "command"} <= set(card)


def test_model_general_missing_is_one_line(tmp_path, monkeypatch, capsys):
    import tomocare.pretrained as pretrained

    monkeypatch.setattr(pretrained, "HERE", tmp_path)
    assert main(["predict", "--model", "general", "--input", str(tmp_path / "x.mrc"), "--out",
                 str(tmp_path / "o.zarr")]) == 2
    err = capsys.readouterr().err
    assert "shipped model 'general' is missing" in err and len(err.strip().splitlines()) == 1


def test_store_half_keeps_the_model(data, tmp_path):
    """Weights stored as float16: half the file, the hash recorded again, the same predictions to ~1e-3."""
    half = tmp_path / "half"
    shutil.copytree(data["model"], half)
    store_half(half)
    assert (half / WEIGHTS).stat().st_size < 0.6 * (data["model"] / WEIGHTS).stat().st_size
    even = np.asarray(open_mrc(data["even"])[:], dtype=np.float32)
    full, small = Model.read(data["model"]), Model.read(half)
    a, b = full.predict_whole(even), small.predict_whole(even)
    np.testing.assert_allclose(b, a, atol=1e-3 * float(even.std()))  # a tiny net: near-flat output
