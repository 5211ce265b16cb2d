"""Model directories: round trip, and one-line TomocareErrors for anything broken."""

from __future__ import annotations

import json

import pytest
import torch

import tomocare
from tomocare.errors import TomocareError
from tomocare.nn import UNet
from tomocare.train import model_file
from tomocare.train.model_file import load_model, save_model


def _save(directory, net: UNet) -> None:
    save_model(
        directory,
        net,
        mean=1.5,
        std=0.25,
        voxel_size=13.48,
        patch_size=32,
        trained_on=["a_even.zarr", "a_odd.zarr"],
        extra={"best_val_loss": 0.1},
    )


@pytest.fixture
def net() -> UNet:
    torch.manual_seed(0)
    return UNet(depth=2, base_channels=4, upsample="linear")


@pytest.fixture
def saved(tmp_path, net):
    _save(tmp_path / "model", net)
    return tmp_path / "model"


def test_round_trip(saved, net):
    loaded, info = load_model(saved)
    assert not loaded.training
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))
    assert info.config == net.config()
    assert (info.mean, info.std, info.voxel_size, info.patch_size) == (1.5, 0.25, 13.48, 32)
    assert (info.halo, info.receptive_field, info.downsampling_factor) == (net.halo, net.receptive_field, 4)
    assert info.version == tomocare.__version__
    assert info.trained_on == ["a_even.zarr", "a_odd.zarr"]
    assert info.extra == {"best_val_loss": 0.1}
    assert sorted(p.name for p in saved.iterdir()) == ["model.json", "weights.safetensors"]


def test_save_into_existing_directory_keeps_other_files(saved, net):
    (saved / "checkpoint.pt").write_bytes(b"keep me")
    torch.nn.init.zeros_(net.head.weight)
    _save(saved, net)
    loaded, _ = load_model(saved)
    assert torch.equal(loaded.head.weight, net.head.weight)
    assert (saved / "checkpoint.pt").read_bytes() == b"keep me"
    assert not [p for p in saved.iterdir() if p.name.startswith(".")]


def test_torch_weights_fallback(tmp_path, net, monkeypatch):
    monkeypatch.setattr(model_file, "_safetensors", None)
    _save(tmp_path / "m", net)
    assert (tmp_path / "m" / "weights.pt").is_file()
    loaded, _ = load_model(tmp_path / "m")
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), net.state_dict().values()))


def _edit_json(directory, **changes) -> None:
    path = directory / "model.json"
    meta = json.loads(path.read_text())
    meta.update(changes)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "model.json").write_text("{not json"), "unreadable model description"),
        (lambda d: (d / "weights.safetensors").unlink(), "missing weights file"),
        (lambda d: _edit_json(d, format_version=99), "format_version 99 is not supported"),
        (lambda d: (d / "weights.safetensors").write_bytes(b"\0" * 64), "checksum differs"),
        (lambda d: _edit_json(d, architecture={"depth": 2, "base_channels": 8}), "incompatible or corrupt"),
        (lambda d: _edit_json(d, normalization={}), "incompatible or corrupt"),
        (lambda d: _edit_json(d, halo=4), "disagree with the network"),
    ],
)
def test_broken_models_raise_one_line_errors(saved, damage, message):
    damage(saved)
    with pytest.raises(TomocareError, match=message) as err:
        load_model(saved)
    assert str(saved) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_model(tmp_path):
    for target in (tmp_path, tmp_path / "nowhere"):
        with pytest.raises(TomocareError, match=f"{target}: not a tomocare model"):
            load_model(target)


def test_torch_weights_never_unpickle_code(tmp_path, net, monkeypatch):
    """A weights.pt holding an arbitrary object is refused, not executed."""
    monkeypatch.setattr(model_file, "_safetensors", None)
    _save(tmp_path / "m", net)
    weights = tmp_path / "m" / "weights.pt"
    torch.save({"evil": print}, weights)
    _edit_json(tmp_path / "m", weights_sha256=model_file._sha256(weights))
    with pytest.raises(TomocareError, match="incompatible or corrupt"):
        load_model(tmp_path / "m")
