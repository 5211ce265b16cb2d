"""The model directory: weights plus a JSON description; loading never executes code from it.

``model.json`` holds the architecture, the normalisation, the patch size, the halo arithmetic,
the voxel size and data it was trained on, the tomocare version that wrote it, a free-form
``extra`` (training summary) and the SHA-256 of the weights file, which is checked on load so a
half-written or mismatched pair is refused rather than silently used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import torch

import tomocare
from tomocare.errors import TomocareError
from tomocare.nn import UNet

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
SAFETENSORS = "weights.safetensors"
TORCH_WEIGHTS = "weights.pt"

try:
    import safetensors.torch as _safetensors
except ImportError:  # fall back to a weights-only torch state_dict
    _safetensors = None


@dataclass
class ModelInfo:
    """Everything ``model.json`` says about a trained network."""

    config: dict
    mean: float
    std: float
    voxel_size: float | None
    patch_size: int
    halo: int
    downsampling_factor: int
    receptive_field: int
    version: str
    trained_on: list[str]
    extra: dict = field(default_factory=dict)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_weights(net: UNet, directory: Path) -> str:
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    if _safetensors is not None:  # bytes, written here: save_file would create the file mode 0600
        (directory / SAFETENSORS).write_bytes(_safetensors.save(state))
        return SAFETENSORS
    torch.save(state, directory / TORCH_WEIGHTS)
    return TORCH_WEIGHTS


def save_model(
    directory: str | os.PathLike,
    net: UNet,
    *,
    mean: float,
    std: float,
    voxel_size: float | None,
    patch_size: int,
    trained_on: list[str],
    extra: dict | None = None,
) -> None:
    """Write ``net`` and its description to ``directory``.

    A new directory appears complete or not at all (written under a temporary name, then
    renamed). In an existing directory (e.g. a training run's, beside its checkpoint) each file
    is replaced atomically, weights first; the recorded hash catches a crash between the two.
    """
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    exists = directory.is_dir()
    tmp = (directory if exists else directory.parent) / f".{directory.name}.{uuid.uuid4().hex[:8]}.partial"
    tmp.mkdir()
    try:
        weights = _write_weights(net, tmp)
        meta = {
            "format_version": FORMAT_VERSION,
            "tomocare_version": tomocare.__version__,
            "architecture": net.config(),
            "weights": weights,
            "weights_sha256": _sha256(tmp / weights),
            "normalization": {"mean": float(mean), "std": float(std)},
            "patch_size": int(patch_size),
            "receptive_field": net.receptive_field,
            "halo": net.halo,
            "downsampling_factor": net.downsampling_factor,
            "voxel_size": None if voxel_size is None else float(voxel_size),
            "trained_on": [str(p) for p in trained_on],
            "extra": extra or {},
        }
        (tmp / MODEL_JSON).write_text(json.dumps(meta, indent=2) + "\n")
        if not exists:
            os.replace(tmp, directory)
            return
        for stale in {SAFETENSORS, TORCH_WEIGHTS} - {weights}:
            (directory / stale).unlink(missing_ok=True)
        os.replace(tmp / weights, directory / weights)
        os.replace(tmp / MODEL_JSON, directory / MODEL_JSON)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def update_extra(directory: str | os.PathLike, extra: dict) -> None:
    """Merge ``extra`` into the model's free-form ``extra`` (e.g. why training stopped); weights untouched."""
    from tomocare.io.atomic import write_atomic

    directory = Path(directory)
    meta = _read_meta(directory)
    meta["extra"] = {**meta.get("extra", {}), **extra}
    write_atomic(directory / MODEL_JSON, json.dumps(meta, indent=2) + "\n")


def _read_meta(directory: Path) -> dict:
    path = directory / MODEL_JSON
    if not path.is_file():
        raise TomocareError(f"{directory}: not a tomocare model (no {MODEL_JSON})")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise TomocareError(f"{path}: unreadable model description ({' '.join(str(err).split())})") from None
    if not isinstance(meta, dict):
        raise TomocareError(f"{path}: unreadable model description (not a JSON object)")
    if meta.get("format_version") != FORMAT_VERSION:
        raise TomocareError(
            f"{path}: model format_version {meta.get('format_version')!r} is not supported "
            f"(this tomocare {tomocare.__version__} reads {FORMAT_VERSION})"
        )
    _check_architecture(path, meta.get("architecture"))
    return meta


#: Largest networks a model file may describe: beyond them it is damaged or hostile, and building
#: it would exhaust memory or time before anything could be said.
ARCHITECTURE_LIMITS = {"depth": 6, "base_channels": 256, "n_conv": 4, "kernel_size": 7, "in_channels": 8, "out_channels": 8}


def _check_architecture(path: Path, architecture) -> None:
    if not isinstance(architecture, dict):
        raise TomocareError(f"{path}: no architecture")
    for key, limit in ARCHITECTURE_LIMITS.items():
        value = architecture.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= limit):
            raise TomocareError(f"{path}: architecture {key} {value!r} is outside 1..{limit}")


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.name == SAFETENSORS:
        if _safetensors is None:
            raise TomocareError(f"{path}: reading safetensors weights needs the 'safetensors' package")
        return _safetensors.load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[UNet, ModelInfo]:
    """Rebuild the network of a model directory, in eval mode on ``device``, and its description."""
    directory = Path(directory)
    meta = _read_meta(directory)
    path = directory / MODEL_JSON
    try:
        if meta["weights"] not in (SAFETENSORS, TORCH_WEIGHTS):
            raise TomocareError(f"{path}: unknown weights file {meta['weights']!r}")
        weights = directory / meta["weights"]
        if not weights.is_file():
            raise TomocareError(f"{directory}: missing weights file {weights.name}")
        if _sha256(weights) != meta["weights_sha256"]:
            raise TomocareError(f"{weights}: weights do not match {MODEL_JSON} (checksum differs)")
        net = UNet(**meta["architecture"])
        net.load_state_dict(_read_weights(weights))
        norm = meta["normalization"]
        info = ModelInfo(
            config=net.config(),
            mean=float(norm["mean"]),
            std=float(norm["std"]),
            voxel_size=meta["voxel_size"],
            patch_size=int(meta["patch_size"]),
            halo=int(meta["halo"]),
            downsampling_factor=int(meta["downsampling_factor"]),
            receptive_field=int(meta["receptive_field"]),
            version=str(meta["tomocare_version"]),
            trained_on=list(meta["trained_on"]),
            extra=dict(meta["extra"]),
        )
    except TomocareError:
        raise
    except Exception as err:  # a missing key, a bad architecture, weights of the wrong shape
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise TomocareError(f"{directory}: incompatible or corrupt model ({type(err).__name__}: {message})") from None
    if (info.halo, info.receptive_field) != (net.halo, net.receptive_field):
        raise TomocareError(
            f"{path}: recorded halo/receptive field {info.halo}/{info.receptive_field} disagree "
            f"with the network ({net.halo}/{net.receptive_field})"
        )
    return net.to(device).eval(), info
