"""Distributed, resumable, seamless block-wise computation: one dask task per output block.

``plan_run`` checks the inputs and plans the blocks of any :class:`~tomocare.predict.operator.BlockOperator`
(the trained network for ``predict``, a classical filter for ``baseline``); ``run_blocks`` runs them.
A task reads its block plus halo straight from the input store(s), applies the operator (opened
once per worker) and writes only the block's core into its own chunks of the output — no
neighbour exchange, no locks. A task that runs twice writes the same bytes, so
a lost worker or a resumed run is safe. The client records each block once its task returned
(its data is written by then); a rerun skips recorded blocks.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import zarr
from distributed import Client, as_completed

from tomocare.cluster import usable_cores
from tomocare.config import PredictSettings
from tomocare.errors import TomocareError
from tomocare.io.atomic import check_output, commit, output_lock, refuse_inputs, remove, temporary_sibling
from tomocare.io.discover import Pair, open_pair
from tomocare.io.omezarr import create_level, write_image_metadata, write_pyramid
from tomocare.io.stats import Stats, block_stats
from tomocare.io.volume import Volume, compute_stats, open_volume
from tomocare.predict.operator import BlockOperator, opened
from tomocare.predict.plan import BlockPlan, Shape, network_geometry, read_tiles, round_up
from tomocare.progress import block_progress
from tomocare.train.sampler import LazyArray, describe

log = logging.getLogger(__name__)

RUN_FILE = "tomocare_run.json"
DONE_FILE = "tomocare_done.txt"
_OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)  # the output's disk is full or read-only
#: Memory for an operator's working set per task on CPU workers when neither the workers' memory nor
#: ``task_memory_mib`` is known: the network in pieces, two workers and the client within 2 GiB.
CPU_TASK_MEMORY = 384 * 2**20
#: Share of a CPU worker's memory limit (per thread) one task plans for; the rest is the worker itself
#: (torch, the tiles read, dask's buffers) and headroom.
CPU_TASK_SHARE = 0.25


@dataclass(frozen=True)
class TaskMemory:
    """Memory one task may use on its worker: ``budget`` bytes of ``device`` memory; ``slots``: tasks
    the cluster runs at once (worker threads in all)."""

    device: Literal["cpu", "cuda"]
    budget: int
    slots: int = 1


@dataclass(frozen=True)
class BlockJob:
    """Everything a block task needs; small and picklable (arrays are lazy handles)."""

    operator: BlockOperator
    sources: tuple[LazyArray, ...]  # (even, odd) or (single,)
    target: zarr.Array
    plan: BlockPlan


def run_block(job: BlockJob, index: tuple[int, ...]) -> np.ndarray:
    """Compute and write one output block; return its statistics row."""
    block = job.plan.block_at(index)
    core = block.crop(opened(job.operator)(read_tiles(job.sources, block)))
    job.target[block.core] = core.astype(job.target.dtype, copy=False)
    return block_stats(core)


def input_identity(path: Path) -> list:
    """Size, modification time and inode of an input file, or of a zarr store's metadata and
    level-0 chunk directory: a new file written at the same path differs."""
    parts = [path] if path.is_file() else [path / "zarr.json", path / "0" / "zarr.json", path / ".zattrs",
                                           path / "0" / ".zarray", path / "0"]
    out = []
    for part in parts:
        try:
            st = part.stat()
        except OSError:
            continue
        out.append([part.name, st.st_size, st.st_mtime_ns, st.st_ino])
    return out


@dataclass(frozen=True)
class BlockRun:
    """An operator over checked inputs, and the plan of its blocks; ``describe()`` is the dry run."""

    operator: BlockOperator
    inputs: tuple[Volume, ...]
    out: Path
    plan: BlockPlan
    chunks: Shape
    dtype: str
    memory_per_task: int  # bytes, rough
    budget: int | None = None  # bytes a task was planned for
    zarr_format: Literal[2, 3] = 3  # of the output: 2 for OME-Zarr 0.4

    def fingerprint(self) -> str:
        """What the output depends on: operator, inputs (path and identity on disk), plan, layout.
        An input replaced between an interrupted run and its rerun changes it: the rerun starts afresh."""
        blob = json.dumps(
            [self.operator.identity(), [[str(v.path.resolve()), input_identity(v.path)] for v in self.inputs],
             self.plan.describe(), list(self.chunks), self.dtype, *([2] if self.zarr_format == 2 else [])],
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def describe(self) -> dict:
        pieces = getattr(self.operator, "pieces", lambda tile: None)(self.plan.tile_shape(self.plan.block))
        return {
            "operator": self.operator.describe(),
            **self.plan.describe(),
            "inputs": [str(v.path) for v in self.inputs],
            "output": str(self.out),
            "output_chunks": list(self.chunks),
            "dtype": self.dtype,
            "estimated_memory_per_task_mib": round(self.memory_per_task / 2**20),
            **({"task_memory_budget_mib": round(self.budget / 2**20)} if self.budget else {}),
            **({"network_pieces": list(pieces)} if pieces else {}),
        }


def block_store(out: Path, output_format: str) -> Path:
    """Where the blocks of a run are written: ``out`` itself, or for the ``mrc`` format a hidden zarr
    beside it (``.NAME.mrc.zarr``, resumable like any output), exported to ``out`` and then removed."""
    return out.with_name(f".{out.name}.zarr") if output_format == "mrc" else out


def open_inputs(inputs: Sequence[str | os.PathLike], *, images: bool = False) -> tuple[Volume, ...]:
    """An even and an odd half (checked to match), or one volume; ``images``: 2-D data as stacks."""
    if not 1 <= len(inputs) <= 2:
        raise TomocareError("give an even and an odd half, or one volume")
    if len(inputs) == 2:
        pair = open_pair(Pair(Path(inputs[0]).stem, Path(inputs[0]), Path(inputs[1])), images=images)
        return pair.even, pair.odd
    return (open_volume(inputs[0], images=images),)


def plan_run(
    operator: BlockOperator,
    inputs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    settings: PredictSettings | None = None,
    *,
    memory: TaskMemory | None = None,
) -> BlockRun:
    """Open and check the inputs and the operator against them; plan the blocks. Reads no voxel data
    (unless the operator depends on the data's statistics, e.g. NAD's contrast).

    With ``memory`` (what a task of the workers may use: ``task_memory(client)``) and no
    ``settings.block``, the block is the largest multiple of the chunks whose task fits it and that
    leaves every slot a block (where the chunks do): larger blocks waste less on halos
    (computed/output ratio 2.97 at 128, 1.81 at 256, 1.50 at 384 for halo 28). Without it blocks
    are ``settings.block`` or the chunks. On CPU workers the operator then computes within the
    budget (``settings.task_memory_mib`` first) where it can (the network in pieces, with the same
    output), so memory per task is bounded whatever the block.
    """
    settings = settings or PredictSettings()
    out = Path(out)
    refuse_inputs(out, [*inputs, *operator.sources()])
    volumes = open_inputs(inputs, images=operator.images)
    operator = operator.bind(volumes, strict=settings.strict)
    shape = volumes[0].shape
    try:
        halo, factor = network_geometry(len(shape), operator.ndim, operator.halo, operator.factor)
    except TomocareError as err:
        raise TomocareError(f"{volumes[0].path}: {err} (use a {len(shape)}-D model)") from None
    device, budget = (memory.device, memory.budget) if memory else ("cpu", CPU_TASK_MEMORY)
    if device == "cpu" and settings.task_memory_mib:
        budget = settings.task_memory_mib * 2**20

    def task_bytes(tile: Shape) -> int:  # the operator's working set, the tiles read and the output
        io = 8 * (len(volumes) + 1) * int(np.prod(tile))
        return operator.call_voxels(tile) * operator.bytes_per_voxel(device) + io

    block = settings.block
    if block is None and memory:
        block = settings.chunks
        enough = min(memory.slots, BlockPlan(shape, _edge(shape, block, factor), halo, factor).n_blocks)
        for edge in range(2 * settings.chunks, round_up(max(shape), settings.chunks) + 1, settings.chunks):
            grown = BlockPlan(shape, _edge(shape, edge, factor), halo, factor)
            if task_bytes(grown.tile_shape(grown.block)) > budget or grown.n_blocks < enough:
                break
            block = edge
    block = block or settings.chunks
    if block % settings.chunks and block < max(shape):
        raise TomocareError(f"block {block} must be a multiple of the output chunks ({settings.chunks})")
    plan = BlockPlan(shape, _edge(shape, block, factor), halo, factor)
    tile = plan.tile_shape(plan.block)
    if device == "cpu":
        operator = operator.within(tile, budget)
    return BlockRun(operator, volumes, out, plan, tuple(min(settings.chunks, s) for s in shape), settings.dtype,
                    task_bytes(tile), budget, 2 if settings.format == "ome-zarr-0.4" else 3)


def _edge(shape: Shape, block: int, factor: Shape) -> Shape:
    return tuple(min(block, round_up(s, f)) for s, f in zip(shape, factor))


def task_memory(client: Client) -> TaskMemory:
    """What one task may use on the cluster's workers (the least over them): half of a GPU's free
    memory over the worker's threads, or ``CPU_TASK_SHARE`` of a CPU worker's memory limit over its
    threads (of the machine's memory over its cores where a worker has no limit)."""

    def free() -> int | None:
        import torch

        return torch.cuda.mem_get_info()[0] if torch.cuda.is_available() else None

    threads = client.nthreads()
    gpus = [v // max(1, threads.get(w, 1)) for w, v in client.run(free).items() if v]
    slots = max(1, sum(threads.values()))
    if gpus:
        return TaskMemory("cuda", min(gpus) // 2, slots)
    workers = client.scheduler_info(n_workers=-1)["workers"]
    limits = [(info.get("memory_limit") or _machine_memory() // usable_cores()) // max(1, info.get("nthreads", 1))
              for info in workers.values()]
    return TaskMemory("cpu", int(CPU_TASK_SHARE * min(limits, default=_machine_memory() // usable_cores())), slots)


def local_task_memory(n_workers: int | None = None) -> TaskMemory:
    """``task_memory`` of the CPU workers ``dask_client`` starts on this machine (``n_workers``
    processes of one thread, memory shared equally), known before they start: for ``--dry-run``."""
    workers = n_workers or usable_cores()
    return TaskMemory("cpu", int(CPU_TASK_SHARE * _machine_memory() // workers), workers)


def _machine_memory() -> int:
    from distributed.system import MEMORY_LIMIT

    return int(MEMORY_LIMIT)


def run_blocks(
    planned: BlockRun,
    client: Client,
    *,
    overwrite: bool = False,
    progress: bool = False,
) -> Stats:
    """Run the plan on the cluster of ``client``; resume a matching interrupted run. One run per
    output at a time (``output_lock``). A missing parent directory is created, as other commands do.
    Inputs nothing can be computed from (all NaN, constant) are refused before anything is written."""
    for volume in planned.inputs:
        compute_stats(volume)
    planned.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with output_lock(planned.out):
            return _run(planned, client, overwrite=overwrite, progress=progress)
    except OSError as err:
        if err.errno in _OUTPUT_ERRNOS and err.filename is None:  # a full disk on a worker says no file: the output
            err.filename = str(planned.out)
        raise


def finished_output(planned: BlockRun) -> Stats | None:
    """The statistics of ``planned.out`` when a run of this very plan finished it (same fingerprint), else None:
    a rerun after a failure past the output (a full disk while writing ``--mrc``) keeps it."""
    try:
        attrs: Any = zarr.open_group(str(planned.out), mode="r").attrs["tomocare"]
        return Stats.from_dict(attrs["stats"]) if attrs.get("fingerprint") == planned.fingerprint() else None
    except Exception:  # no output, or not one of ours
        return None


def _run(planned: BlockRun, client: Client, *, overwrite: bool, progress: bool) -> Stats:
    out = planned.out
    check_output(out, overwrite=overwrite)
    tmp = temporary_sibling(out)
    fingerprint = planned.fingerprint()
    done = _resume_state(tmp, fingerprint)
    if done is None:
        remove(tmp)
        group = zarr.open_group(str(tmp), mode="w", zarr_format=planned.zarr_format)
        create_level(group, "0", planned.plan.shape, planned.chunks, planned.dtype, "blosc-zstd")
        (tmp / RUN_FILE).write_text(json.dumps({"fingerprint": fingerprint, **planned.describe()}, indent=2))
        done = {}
    target = zarr.open_array(str(tmp / "0"), mode="r+")
    job = BlockJob(planned.operator, tuple(v.array for v in planned.inputs), target, planned.plan)
    rows = _submit_blocks(job, client, done, tmp / DONE_FILE, progress, out.name)
    stats = Stats.from_rows(np.stack(list(rows.values())))
    if stats.count == 0:
        remove(tmp)
        raise TomocareError(f"{', '.join(str(v.path) for v in planned.inputs)}: no finite voxel in the result "
                            "(the input is all NaN or infinite?); nothing written")

    for level in tmp.iterdir():  # pyramid levels of an interrupted run are written again
        if level.is_dir() and level.name != "0":
            remove(level)
    group = zarr.open_group(str(tmp), mode="r+")
    n_levels = write_pyramid(group, 3, "blosc-zstd")
    first = planned.inputs[0]
    attrs = {
        "operator": planned.operator.describe(),
        "inputs": [str(v.path) for v in planned.inputs],
        "plan": planned.plan.describe(),
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


def _submit_blocks(job: BlockJob, client: Client, done: dict, done_file: Path, progress: bool,
                   name: str = "blocks") -> dict:
    """Submit blocks in waves (bounded in flight), record each as it completes."""
    todo = [b.index for b in job.plan.blocks() if b.index not in done]
    threads = sum(client.nthreads().values()) or 1
    in_flight = max(4, 3 * threads)
    bar = block_progress(job.plan.n_blocks, len(done), progress, name)
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
    return client.submit(_indexed_block, job, index, pure=False, retries=2,
                         key=f"predict-block-{'-'.join(map(str, index))}-{os.urandom(4).hex()}")


def _take(iterator, n: int) -> list:
    out = []
    for item in iterator:
        out.append(item)
        if len(out) == n:
            break
    return out
