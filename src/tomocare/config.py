"""One settings file for every command: ``[train]``, ``[predict]``, ``[denoise]`` and ``[nt2c]`` sections.

TOML (commented, what ``tomocare config --example`` writes) or JSON with the same structure.
Every key is optional; command-line options override the file; the resolved settings are
saved beside the outputs with the package version.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tomocare.errors import TomocareError
from tomocare.train.config import PLANNED, TrainConfig

#: Edge, in voxels, of the chunks of the images tomocare writes and of the blocks it computes by default.
DEFAULT_CHUNK = 128
#: Chunk edge of OME-Zarr 0.4 outputs unless given: 256, as the CZ cryoET data portal's stores.
PORTAL_CHUNK = 256

#: How images are written: OME-Zarr 0.5 on zarr v3 (the default), OME-Zarr 0.4 on zarr v2 (the data
#: portal's and copick's layout), or an MRC file (block-wise commands write a temporary zarr, then export it).
OutputFormat = Literal["ome-zarr-0.5", "ome-zarr-0.4", "mrc"]
FORMATS: tuple[str, ...] = get_args(OutputFormat)

#: Network arithmetic: ``auto`` is bf16 where the device does it fast (CUDA, CPUs with AVX-512 BF16 or AMX), else fp32.
Precision = Literal["auto", "fp32", "bf16", "fp16"]


class PredictSettings(BaseModel):
    """Block-wise prediction (``predict``, and the prediction step of ``denoise``)."""

    model_config = ConfigDict(extra="forbid")

    block: int | None = Field(None, ge=1, description="output block edge per task, a multiple of chunks "
                              "(default: the largest the workers' memory allows for a network, else chunks; "
                              "larger blocks waste less on halos, need more memory)")
    chunks: int = Field(DEFAULT_CHUNK, ge=8, description="output chunk edge, voxels")
    dtype: Literal["float32", "float16"] = Field("float32", description="output data type")
    precision: Precision = Field("auto", description="network arithmetic; auto: bf16 where the device has fast bf16 "
                                 "(CUDA, CPUs with AVX-512 BF16 or AMX), else fp32")
    task_memory_mib: int | None = Field(None, ge=16, description="memory per task on CPU workers, MiB (default: a "
                                        "quarter of a worker's memory limit per thread); the block grows to fill it, "
                                        "larger tiles are computed in pieces, with the same result")
    orientations: int = Field(1, ge=1, le=8, description="orientations (flips) the network sees each half in, "
                              "outputs averaged: 1 already shows the odd half flipped (free, +0.25 dB); "
                              "2 gains ~0.2 dB more at twice the time")
    strict: bool = Field(False, description="refuse inputs whose voxel size differs from the model's training data "
                         "by more than 10%")
    format: OutputFormat = Field("ome-zarr-0.5", description="output format: ome-zarr-0.5 (zarr v3), ome-zarr-0.4 "
                                 "(zarr v2, the data portal's and copick's layout; chunks 256 unless set) or mrc "
                                 "(written through a temporary zarr)")

    @model_validator(mode="after")
    def _portal_chunks(self) -> PredictSettings:
        if self.format == "ome-zarr-0.4" and "chunks" not in self.model_fields_set:
            self.chunks = PORTAL_CHUNK
        return self


class DenoiseSettings(BaseModel):
    """The dataset job (``denoise``)."""

    model_config = ConfigDict(extra="forbid")

    train_on: int | None = Field(None, ge=1, description="train on the first N tomograms only (large datasets; "
                                 "with --watch: the first N complete pairs, default 1)")
    per_tomogram: bool = Field(False, description="train one model per tomogram instead of one for the dataset")
    mrc: bool = Field(True, description="also write NAME_denoised.mrc beside NAME.zarr")
    allow_mixed: bool = Field(False, description="accept tomograms of different voxel sizes")
    watch_interval_s: float = Field(2.0, gt=0, description="with --watch: seconds between looks at the directory")
    watch_settle_s: float = Field(5.0, ge=0, description="with --watch: a half is complete once its size and "
                                  "modification time stayed the same this many seconds (and it opens cleanly)")


class NoiseTransferSettings(BaseModel):
    """Noise-model transfer for data without halves (``denoise-single``, ``extract-noise``, ``train-noise``)."""

    model_config = ConfigDict(extra="forbid")

    coarse: str = Field("general", description="coarse denoiser that finds the background: a model directory or "
                        "a shipped model's name (2-D data need a 2-D model)")
    patch_size: int | None = Field(None, ge=4, multiple_of=2, description="edge of the noise patches, even "
                                   "(default: 16 voxels in 3-D, 32 pixels in 2-D)")
    threshold: float = Field(0.7, gt=-1, le=1, description="a patch is background when every pair of its "
                             "sub-patches has SSIM at least this on the coarse-denoised data")
    max_patches: int = Field(512, ge=2, description="noise patches kept per tomogram or image stack (drawn "
                             "at random among those found)")
    synthesiser_time: float = Field(180.0, gt=0, description="wall-clock seconds to train the noise synthesiser "
                                    "(its spectral calibration and saving follow, not counted: seconds in 2-D, "
                                    "about half a minute in 3-D on 2 cores)")
    pairs: int = Field(8, ge=1, description="synthesised training pairs")
    pair_shape: tuple[int, int, int] = Field((64, 128, 128), description="shape of each synthesised pair (z, y, x); "
                                             "2-D: (images, y, x)")
    signal: Literal["coarse", "simulated"] = Field("coarse", description="clean signal of the training pairs: the "
                                                   "coarse-denoised data itself (0.7 dB better on the tuning "
                                                   "tomogram) or simulated tomograms (NT2C's choice)")
    tilt_range: float = Field(60.0, gt=0, le=90, description="tilt range (±degrees) of the simulated signal")
    fine_time: float = Field(300.0, gt=0, description="wall-clock seconds to train the fine denoiser unless "
                             "[train] time_limit is set (its loss is l1 unless [train] loss is set)")
    seed: int = Field(0, ge=0, description="seed of patch choice, synthesiser, simulated signal and pairs")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    train: TrainConfig = Field(default_factory=TrainConfig)
    predict: PredictSettings = Field(default_factory=PredictSettings)
    denoise: DenoiseSettings = Field(default_factory=DenoiseSettings)
    nt2c: NoiseTransferSettings = Field(default_factory=NoiseTransferSettings)


def load_settings(path: str | os.PathLike | None, **sections: dict) -> Settings:
    """Settings from a TOML or JSON file (or defaults), with ``sections`` (e.g. ``train={...}``)
    overriding its keys; a bad file or value raises a one-line TomocareError."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise TomocareError(f"{path}: no such settings file")
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
        except (ValueError, UnicodeDecodeError, RecursionError) as err:
            raise TomocareError(
                f"{path}: not a valid {'JSON' if path.suffix == '.json' else 'TOML'} file ({err})"
            ) from None
        if not isinstance(data, dict):
            raise TomocareError(f"{path}: expected sections [train], [predict], [denoise], [nt2c]")
    given = set()  # (section, key) set on the command line
    for name, values in sections.items():
        data.setdefault(name, {}).update({k: v for k, v in values.items() if v is not None})
        given |= {(name, k) for k, v in values.items() if v is not None}
    try:
        return Settings.model_validate(data)
    except ValidationError as err:

        def where(loc: tuple) -> str:  # the option for a value given on the command line, else the file's key
            if tuple(loc[:2]) in given:
                return "--" + str(loc[1]).replace("_", "-")
            return f"{path}: {'.'.join(map(str, loc))}" if path is not None else ".".join(map(str, loc))

        raise TomocareError("; ".join(f"{where(e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                                      for e in err.errors())) from None


def example() -> str:
    """A commented TOML file of every setting at its default."""
    lines = [
        "# tomocare settings: every key is optional, command-line options override them.",
        "# Use with --config FILE on train, predict and denoise.",
    ]
    for name in Settings.model_fields:
        section = getattr(Settings(), name)
        lines += ["", f"[{name}]", *_describe(type(section).__doc__ or "", "# ")]
        planned = set(PLANNED) | {"max_steps"} if name == "train" else set()
        for key, info in type(section).model_fields.items():
            if info.description:
                lines.append(f"# {info.description}")
            value = getattr(section, key)
            if value is None:
                lines.append(f"# {key} = ")
            elif key in planned:  # set, it would be kept as given instead of planned for the machine
                lines.append(f"# {key} = {_toml_value(value)}  (planned for the device and budget unless set)")
            else:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _describe(doc: str, prefix: str) -> list[str]:
    first = doc.strip().split("\n\n")[0]
    return [prefix + " ".join(first.split())] if first else []


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
