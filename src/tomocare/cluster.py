"""The one place that starts or connects to dask.

An existing scheduler (address or scheduler file) when given; else a ``LocalCUDACluster`` with one
worker per GPU when GPUs and dask-cuda are present; else a ``LocalCluster`` of worker processes.
A client that is already active in this process (a notebook, a test) is reused as it is.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from distributed import Client, LocalCluster, default_client

log = logging.getLogger(__name__)


def gpu_count() -> int:
    """Number of CUDA devices visible to this process.

    Asks the driver through torch only when an NVIDIA driver is installed, so CPU machines do not
    pay for importing torch in the client process.
    """
    if not Path("/proc/driver/nvidia").exists() and not shutil.which("nvidia-smi"):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _local_cluster(n_workers: int | None, threads_per_worker: int | None, memory_limit: str):
    if gpu_count():
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError:
            log.warning("GPUs found but dask-cuda is not installed (pip install 'tomocare[gpu]'); using CPU workers")
        else:
            return LocalCUDACluster(threads_per_worker=threads_per_worker or 1, memory_limit=memory_limit)
    cores = os.cpu_count() or 1
    threads = threads_per_worker or 1
    workers = n_workers or max(1, cores // threads)
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        memory_limit=memory_limit,
        dashboard_address=":0",
    )


def _active_client() -> Client | None:
    try:
        return default_client()
    except ValueError:
        return None


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str = "auto",
) -> Iterator[Client]:
    """A distributed client for the duration of a command; closes what it started."""
    if scheduler:
        if Path(scheduler).suffix == ".json" and Path(scheduler).exists():
            client = Client(scheduler_file=scheduler)
        else:
            client = Client(scheduler)
        with client:
            yield client
        return
    existing = _active_client()
    if existing is not None:
        yield existing
        return
    with _local_cluster(n_workers, threads_per_worker, memory_limit) as cluster, Client(cluster) as client:
        log.info("dask dashboard: %s", client.dashboard_link)
        yield client
