"""Distributed, resumable, seamless block-wise computation: one dask task per output block.

A task reads its block plus halo straight from the input store(s), applies an operator — the
trained network on the even and odd tiles in one batch, averaged (``predict``), or a classical
filter (``tomocare baseline``) — and writes only the block's core into its own chunks of the
output — no neighbour exchange, no locks. A task that runs twice writes the same bytes, so
a lost worker or a resumed run is safe. The client records each block once its task returned
(its data is written by then); a rerun skips recorded blocks.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zarr
from distributed import Client, as_completed, get_worker

from tomocare.errors import TomocareError
from tomocare.io.atomic import commit, output_lock, refuse_inputs, remove, temporary_sibling
from tomocare.io.omezarr import create_level, write_image_metadata, write_pyramid
from tomocare.io.stats import Stats, block_stats
from tomocare.io.discover import Pair, open_pair
from tomocare.io.volume import Volume, compute_stats, open_volume
from tomocare.predict.plan import BlockPlan, network_geometry, read_tiles, round_up
from tomocare.train.sampler import describe

log = logging.getLogger(__name__)

RUN_FILE = "tomocare_run.json"
DONE_FILE = "tomocare_done.txt"
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # the output's disk is full or read-only
_MODELS: dict[tuple[str, float, str], tuple] = {}


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cached_model(model_dir: str):
    """The model of ``model_dir``, loaded once per process (worker) and reused by its tasks."""
    from tomocare.train.model_file import load_model

    device = _device()
    key = (model_dir, os.path.getmtime(Path(model_dir) / "model.json"), device)
    if key not in _MODELS:
        import torch

        try:
            torch.set_num_threads(max(1, get_worker().state.nthreads))
        except ValueError:  # not on a dask worker
            pass
        from tomocare.predict.tiles import prepare

        _MODELS.clear()
        if device == "cuda":
            torch.backends.cudnn.benchmark = True  # every tile has the same shape: autotune once
        net, info = load_model(model_dir, device=device)
        _MODELS[key] = prepare(net), info
    return _MODELS[key]


@dataclass(frozen=True)
class NetworkOperator:
    """A trained network as a block operator: each half's tile in turn, in ``orientations``
    orientations each (``tiles.ORIENTATIONS``), outputs averaged; a tile larger than ``max_voxels``
    is computed in pieces (bounded memory, same result)."""

    model_dir: str
    precision: str = "auto"
    max_voxels: int | None = None
    orientations: int = 1

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        from tomocare.predict.tiles import run_network

        net, info = cached_model(self.model_dir)
        return run_network(net, tiles, mean=info.mean, std=info.std, precision=self.precision, halo=info.halo,
                           factor=info.downsampling_factor, max_voxels=self.max_voxels,
                           orientations=self.orientations)


@dataclass(frozen=True)
class FilterOperator:
    """A classical filter (``tomocare.baselines``) as a block operator: halves averaged, then filtered."""

    filter: object  # tomocare.baselines.filters.Filter

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        return self.filter(tiles.mean(axis=0, dtype=np.float32))


@dataclass(frozen=True)
class BlockJob:
    """Everything a block task needs; small and picklable (arrays are lazy handles)."""

    operator: object  # callable (n_sources, *tile) -> tile
    sources: tuple  # lazy array-likes: (even, odd) or (single,)
    target: zarr.Array
    plan: BlockPlan


def run_block(job: BlockJob, index: tuple[int, ...]) -> np.ndarray:
    """Compute and write one output block; return its statistics row."""
    block = job.plan.block_at(index)
    core = block.crop(job.operator(read_tiles(job.sources, block)))
    job.target[block.core] = core.astype(job.target.dtype, copy=False)
    return block_stats(core)


def input_identity(path: Path) -> list:
    """Size, modification time and inode of an input file, or of a zarr store's metadata and
    level-0 chunk directory: a new file written at the same path differs."""
    parts = [path] if path.is_file() else [path / "zarr.json", path / "0" / "zarr.json", path / "0"]
    out = []
    for part in parts:
        try:
            st = part.stat()
        except OSError:
            continue
        out.append([part.name, st.st_size, st.st_mtime_ns, st.st_ino])
    return out


@dataclass
class PredictionSetup:
    """The checked inputs of a block-wise run and its plan; ``describe()`` is the dry run."""

    operator: object
    identity: str  # what the operator computes (model file text, filter parameters), for resuming
    inputs: list[Volume]
    out: Path
    plan: BlockPlan
    chunks: tuple[int, ...]
    dtype: str
    attrs: dict = field(default_factory=dict)  # provenance written into the output's metadata
    memory_per_task: int = 0  # bytes, rough
    pieces: list[int] | None = None  # a tile's core computed in pieces of this size (CPU memory bound)

    def fingerprint(self) -> str:
        """What the output depends on: operator, inputs (path and identity on disk), plan, layout.
        An input replaced between an interrupted run and its rerun changes it: the rerun starts afresh."""
        blob = json.dumps(
            [self.identity, [[str(v.path.resolve()), input_identity(v.path)] for v in self.inputs],
             self.plan.describe(), list(self.chunks), self.dtype],
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> dict:
        return {
            **self.plan.describe(),
            "inputs": [str(v.path) for v in self.inputs],
            "output": str(self.out),
            "output_chunks": list(self.chunks),
            "dtype": self.dtype,
            "estimated_memory_per_task_mib": round(self.memory_per_task / 2**20),
            **({"network_pieces": self.pieces} if self.pieces else {}),
        }


def _open_inputs(inputs: list[str | os.PathLike], *, images: bool = False) -> list[Volume]:
    if not 1 <= len(inputs) <= 2:
        raise TomocareError("give an even and an odd half, or one volume")
    if len(inputs) == 2:
        pair = open_pair(Pair(Path(inputs[0]).stem, Path(inputs[0]), Path(inputs[1])), images=images)
        return [pair.even, pair.odd]
    return [open_volume(inputs[0], images=images)]


def _block_plan(shape: tuple[int, ...], chunks: int, block: int | None, halo: tuple, factor: tuple) -> tuple[BlockPlan, tuple]:
    chunk_shape = tuple(min(chunks, s) for s in shape)
    block_edge = block or chunks
    if block_edge % chunks and block_edge < max(shape):
        raise TomocareError(f"block {block_edge} must be a multiple of the output chunks ({chunks})")
    block_shape = tuple(min(block_edge, round_up(s, f)) for s, f in zip(shape, factor))
    return BlockPlan(shape, block_shape, halo, factor), chunk_shape


#: Memory for the network's activations per task on CPU workers, when not set: with two workers and
#: the client, a default run stays within 2 GiB (benchmarks/quality.py prints the peak).
CPU_TASK_MEMORY = 384 * 2**20


def network_bytes_per_voxel(config: dict, precision: str) -> int:
    """Peak inference memory per tile voxel of one network call (measured: 16 channels, two
    convolutions per level: ~425 B fp32, ~230 B bf16 at 120^3; a little less at larger tiles)."""
    per_channel = 15 if precision == "bf16" else 28
    return per_channel * int(config.get("base_channels", 16)) + 8


def setup_prediction(
    model_dir: str | os.PathLike,
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    block: int | None = None,
    chunks: int = 128,
    dtype: str = "float32",
    strict: bool = False,
    precision: str = "auto",
    task_memory_mib: int | None = None,
    free_memory: int | None = None,
    orientations: int = 1,
) -> PredictionSetup:
    """Open and check the model and inputs; build the block plan. Reads no voxel data.

    With ``free_memory`` (bytes of the workers' GPUs, see ``gpu_free_memory``) and no ``block``,
    the block is the largest multiple of ``chunks`` whose task fits in half of it: larger blocks
    waste less on halos (computed/output ratio 2.97 at 128, 1.81 at 256, 1.50 at 384 for halo 28).
    Without it (CPU workers) a tile larger than ``task_memory_mib`` (default ``CPU_TASK_MEMORY``)
    allows is computed in pieces: memory per task is bounded, the output is the same.
    ``orientations`` per half (``tiles.ORIENTATIONS``) multiply the compute time.
    """
    import torch

    from tomocare.train.model_file import load_model
    from tomocare.train.plan import resolve_precision

    model_dir, out = Path(model_dir), Path(out)
    refuse_inputs(out, [*inputs, model_dir])
    _, info = load_model(model_dir)
    _check_dtype(dtype)
    if precision not in ("auto", "fp32", "bf16", "fp16"):
        raise TomocareError(f"precision {precision!r} not supported (auto, fp32, bf16 or fp16)")
    net_ndim = int(info.config.get("ndim", 3))
    volumes = _open_inputs(inputs, images=net_ndim == 2)
    from tomocare.predict.tiles import ORIENTATIONS, piece_shape

    turns = 4 if net_ndim == 2 else len(ORIENTATIONS)
    if not 1 <= orientations * len(volumes) <= turns:
        raise TomocareError(f"orientations {orientations}: a {net_ndim}-D network has {turns} in all, "
                            f"so at most {turns // len(volumes)} per input")
    if info.voxel_size:
        ratio = volumes[0].voxel_size[-1] / info.voxel_size
        if abs(ratio - 1) > 0.1:
            message = (
                f"{volumes[0].path}: voxel size {volumes[0].voxel_size[-1]:g} Å differs from the model's training "
                f"data ({info.voxel_size:g} Å) by {abs(ratio - 1):.0%}"
            )
            if strict:
                raise TomocareError(message)
            warnings.warn(message, stacklevel=2)
    try:
        halo, factor = network_geometry(len(volumes[0].shape), net_ndim, info.halo, info.downsampling_factor)
    except TomocareError as err:
        raise TomocareError(f"{volumes[0].path}: {err} (use a {len(volumes[0].shape)}-D model)") from None
    device = torch.device("cuda" if free_memory else "cpu")
    bytes_per_voxel = network_bytes_per_voxel(info.config, resolve_precision(precision, device))
    if block is None and free_memory:
        block = _largest_block(volumes[0].shape, chunks, halo, factor, bytes_per_voxel, free_memory // 2)
    plan, chunk_shape = _block_plan(volumes[0].shape, chunks, block, halo, factor)
    tile = plan.tile_shape(plan.block)
    max_voxels = None
    if not free_memory:
        budget = CPU_TASK_MEMORY if task_memory_mib is None else task_memory_mib * 2**20
        max_voxels = max(1, budget // bytes_per_voxel)
    piece = piece_shape(tile, info.halo, info.downsampling_factor, max_voxels) if net_ndim == 3 else None
    per_call = int(np.prod([p + 2 * info.halo for p in piece])) if piece else int(np.prod(tile))
    memory = per_call * bytes_per_voxel + 4 * len(volumes) * int(np.prod(tile)) * 2
    operator = NetworkOperator(str(model_dir.resolve()), precision, max_voxels if piece else None, orientations)
    identity = (model_dir / "model.json").read_text() + f"\nprecision {precision}, orientations {orientations}"
    return PredictionSetup(operator, identity, volumes, out, plan, chunk_shape, dtype, {"model": str(model_dir)}, memory,
                           None if piece is None else list(piece))


def _largest_block(shape, chunks: int, halo, factor, bytes_per_voxel: int, budget: int) -> int:
    best = chunks
    for edge in range(2 * chunks, round_up(max(shape), chunks) + 1, chunks):
        tile = [min(edge, round_up(s, f)) + 2 * h for s, h, f in zip(shape, halo, factor)]
        if np.prod(tile) * bytes_per_voxel > budget:
            break
        best = edge
    return best


def gpu_free_memory(client: Client) -> int | None:
    """Free GPU memory per concurrent task (a worker's free memory over its threads), the least
    over the cluster's workers, in bytes; None without GPUs."""

    def free() -> int | None:
        import torch

        return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None

    threads = client.nthreads()
    values = [v // max(1, threads.get(w, 1)) for w, v in client.run(free).items() if v]
    return min(values) if values else None


def setup_filter(
    filter,
    inputs: list[str | os.PathLike],
    out: str | os.PathLike,
    *,
    block: int | None = None,
    chunks: int = 128,
    dtype: str = "float32",
) -> PredictionSetup:
    """The block-wise run of a classical filter (even and odd averaged first): same engine as ``predict``."""
    _check_dtype(dtype)
    refuse_inputs(out, inputs)
    volumes = _open_inputs(inputs)
    ndim = len(volumes[0].shape)
    plan, chunk_shape = _block_plan(volumes[0].shape, chunks, block, (filter.halo(),) * ndim, (1,) * ndim)
    identity = json.dumps({"method": filter.method, "params": filter.params}, sort_keys=True)
    memory = int(np.prod(plan.tile_shape(plan.block))) * 4 * (len(volumes) + 4)
    attrs = {"baseline": {"method": filter.method, "params": filter.params}}
    return PredictionSetup(FilterOperator(filter), identity, volumes, Path(out), plan, chunk_shape, dtype, attrs, memory)


def _check_dtype(dtype: str) -> None:
    if dtype not in ("float32", "float16"):
        raise TomocareError(f"output dtype {dtype!r} not supported (float32 or float16)")


def predict(
    setup: PredictionSetup,
    client: Client,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> Stats:
    """Run the plan on the cluster of ``client``; resume a matching interrupted run. One run per
    output at a time (``output_lock``). A missing parent directory is created, as other commands do.
    Inputs nothing can be computed from (all NaN, constant) are refused before anything is written."""
    for volume in setup.inputs:
        compute_stats(volume)
    setup.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with output_lock(setup.out):
            return _predict(setup, client, overwrite=overwrite, progress=progress)
    except OSError as err:
        if err.errno in _OUTPUT_ERRNOS and err.filename is None:  # a full disk on a worker says no file: the output
            err.filename = str(setup.out)
        raise


def finished_output(setup: PredictionSetup) -> Stats | None:
    """The statistics of ``setup.out`` when a run of this very setup finished it (same fingerprint), else None:
    a rerun after a failure past the output (a full disk while writing ``--mrc``) keeps it."""
    try:
        attrs = zarr.open_group(str(setup.out), mode="r").attrs["tomocare"]
        return Stats.from_dict(attrs["stats"]) if attrs.get("fingerprint") == setup.fingerprint() else None
    except Exception:  # no output, or not one of ours
        return None


def _predict(setup: PredictionSetup, client: Client, *, overwrite: bool, progress: bool) -> Stats:
    out = setup.out
    if out.exists() and not overwrite:
        raise TomocareError(f"{out}: output exists (use --overwrite to replace it)")
    tmp = temporary_sibling(out)
    fingerprint = setup.fingerprint()
    done = _resume_state(tmp, fingerprint)
    if done is None:
        remove(tmp)
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        create_level(group, "0", setup.plan.shape, setup.chunks, setup.dtype, "blosc-zstd")
        (tmp / RUN_FILE).write_text(json.dumps({"fingerprint": fingerprint, **setup.describe()}, indent=2))
        done = {}
    target = zarr.open_array(str(tmp / "0"), mode="r+")
    job = BlockJob(setup.operator, tuple(v.array for v in setup.inputs), target, setup.plan)
    rows = _run_blocks(job, client, done, tmp / DONE_FILE, progress, out.name)
    stats = Stats.from_rows(np.stack(list(rows.values())))
    if stats.count == 0:
        remove(tmp)
        raise TomocareError(f"{', '.join(str(v.path) for v in setup.inputs)}: no finite voxel in the result "
                            "(the input is all NaN or infinite?); nothing written")

    for level in tmp.iterdir():  # pyramid levels of an interrupted run are written again
        if level.is_dir() and level.name != "0":
            remove(level)
    group = zarr.open_group(str(tmp), mode="r+")
    n_levels = write_pyramid(group, 3, "blosc-zstd")
    first = setup.inputs[0]
    attrs = {
        **setup.attrs,
        "inputs": [str(v.path) for v in setup.inputs],
        "plan": setup.plan.describe(),
        "fingerprint": fingerprint,
    }
    if first.mrc_header is not None:
        attrs["mrc_header"] = first.mrc_header.to_dict()
    write_image_metadata(group, out, first.voxel_size, n_levels, stats, attrs)
    for name in (RUN_FILE, DONE_FILE):
        (tmp / name).unlink(missing_ok=True)
    commit(tmp, out)
    return stats


def _resume_state(tmp: Path, fingerprint: str) -> dict | None:
    """Finished blocks of an interrupted run with the same fingerprint, else None."""
    run = tmp / RUN_FILE
    if not run.exists():
        return None
    try:
        if json.loads(run.read_text())["fingerprint"] != fingerprint:
            log.warning("%s: an interrupted run with other settings; starting again", tmp)
            return None
    except (ValueError, KeyError):
        return None
    done = {}
    done_file = tmp / DONE_FILE
    if done_file.exists():
        text = done_file.read_text()
        if text and not text.endswith("\n"):  # a line torn by a full disk: dropped, its block redone
            text = text[: text.rfind("\n") + 1]
            done_file.write_text(text)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 2:  # a torn last line is simply recomputed
                index = tuple(int(i) for i in parts[0].split(","))
                done[index] = np.array([float(v) for v in parts[1].split(",")])
    log.info("resuming: %d blocks already done", len(done))
    return done


def _run_blocks(job: BlockJob, client: Client, done: dict, done_file: Path, progress: bool, name: str = "blocks") -> dict:
    """Submit blocks in waves (bounded in flight), record each as it completes."""
    todo = [b.index for b in job.plan.blocks() if b.index not in done]
    threads = sum(client.nthreads().values()) or 1
    in_flight = max(4, 3 * threads)
    bar = _progress(job.plan.n_blocks, len(done), progress, name)
    results = dict(done)
    with done_file.open("a") as log_file:
        pending = iter(todo)
        futures = as_completed()
        for index in _take(pending, in_flight):
            futures.add(_submit(client, job, index))
        for future in futures:
            try:
                index, row = future.result()
            except (TomocareError, MemoryError):
                raise
            except OSError as err:
                if err.errno in _OUTPUT_ERRNOS:  # the output's disk: said by the caller
                    raise
                raise TomocareError(_block_failure(job, future.key, err)) from None
            except Exception as err:  # a corrupt chunk, an I/O error on a worker: one line, the done-log kept
                raise TomocareError(_block_failure(job, future.key, err)) from None
            results[index] = row
            log_file.write(",".join(map(str, index)) + " " + ",".join(repr(float(v)) for v in row) + "\n")
            log_file.flush()
            bar(1)
            for nxt in _take(pending, 1):
                futures.add(_submit(client, job, nxt))
            future.release()
    bar(0, close=True)
    return results


def _block_failure(job: BlockJob, key: str, err: BaseException) -> str:
    """One line: which block, where it reads from, what went wrong, what to do."""
    index = tuple(int(i) for i in key.split("-")[2:-1])
    block = job.plan.block_at(index)
    region = ", ".join(f"{a} {s.start}:{s.stop}" for a, s in zip("zyx"[-len(block.read):], block.read))
    sources = ", ".join(describe(src, "input") for src in job.sources)
    message = " ".join(str(err).split()) or type(err).__name__
    return (f"{sources}: block {index} ({region}) could not be computed: {type(err).__name__}: {message}; the blocks "
            "finished are kept: repair or replace the input, then rerun the same command to resume")


def _indexed_block(job: BlockJob, index: tuple[int, ...]) -> tuple[tuple[int, ...], np.ndarray]:
    return index, run_block(job, index)


def _submit(client: Client, job: BlockJob, index: tuple[int, ...]):
    return client.submit(_indexed_block, job, index, pure=False, retries=2, key=f"predict-block-{'-'.join(map(str, index))}-{os.urandom(4).hex()}")


def _take(iterator, n: int) -> list:
    out = []
    for item in iterator:
        out.append(item)
        if len(out) == n:
            break
    return out


def _progress(total: int, start: int, enabled: bool, name: str = "blocks"):
    """A rich progress bar over blocks on a terminal; otherwise a log line on ``tomocare.progress``
    at most every ``LOG_INTERVAL`` seconds and at the end (blocks done / total, rate)."""
    if not enabled:
        import time

        from tomocare.train import progress as training_progress

        t0 = last = time.monotonic()
        done = start

        def log_line(n: int, close: bool = False) -> None:
            nonlocal done, last
            done += n
            now = time.monotonic()
            if close or now - last >= training_progress.LOG_INTERVAL:
                last = now
                rate = (done - start) / max(now - t0, 1e-9)
                training_progress.progress_log.info("%s: %d/%d blocks, %.2f blocks/s", name, done, total, rate)

        return log_line
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    bar = Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    task = bar.add_task(name, total=total, completed=start)
    bar.start()

    def advance(n: int, close: bool = False) -> None:
        bar.advance(task, n)
        if close:
            bar.stop()

    return advance
