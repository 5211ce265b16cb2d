"""A trained model: a directory of weights (safetensors) and a JSON description; loading never
executes code from it.

``model.json`` holds the architecture, the normalisation (the training data's mean and standard
deviation, or ``per_volume``: each input's own, as for the pretrained general model), the patch
size, the halo arithmetic, the voxel size and data it was trained on, the tomocare version that wrote it, a free-form
``extra`` (training summary) and the SHA-256 of the weights file. :class:`Model` is that
description as a value, read without touching the weights; :meth:`Model.network` loads them,
checking the hash, so a half-written or mismatched pair is refused rather than silently used.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save

import tomocare
from tomocare.errors import TomocareError
from tomocare.io.atomic import atomic_path, write_atomic
from tomocare.nn import UNet, UNetConfig

if TYPE_CHECKING:
    from tomocare.io.volume import Volume

FORMAT_VERSION = 1
MODEL_JSON = "model.json"
WEIGHTS = "weights.safetensors"


@dataclass(frozen=True)
class Model:
    """A trained network's description (``model.json``) and where it lives; reading it loads no weights."""

    path: Path
    architecture: UNetConfig
    mean: float  # normalisation: the network sees (x - mean) / std
    std: float
    voxel_size: float | None  # Å, of the training data
    patch_size: int
    halo: int  # voxels of context a tile needs on each side for its core to be exact
    factor: int  # down-sampling factor: tile sizes and offsets are multiples of it
    receptive_field: int
    version: str  # the tomocare version that wrote it
    trained_on: tuple[str, ...]
    weights_sha256: str
    per_volume: bool = False  # normalise each input by its own mean and std (``fitted``), not by mean/std above
    extra: dict = field(default_factory=dict, compare=False, hash=False)  # e.g. the training summary

    @classmethod
    def read(cls, directory: str | os.PathLike) -> Model:
        """The description of the model in ``directory``, checked; a bad one raises a one-line TomocareError."""
        directory = Path(directory)
        meta = _read_meta(directory)
        path = directory / MODEL_JSON
        try:
            if meta["weights"] != WEIGHTS:
                raise TomocareError(f"{path}: unknown weights file {meta['weights']!r} (this tomocare reads {WEIGHTS})")
            norm = meta["normalization"]
            model = cls(
                path=directory, architecture=UNetConfig.model_validate(meta["architecture"]),
                mean=float(norm["mean"]), std=float(norm["std"]),
                voxel_size=None if meta["voxel_size"] is None else float(meta["voxel_size"]),
                patch_size=int(meta["patch_size"]), halo=int(meta["halo"]), factor=int(meta["downsampling_factor"]),
                receptive_field=int(meta["receptive_field"]), version=str(meta["tomocare_version"]),
                trained_on=tuple(str(p) for p in meta["trained_on"]), weights_sha256=str(meta["weights_sha256"]),
                per_volume=_flag(norm.get("per_volume", False), "normalization.per_volume"), extra=dict(meta["extra"]),
            )
        except TomocareError:
            raise
        except ValidationError as err:
            problems = "; ".join(".".join(["architecture", *map(str, e["loc"])]) + f": {e['msg']}"
                                 for e in err.errors())
            raise TomocareError(f"{path}: {problems}") from None
        except Exception as err:  # a missing key, a value of the wrong type
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise TomocareError(
                f"{directory}: incompatible or corrupt model ({type(err).__name__}: {message})"
            ) from None
        net = UNet(model.architecture)  # no weights: its arithmetic only
        if ((model.halo, model.receptive_field, model.factor)
                != (net.halo, net.receptive_field, net.downsampling_factor)):
            raise TomocareError(
                f"{path}: recorded halo/receptive field {model.halo}/{model.receptive_field} disagree "
                f"with the network ({net.halo}/{net.receptive_field})"
            )
        return model

    @property
    def ndim(self) -> int:
        return self.architecture.ndim

    def fitted(self, volumes: Sequence[Volume]) -> Model:
        """This model with the normalisation it applies to ``volumes``: a ``per_volume`` model takes
        their mean and standard deviation (stored statistics, else one pass over the voxels);
        any other keeps its training data's."""
        if not self.per_volume:
            return self
        from tomocare.io.stats import Stats
        from tomocare.io.volume import compute_stats, reading

        per_input = []
        for volume in volumes:
            with reading(volume.path):
                per_input.append(compute_stats(volume))
        stats = Stats.merge(per_input)
        return replace(self, mean=float(stats.mean), std=float(stats.std))

    def network(self, device: str | torch.device = "cpu") -> UNet:
        """The network with its weights (their hash checked), in eval mode on ``device``."""
        weights = self.path / WEIGHTS
        if not weights.is_file():
            raise TomocareError(f"{self.path}: missing weights file {WEIGHTS}")
        if _sha256(weights) != self.weights_sha256:
            raise TomocareError(f"{weights}: weights do not match {MODEL_JSON} (checksum differs)")
        net = UNet(self.architecture)
        try:
            net.load_state_dict(load_file(str(weights)))
        except Exception as err:  # weights of the wrong shape, a damaged file
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise TomocareError(
                f"{self.path}: incompatible or corrupt model ({type(err).__name__}: {message})"
            ) from None
        return net.to(device).eval()

    def predict_whole(
        self, volume: np.ndarray | Sequence[np.ndarray], *, net: torch.nn.Module | None = None,
        precision: str = "fp32", max_voxels: int | None = None, orientations: int = 1,
    ) -> np.ndarray:
        """The network (``net``, or this model's loaded) on a whole in-memory volume, or on the
        sources (even, odd) averaged as the engine does: the reference tiled prediction equals."""
        from tomocare.predict.tiles import predict_whole

        return predict_whole(net if net is not None else self.network(), volume, halo=self.halo, factor=self.factor,
                             mean=self.mean, std=self.std, precision=precision, max_voxels=max_voxels,
                             orientations=orientations)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
    per_volume: bool = False,
) -> None:
    """Write ``net`` and its description to ``directory``.

    A new directory appears complete or not at all (written under a temporary name, then
    renamed). In an existing directory (e.g. a training run's, beside its checkpoint) each file
    is replaced atomically, weights first; the recorded hash catches a crash between the two.
    """
    directory = Path(directory)
    weights = save({k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()})
    meta = {
        "format_version": FORMAT_VERSION,
        "tomocare_version": tomocare.__version__,
        "architecture": net.config.model_dump(),
        "weights": WEIGHTS,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "normalization": {"mean": float(mean), "std": float(std), "per_volume": bool(per_volume)},
        "patch_size": int(patch_size),
        "receptive_field": net.receptive_field,
        "halo": net.halo,
        "downsampling_factor": net.downsampling_factor,
        "voxel_size": None if voxel_size is None else float(voxel_size),
        "trained_on": [str(p) for p in trained_on],
        "extra": extra or {},
    }
    text = json.dumps(meta, indent=2) + "\n"
    if directory.is_dir():
        write_atomic(directory / WEIGHTS, weights)
        write_atomic(directory / MODEL_JSON, text)
        return
    directory.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        (tmp / WEIGHTS).write_bytes(weights)
        (tmp / MODEL_JSON).write_text(text)


def store_half(directory: str | os.PathLike) -> None:
    """Rewrite the model's weights as float16 (half the file; the network computes in its own precision
    after loading): how a shipped model is kept small. Weights first, then the recorded hash."""
    directory = Path(directory)
    weights = load_file(str(directory / WEIGHTS))
    data = save({k: v.half() if v.is_floating_point() else v for k, v in weights.items()})
    meta = _read_meta(directory)
    meta["weights_sha256"] = hashlib.sha256(data).hexdigest()
    meta["weights_dtype"] = "float16"
    write_atomic(directory / WEIGHTS, data)
    write_atomic(directory / MODEL_JSON, json.dumps(meta, indent=2) + "\n")


def update_extra(directory: str | os.PathLike, extra: dict) -> None:
    """Merge ``extra`` into the model's free-form ``extra`` (e.g. why training stopped); weights untouched."""
    directory = Path(directory)
    meta = _read_meta(directory)
    meta["extra"] = {**meta.get("extra", {}), **extra}
    write_atomic(directory / MODEL_JSON, json.dumps(meta, indent=2) + "\n")


def _flag(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, got {value!r}")
    return value


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
    return meta
