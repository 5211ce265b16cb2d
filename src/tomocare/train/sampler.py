"""Training patches (Noise2Noise even/odd halves, or supervised input/target pairs), drawn on
the client and read by dask workers from the store.

The client only plans: patch corners are drawn from the seed and the volume shapes (and a coarse
mask, if any). Workers read just the region of each patch from a picklable lazy array (a zarr
array, :class:`tomocare.io.mrc.MrcArray`, ...), normalise it, replace non-finite voxels by 0 and
apply the augmentation. Every tomogram keeps a slab at the end of its y axis for validation, which
no training patch overlaps. For 2-D training (``ndim=2``) the arrays are stacks of images
(n, y, x) and a patch is a p×p crop of one image. The training loop only sees an iterator of numpy batches, so it does
not know (or care) how patches are made.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

import dask
import dask.array as da
import numpy as np

from tomocare.errors import TomocareError
from tomocare.io.stats import Stats, block_stats

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)

Y = 1  # validation slabs are cut along y, the tilt axis of (z, y, x) tomograms
# Tags that keep the seeded random streams of corners, pass orders and augmentations apart.
_CORNERS, _ORDER, _AUGMENT = 0, 1, 2


class LazyArray(Protocol):
    """A picklable, read-only array-like; indexing with a tuple of slices returns numpy."""

    shape: tuple[int, ...]
    dtype: Any
    ndim: int

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray: ...


Pair = tuple[LazyArray, LazyArray]


def describe(array: LazyArray, default: str) -> str:
    """A human name for an array: its store or file path when it has one."""
    store_path = getattr(array, "store_path", None)  # zarr
    if store_path is not None:
        return str(store_path).removeprefix("file://")
    path = getattr(array, "path", None)  # tomocare.io.mrc.MrcArray
    return str(path) if isinstance(path, str) and path else default


class Standardised:
    """``(array - mean) / std`` read lazily: a pair normalised by its own statistics (per-volume
    training) reads through this, and the stream then normalises by 0 and 1."""

    def __init__(self, array: LazyArray, mean: float, std: float) -> None:
        self.array, self.mean, self.std = array, float(mean), float(std)
        self.shape: tuple[int, ...] = tuple(array.shape)
        self.ndim = len(self.shape)
        self.dtype: Any = np.dtype(np.float32)

    def __getitem__(self, key: tuple[slice, ...]) -> np.ndarray:
        return (np.asarray(self.array[key], dtype=np.float32) - np.float32(self.mean)) / np.float32(self.std)


# ---------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augment:
    """Random augmentation that keeps the missing wedge where it is.

    Flips along each axis and swapping the roles of the even and odd halves leave the wedge
    unchanged; 90° rotations in the y–x plane move it and are off unless asked for.
    """

    flip: bool = True
    swap: bool = True
    rot90: bool = False

    def draw(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Parameters of ``n`` patches, rows of (flip z, flip y, flip x, swap, quarter turns)."""
        params = np.zeros((n, 5), dtype=np.int64)
        if self.flip:
            params[:, :3] = rng.integers(0, 2, (n, 3))
        if self.swap:
            params[:, 3] = rng.integers(0, 2, n)
        if self.rot90:
            params[:, 4] = rng.integers(0, 4, n)
        return params


def augment(inp: np.ndarray, tgt: np.ndarray, params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Apply one row of :meth:`Augment.draw` to an (input, target) pair of 3-D patches."""
    if params[3]:
        inp, tgt = tgt, inp
    axes = tuple(int(a) for a in np.flatnonzero(params[:3]))
    out = []
    for patch in (inp, tgt):
        patch = np.flip(patch, axes) if axes else patch
        out.append(np.rot90(patch, int(params[4]), axes=(1, 2)))
    return out[0], out[1]


# ---------------------------------------------------------------- planning (client side)


@dataclass(frozen=True)
class CoarseMask:
    """A mask sampled on a grid: ``values[i, j, k]`` is the mask at ``step // 2 + step * (i, j, k)``."""

    values: np.ndarray
    step: int


@dataclass(frozen=True)
class PatchPlan:
    """Patch corners as rows of (pair index, z, y, x), and the first y of each validation slab."""

    train: np.ndarray
    val: np.ndarray
    val_start: tuple[int, ...]


def validation_start(ny: int, patch_size: int, val_fraction: float) -> int:
    """First y of the validation slab: the last ``val_fraction`` of y, at least one patch thick."""
    return ny - max(round(ny * val_fraction), patch_size)


def patch_shape(patch_size: int, ndim: int = 3) -> tuple[int, int, int]:
    """Extent of a patch in the (z, y, x) array: a cube, or for 2-D one p×p crop of one image."""
    return (patch_size,) * 3 if ndim == 3 else (1, patch_size, patch_size)


def check_pairs(
    pairs: Sequence[Pair], patch_size: int, masks: Sequence[LazyArray | None] | None = None, *, ndim: int = 3,
    roles: tuple[str, str] = ("even", "odd"),
) -> None:
    """Raise TomocareError (one line) for pairs that cannot be sampled with this patch size.

    With ``ndim=2`` the arrays are stacks of images (n, y, x). ``roles`` name the two volumes of a
    pair in messages: ("even", "odd") halves, or ("input", "target") for supervised training.
    """
    what_pairs = "/".join(roles) + " pairs"
    if not pairs:
        raise TomocareError(f"no {what_pairs} to train on")
    if masks is not None and len(masks) != len(pairs):
        raise TomocareError(f"{len(masks)} masks given for {len(pairs)} {what_pairs}")
    if ndim == 2 and masks is not None and any(m is not None for m in masks):
        raise TomocareError("masks are not supported for 2-D training")
    first, second = roles
    for i, (even, odd) in enumerate(pairs):
        name = describe(even, f"pair {i}")
        if tuple(even.shape) != tuple(odd.shape):
            raise TomocareError(f"{name}: {first} {tuple(even.shape)} and {second} {tuple(odd.shape)} "
                                f"{'halves ' if roles == ('even', 'odd') else ''}differ in shape")
        if len(even.shape) != 3:
            what = "a 3-D volume" if ndim == 3 else "a stack of 2-D images (n, y, x)"
            raise TomocareError(f"{name}: expected {what}, found shape {tuple(even.shape)}")
        if min(even.shape[3 - ndim :]) < patch_size:
            what = "volume" if ndim == 3 else "images"
            raise TomocareError(f"{name}: patch size {patch_size} is larger than the {what} {tuple(even.shape)}")
        if 2 * patch_size > even.shape[Y]:
            raise TomocareError(
                f"{name}: y size {even.shape[Y]} cannot hold a training patch and a validation slab "
                f"of patch size {patch_size}"
            )
        mask = None if masks is None else masks[i]
        if mask is not None and tuple(mask.shape) != tuple(even.shape):
            raise TomocareError(f"{name}: mask shape {tuple(mask.shape)} differs from the volume {tuple(even.shape)}")


def _mask_planes(mask: LazyArray, zs: Sequence[int], step: int) -> np.ndarray:
    o = step // 2
    return np.stack([np.asarray(mask[z : z + 1, :, :])[0, o::step, o::step] != 0 for z in zs])


def coarse_mask(client: Client, mask: LazyArray, step: int, planes_per_task: int = 8) -> CoarseMask:
    """Sample ``mask`` every ``step`` voxels, reading a few z planes per task on the workers."""
    zs = list(range(step // 2, mask.shape[0], step))
    groups = [zs[i : i + planes_per_task] for i in range(0, len(zs), planes_per_task)]
    futures = client.map(_mask_planes, [mask] * len(groups), groups, [step] * len(groups), pure=False)
    return CoarseMask(np.concatenate(client.gather(futures)), step)


def _draw_corners(
    rng: np.random.Generator, n: int, lo: np.ndarray, hi: np.ndarray, patch_size: int, mask: CoarseMask | None
) -> np.ndarray | None:
    """``n`` corners in [lo, hi] (inclusive); with a mask, patch centres near non-zero grid points.

    Returns None when the mask has no non-zero point in the region.
    """
    if mask is None:
        return rng.integers(lo, hi + 1, size=(n, 3))
    half, step = patch_size // 2, mask.step
    centres = [step // 2 + step * np.arange(size) for size in mask.values.shape]
    inside = np.ix_(*[(c >= a + half) & (c <= b + half) for c, a, b in zip(centres, lo, hi)])
    valid = np.zeros_like(mask.values)
    valid[inside] = mask.values[inside]
    points = np.argwhere(valid)
    if len(points) == 0:
        return None
    chosen = step // 2 + step * points[rng.integers(len(points), size=n)]
    jitter = rng.integers(-(step // 2), step - step // 2, size=(n, 3))
    return np.clip(chosen + jitter, lo + half, hi + half) - half


def plan_patches(
    shapes: Sequence[tuple[int, ...]],
    *,
    patch_size: int,
    n_train: int,
    n_val: int,
    val_fraction: float,
    seed: int,
    masks: Sequence[CoarseMask | None] | None = None,
    names: Sequence[str] | None = None,
    ndim: int = 3,
) -> PatchPlan:
    """Draw ``n_train`` training and ``n_val`` validation corners per tomogram, deterministically.

    Each tomogram has its own random streams (from ``seed`` and its index), so adding a
    tomogram does not change the patches of the others. With ``ndim=2`` the z corner is the
    image of the stack (patches one image deep).
    """
    p = patch_size
    pz = patch_shape(p, ndim)[0]
    train: list[np.ndarray] = []
    val: list[np.ndarray] = []
    starts: list[int] = []
    for i, shape in enumerate(shapes):
        name = names[i] if names else f"pair {i}"
        start = validation_start(shape[Y], p, val_fraction)
        if round(shape[Y] * val_fraction) < p:
            log.info("%s: validation slab enlarged to one patch (%d of %d voxels along y)", name, p, shape[Y])
        mask = masks[i] if masks else None
        for what, n, (lo_y, hi_y), stream, out in (
            ("training", n_train, (0, start - p), 0, train),
            ("validation", n_val, (start, shape[Y] - p), 1, val),
        ):
            lo = np.array([0, lo_y, 0])
            hi = np.array([shape[0] - pz, hi_y, shape[2] - p])
            rng = np.random.default_rng([seed, _CORNERS, i, stream])
            corners = _draw_corners(rng, n, lo, hi, p, mask)
            if corners is None and what == "validation":
                log.warning("%s: the mask selects nothing in the validation slab; validating unmasked", name)
                corners = _draw_corners(rng, n, lo, hi, p, None)
            if corners is None:
                raise TomocareError(f"{name}: the mask selects nothing in the {what} region")
            out.append(np.column_stack([np.full(n, i), corners]))
        starts.append(start)
    return PatchPlan(np.concatenate(train), np.concatenate(val), tuple(starts))


# ---------------------------------------------------------------- extraction (worker side)


def extract_batch(
    pairs: dict[int, Pair],
    items: np.ndarray,
    patch_size: int,
    mean: float,
    std: float,
    params: np.ndarray | None,
    ndim: int = 3,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Read, normalise and augment the patches at ``items`` (rows of pair, z, y, x).

    Returns inputs and targets of shape (n, 1, p, p, p) (with ``ndim=2``: (n, 1, p, p)),
    float32, and the number of non-finite voxels that were replaced by 0. Runs on a dask
    worker; reads only the patches' regions.
    """
    p = patch_size
    pz = patch_shape(p, ndim)[0]
    out = np.empty((2, len(items), 1, pz, p, p), dtype=np.float32)
    nonfinite = 0
    for row, (i, z, y, x) in enumerate(items):
        region = (slice(z, z + pz), slice(y, y + p), slice(x, x + p))
        halves = []
        for volume in pairs[int(i)]:
            patch = (np.asarray(volume[region], dtype=np.float32) - np.float32(mean)) / np.float32(std)
            bad = ~np.isfinite(patch)
            if bad.any():
                nonfinite += int(bad.sum())
                patch[bad] = 0.0
            halves.append(patch)
        inp, tgt = halves if params is None else augment(halves[0], halves[1], params[row])
        out[0, row, 0], out[1, row, 0] = inp, tgt
    if ndim == 2:
        return out[0, :, :, 0], out[1, :, :, 0], nonfinite
    return out[0], out[1], nonfinite


class Batch(NamedTuple):
    inputs: np.ndarray
    targets: np.ndarray


class PatchStream:
    """Batches extracted on dask workers, with ``prefetch`` batches in flight ahead of the consumer.

    Batch ``b`` is a pure function of ``(seed, b)``: with ``shuffle`` it holds positions
    [b·B, (b+1)·B) of an endless chain of seeded permutations of ``items``, and its augmentation
    is drawn from ``(seed, b)``; without, the stream is ``items`` in order, once. So a resumed
    run continues the very same sequence from any batch.
    """

    def __init__(
        self,
        client: Client,
        pairs: Sequence[Pair],
        items: np.ndarray,
        *,
        patch_size: int,
        mean: float,
        std: float,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        augment: Augment | None = None,
        prefetch: int = 4,
        ndim: int = 3,
    ):
        self.client = client
        self.pairs = list(pairs)
        self.items = np.asarray(items)
        self.patch_size, self.mean, self.std = patch_size, mean, std
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.augment = augment
        self.prefetch = max(1, prefetch)
        self.ndim = ndim
        self.nonfinite = 0  # non-finite voxels replaced by 0 in the batches consumed so far

    def __len__(self) -> int:
        """Batches in one pass over ``items``."""
        return -(-len(self.items) // self.batch_size)

    def _permutation(self, n_pass: int) -> np.ndarray:
        return np.random.default_rng([self.seed, _ORDER, n_pass]).permutation(len(self.items))

    def batch_items(self, b: int) -> np.ndarray:
        """Rows of ``items`` in batch ``b``."""
        n, size = len(self.items), self.batch_size
        if not self.shuffle:
            return self.items[b * size : min((b + 1) * size, n)]
        positions = np.arange(b * size, (b + 1) * size)
        order = np.concatenate([self._permutation(int(k)) for k in np.unique(positions // n)])
        return self.items[order[positions - positions[0] // n * n]]

    def _submit(self, b: int):
        items = self.batch_items(b)
        params = None
        if self.augment is not None:
            params = self.augment.draw(np.random.default_rng([self.seed, _AUGMENT, b]), len(items))
        pairs = {int(i): self.pairs[int(i)] for i in np.unique(items[:, 0])}
        return self.client.submit(
            extract_batch, pairs, items, self.patch_size, self.mean, self.std, params, self.ndim, pure=False
        )

    def batches(self, start: int = 0) -> Generator[Batch, None, None]:
        """Batches from ``start`` on: endless with ``shuffle``, else up to the end of ``items``."""
        stop = None if self.shuffle else len(self)
        pending: deque = deque()
        b = start
        try:
            while True:
                while len(pending) < self.prefetch and (stop is None or b < stop):
                    pending.append(self._submit(b))
                    b += 1
                if not pending:
                    return
                inputs, targets, nonfinite = pending.popleft().result()
                if nonfinite and not self.nonfinite:
                    log.warning("patches hold non-finite voxels (NaN/inf); they are replaced by 0 and counted")
                self.nonfinite += nonfinite
                yield Batch(inputs, targets)
        finally:
            if pending and self.client.status == "running":
                self.client.cancel(list(pending))


# ---------------------------------------------------------------- normalisation


def dataset_stats(
    client: Client, pairs: Sequence[Pair], roles: Sequence[str] = ("even half", "odd half")
) -> tuple[float, float]:
    """Mean and standard deviation over all halves of all pairs, computed block by block on the
    cluster; a half with no finite voxel or a single value is refused, naming it.

    ``roles`` name the volumes of a pair that count, by position: ``("input",)`` takes the first of
    each pair only (supervised training normalises input and target by the input's statistics,
    as prediction will).
    """
    from tomocare.io.volume import check_values

    halves = [(f"pair {i} {role}", pair[j]) for i, pair in enumerate(pairs) for j, role in enumerate(roles)]
    rows = [[dask.delayed(block_stats)(block) for block in da.from_array(volume, chunks="auto").to_delayed().ravel()]
            for _, volume in halves]
    per_half = [Stats.from_rows(np.stack(r)) for r in client.gather(client.compute(rows))]
    for (default, volume), stats in zip(halves, per_half):
        check_values(describe(volume, default), stats)
    stats = Stats.merge(per_half)
    if not np.isfinite(stats.std) or stats.std == 0:
        raise TomocareError(f"training data have no usable spread (mean {stats.mean}, std {stats.std})")
    return stats.mean, stats.std
