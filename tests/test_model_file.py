"""Model directories: round trip, and one-line TomocareErrors for anything broken."""

from __future__ import annotations

import json

import pytest
import torch

import tomocare
from tomocare.errors import TomocareError
from tomocare.model import Model, _sha256, save_model
from tomocare.nn import UNet, UNetConfig


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


def _load(directory):
    """The description and the network with its weights, as the engine's workers load them."""
    info = Model.read(directory)
    return info.network(), info


def test_round_trip(saved, net):
    loaded, info = _load(saved)
    assert not loaded.training
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(loaded(x), net.eval()(x))
    assert info.architecture == net.config and isinstance(info.architecture, UNetConfig)
    assert loaded.config == net.config
    assert (info.mean, info.std, info.voxel_size, info.patch_size) == (1.5, 0.25, 13.48, 32)
    assert (info.halo, info.receptive_field, info.factor) == (net.halo, net.receptive_field, 4)
    assert info.path == saved and info.ndim == 3
    assert info.version == tomocare.__version__
    assert info.trained_on == ("a_even.zarr", "a_odd.zarr")
    assert info.extra == {"best_val_loss": 0.1}
    assert sorted(p.name for p in saved.iterdir()) == ["model.json", "weights.safetensors"]


def test_save_into_existing_directory_keeps_other_files(saved, net):
    (saved / "checkpoint.pt").write_bytes(b"keep me")
    torch.nn.init.zeros_(net.head.weight)
    _save(saved, net)
    loaded, _ = _load(saved)
    assert torch.equal(loaded.head.weight, net.head.weight)
    assert (saved / "checkpoint.pt").read_bytes() == b"keep me"
    assert not [p for p in saved.iterdir() if p.name.startswith(".")]


def test_reading_the_description_loads_no_weights(saved, net):
    """The client plans from model.json alone; the weights (and their hash) are read by network()."""
    (saved / "weights.safetensors").write_bytes(b"\0" * 64)
    info = Model.read(saved)  # no error: the weights are not touched
    assert info.halo == net.halo
    with pytest.raises(TomocareError, match="checksum differs"):
        info.network()


def test_models_with_other_weights_files_are_refused(saved, net):
    """Only safetensors is read: a model naming another weights file (e.g. torch's, which unpickles) is refused."""
    torch.save(net.state_dict(), saved / "weights.pt")
    _edit_json(saved, weights="weights.pt", weights_sha256=_sha256(saved / "weights.pt"))
    with pytest.raises(TomocareError, match="unknown weights file 'weights.pt'") as err:
        Model.read(saved)
    assert str(saved / "model.json") in str(err.value) and "\n" not in str(err.value)


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
        (lambda d: _edit_json(d, architecture={"depth": 2, "base_channels": 8, "upsample": "linear"}),
         "incompatible or corrupt"),
        (lambda d: _edit_json(d, normalization={}), "incompatible or corrupt"),
        (lambda d: _edit_json(d, halo=4), "disagree with the network"),
        (lambda d: _edit_json(d, architecture={"depth": 7}),
         "architecture.depth: Input should be less than or equal to 6"),
        (lambda d: _edit_json(d, architecture={"base_channels": 3000}),
         "architecture.base_channels: .*less than or equal to 256"),
        (lambda d: _edit_json(d, architecture={"kernel_size": 4}), "architecture: .*kernel_size must be odd"),
        (lambda d: _edit_json(d, architecture={"ndim": 4}), "architecture.ndim: "),
        (lambda d: _edit_json(d, architecture={"depth": 2, "layers": 3}), "architecture.layers: Extra inputs"),
        (lambda d: _edit_json(d, architecture=[2, 16]), "model.json: architecture: "),
    ],
)
def test_broken_models_raise_one_line_errors(saved, damage, message):
    damage(saved)
    with pytest.raises(TomocareError, match=message) as err:
        _load(saved)
    assert str(saved) in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_model(tmp_path):
    for target in (tmp_path, tmp_path / "nowhere"):
        with pytest.raises(TomocareError, match=f"{target}: not a tomocare model"):
            Model.read(target)


def test_torch_weights_never_unpickle_code(saved, monkeypatch):
    """A weights.pt holding an arbitrary object is refused, never unpickled: not even opened."""
    weights = saved / "weights.pt"
    torch.save({"evil": print}, weights)
    _edit_json(saved, weights="weights.pt", weights_sha256=_sha256(weights))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load called on a model's weights"))
    with pytest.raises(TomocareError, match="unknown weights file") as err:
        _load(saved)
    assert "\n" not in str(err.value)
    # the same bytes under the safetensors name are refused as corrupt, not executed
    weights.replace(saved / "weights.safetensors")
    _edit_json(saved, weights="weights.safetensors", weights_sha256=_sha256(saved / "weights.safetensors"))
    with pytest.raises(TomocareError, match="incompatible or corrupt") as err:
        _load(saved)
    assert str(saved) in str(err.value) and "\n" not in str(err.value)
