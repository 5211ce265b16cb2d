"""What the block engine runs: a :class:`BlockOperator` maps the input tiles of one block to an output tile.

An operator is a frozen, validated value. Its :meth:`~BlockOperator.identity` (JSON) is what it
computes: it names the operator in the output's metadata and, with the inputs and the plan, decides
whether an interrupted run may be resumed. The engine asks it for its geometry (``halo``,
``factor``, ``ndim``) and memory, plans the blocks, and on each worker :meth:`~BlockOperator.open`\\ s it
once (a context manager, as a daisy/volara worker opens its resources once), then calls what
``open`` yields on every block's tiles ``(n_sources, *tile) -> tile``. The trained network
(``tomocare.predict.network``) and every classical filter (``tomocare.baselines``) are operators;
``tomocare.testing.OperatorTests`` is the conformance suite each one passes.
"""

from __future__ import annotations

import contextlib
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tomocare.io.volume import Volume

Shape = tuple[int, ...]
TileFunction = Callable[[np.ndarray], np.ndarray]


class BlockOperator(ABC):
    """A local operation, computed block by block: the output at a voxel depends on the inputs within
    ``halo`` voxels (along the operator's ``ndim`` last axes), so a tile's core is exact."""

    @property
    @abstractmethod
    def halo(self) -> int:
        """Voxels of context a tile needs on each side (along the operator's axes) for its core to be exact."""

    @property
    def factor(self) -> int:
        """Tile sizes and offsets must be multiples of this along the operator's axes (a network's pooling)."""
        return 1

    @property
    def ndim(self) -> int:
        """Axes the operator works along, the last ones: 2 runs a 2-D operator over a stack of images."""
        return 3

    @property
    def gpu(self) -> bool:
        """Whether it runs on the workers' GPUs where they have them (blocks are then sized to their memory)."""
        return False

    @property
    def images(self) -> bool:
        """Whether inputs are read as stacks of images (2-D data; a single image a stack of one)."""
        return self.ndim == 2

    @abstractmethod
    def identity(self) -> dict:
        """What the operator computes, as JSON-serialisable data: equal identities, equal outputs."""

    @abstractmethod
    def bytes_per_voxel(self, device: str) -> int:
        """Peak memory of one call per tile voxel on ``device`` ('cpu' or 'cuda'), roughly."""

    def within(self, tile: Shape, budget: int | None) -> BlockOperator:
        """This operator computing ``tile``-shaped tiles within ``budget`` bytes per call (same output),
        where it can (a network in pieces); by default itself."""
        return self

    def call_voxels(self, tile: Shape) -> int:
        """Voxels one call of the opened operator holds at a time (less than the tile's when in pieces)."""
        return int(np.prod(tile))

    def bind(self, volumes: Sequence[Volume], *, strict: bool = False) -> BlockOperator:
        """This operator checked against the inputs, and completed from them where it depends on them
        (e.g. a contrast in units of the data's standard deviation); by default itself, unchecked."""
        return self

    def sources(self) -> tuple[Path, ...]:
        """Files the operator reads (a network's model directory): an output must never replace them."""
        return ()

    def describe(self) -> dict:
        """The identity and the geometry, for dry runs and metadata."""
        return {**self.identity(), "halo": self.halo}

    @abstractmethod
    def open(self) -> contextlib.AbstractContextManager[TileFunction]:
        """Acquire what the operator needs on a worker (a network's weights), yielding the function
        of one block's tiles ``(n_sources, *tile) -> tile``; run once per worker, not per block."""

    def key(self) -> str:
        """What a worker keeps the opened operator under (``opened``): the identity as one string."""
        return json.dumps(self.identity(), sort_keys=True)


_OPENED: dict[str, tuple[contextlib.ExitStack, TileFunction]] = {}
_OPEN_LOCK = threading.Lock()


def opened(operator: BlockOperator) -> TileFunction:
    """``operator`` opened in this process (a dask worker): once, then reused by every block task; opening
    another operator closes the previous one (a worker runs one operator at a time)."""
    key = operator.key()
    with _OPEN_LOCK:
        if key not in _OPENED:
            for stack, _ in _OPENED.values():
                stack.close()
            _OPENED.clear()
            stack = contextlib.ExitStack()
            _OPENED[key] = stack, stack.enter_context(operator.open())
        return _OPENED[key][1]


@contextlib.contextmanager
def averaged(function: Callable[[np.ndarray], np.ndarray]) -> Iterator[TileFunction]:
    """Open helper for single-tile operators: the sources' tiles (even, odd) averaged, then ``function``."""
    yield lambda tiles: function(tiles.mean(axis=0, dtype=np.float32))
