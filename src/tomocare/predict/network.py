"""The trained network as a block operator."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, get_args

import numpy as np

from tomocare.config import Precision, PredictSettings
from tomocare.errors import TomocareError
from tomocare.model import Model
from tomocare.predict.operator import BlockOperator, Shape, TileFunction

if TYPE_CHECKING:
    from tomocare.io.volume import Volume

PRECISIONS = get_args(Precision)


@dataclass(frozen=True)
class NetworkOperator(BlockOperator):
    """A trained network: each source's tile (even, odd) in turn, in ``orientations`` orientations each
    (``tiles.ORIENTATIONS``), outputs averaged. With ``max_voxels`` a tile larger than that is computed
    in pieces (bounded memory, the same output), so it is not part of the identity."""

    model: Model
    precision: Precision = "auto"
    orientations: int = 1
    max_voxels: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise TomocareError(f"precision {self.precision!r} not supported ({', '.join(PRECISIONS)})")
        if not 1 <= self.orientations <= self.turns:
            raise TomocareError(f"orientations {self.orientations}: a {self.ndim}-D network has {self.turns} in all")

    @classmethod
    def from_settings(cls, model: Model, settings: PredictSettings) -> NetworkOperator:
        return cls(model, settings.precision, settings.orientations)

    @property
    def gpu(self) -> bool:
        return True

    @property
    def turns(self) -> int:
        """How many orientations there are for all sources together."""
        return 4 if self.model.ndim == 2 else 8

    @property
    def halo(self) -> int:
        return self.model.halo

    @property
    def factor(self) -> int:
        return self.model.factor

    @property
    def ndim(self) -> int:
        return self.model.ndim

    def identity(self) -> dict:
        return {"network": self.model.architecture.model_dump(), "weights_sha256": self.model.weights_sha256,
                "normalization": [self.model.mean, self.model.std], "precision": self.precision,
                "orientations": self.orientations}

    def sources(self) -> tuple[Path, ...]:
        return (self.model.path,)

    def bytes_per_voxel(self, device: str) -> int:
        """Peak inference memory per tile voxel of one call (measured, 16 channels, two convolutions per
        level: 393 B fp32, 193 B bf16 at 120^3; 353 and 182 B at 248^3)."""
        import torch

        from tomocare.nn.device import resolve_precision

        per_channel = 12 if resolve_precision(self.precision, torch.device(device)) == "bf16" else 25
        return per_channel * self.model.architecture.base_channels + 8

    def within(self, tile: Shape, budget: int | None) -> NetworkOperator:
        if budget is None or self.ndim == 2:
            return replace(self, max_voxels=None)
        max_voxels = max(1, budget // self.bytes_per_voxel("cpu"))
        return replace(self, max_voxels=max_voxels if self.pieces(tile, max_voxels) else None)

    def pieces(self, tile: Shape, max_voxels: int | None = None) -> tuple[int, ...] | None:
        """The pieces a tile's core is computed in (None: whole)."""
        from tomocare.predict.tiles import piece_shape

        if self.ndim == 2:
            return None
        return piece_shape(tile, self.halo, self.factor, self.max_voxels if max_voxels is None else max_voxels)

    def call_voxels(self, tile: Shape) -> int:
        piece = self.pieces(tile)
        return int(np.prod([p + 2 * self.halo for p in piece])) if piece else int(np.prod(tile))

    def bind(self, volumes: Sequence[Volume], *, strict: bool = False) -> NetworkOperator:
        """Refuses more orientations than the sources have between them; warns (or with ``strict`` refuses)
        when the data's voxel size differs from the training data's by more than 10%. A model normalised
        per volume (the pretrained general one) takes the inputs' mean and std here (``Model.fitted``)."""
        if self.orientations * len(volumes) > self.turns:
            raise TomocareError(f"orientations {self.orientations}: a {self.ndim}-D network has {self.turns} in all, "
                                f"so at most {self.turns // len(volumes)} per input")
        if self.model.voxel_size:
            ratio = volumes[0].voxel_size[-1] / self.model.voxel_size
            if abs(ratio - 1) > 0.1:
                message = (f"{volumes[0].path}: voxel size {volumes[0].voxel_size[-1]:g} Å differs from the model's "
                           f"training data ({self.model.voxel_size:g} Å) by {abs(ratio - 1):.0%}")
                if strict:
                    raise TomocareError(message)
                warnings.warn(message, stacklevel=2)
        return replace(self, model=self.model.fitted(volumes)) if self.model.per_volume else self

    def describe(self) -> dict:
        return {"model": str(self.model.path), "precision": self.precision, "orientations": self.orientations,
                "halo": self.halo}

    @contextlib.contextmanager
    def open(self) -> Iterator[TileFunction]:
        """Loads the weights once, on the worker's device, with the worker's threads."""
        import torch

        from tomocare.nn.device import pick_device, prepare
        from tomocare.predict.tiles import run_network

        try:
            from distributed import get_worker

            torch.set_num_threads(max(1, get_worker().state.nthreads))
        except (ImportError, ValueError):  # not on a dask worker
            pass
        device = pick_device()
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # every tile has the same shape: autotune once
        net = prepare(self.model.network(device))
        model = self.model
        yield lambda tiles: run_network(net, tiles, mean=model.mean, std=model.std, precision=self.precision,
                                        halo=model.halo, factor=model.factor, max_voxels=self.max_voxels,
                                        orientations=self.orientations)
