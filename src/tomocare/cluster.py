"""The one place that starts or connects to dask.

An existing scheduler (an address such as ``tcp://host:8786``, or the path of a scheduler file
that ``dask scheduler --scheduler-file`` or dask-jobqueue wrote) when given; else a
``LocalCUDACluster`` with one worker per GPU when GPUs and dask-cuda are present; else a
``LocalCluster`` of worker processes. A client that is already active in this process (a notebook,
a test) is reused as it is. Deployment on SLURM and Kubernetes: ``docs/clusters.md``.

A ``tls://`` scheduler is reached with dask's own security settings: the certificates named by
dask's config (``TLS_CONFIG``), e.g. as environment variables (``TLS_ENV``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from distributed import Client, LocalCluster, default_client

from tomocare.errors import TomocareError

log = logging.getLogger(__name__)

#: Seconds to wait for a scheduler (and for a scheduler file to appear); ``TOMOCARE_CONNECT_TIMEOUT``
#: overrides it, e.g. when the scheduler of a batch job is still starting.
CONNECT_TIMEOUT = 10.0

#: dask's config keys for the client's TLS certificates, and the environment variables that set them.
TLS_CONFIG = ("distributed.comm.tls.ca-file", "distributed.comm.tls.client.cert", "distributed.comm.tls.client.key")
TLS_ENV = tuple("DASK_" + key.upper().replace(".", "__").replace("-", "_") for key in TLS_CONFIG)


def trim_memory() -> None:
    """Give freed heap memory back to the operating system (glibc's malloc_trim; a no-op elsewhere).

    After training, the client's and workers' allocators keep hundreds of MB they no longer use;
    prediction then starts from a lower resident size (dask's advice for "unmanaged memory").
    """
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def release_memory(client: Client) -> None:
    """:func:`trim_memory` in this process and on every worker of ``client``."""
    trim_memory()
    with contextlib.suppress(Exception):  # best effort: a worker that cannot run it loses nothing
        client.run(trim_memory)


def gpu_count() -> int:
    """Number of CUDA devices visible to this process.

    Asks the driver through torch only when an NVIDIA driver is installed, so CPU machines do not
    pay for importing torch in the client process.
    """
    if not Path("/proc/driver/nvidia").exists() and not shutil.which("nvidia-smi"):
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity and cgroup quota (a batch job's or a
    container's share of the machine), as dask counts them."""
    from dask.system import cpu_count

    return cpu_count()


def _local_cluster(n_workers: int | None, threads_per_worker: int | None, memory_limit: str):
    gpus = gpu_count()
    if gpus:
        try:
            from dask_cuda import LocalCUDACluster
        except ImportError as err:
            log.warning("GPUs found but dask-cuda is not usable (%s; pip install 'tomocare[gpu]'); "
                        "using CPU workers", err)
        else:
            log.info("local cluster: LocalCUDACluster, one worker per GPU (%d)", min(n_workers or gpus, gpus))
            # Two threads per GPU worker: one task reads and writes its blocks while another runs
            # the network (torch releases the GIL), so the GPU does not wait on storage.
            return LocalCUDACluster(
                n_workers=min(n_workers or gpus, gpus),
                threads_per_worker=threads_per_worker or 2,
                memory_limit=memory_limit,
                host="127.0.0.1",  # scheduler, workers and dashboard on loopback only
                dashboard_address="127.0.0.1:0",
                silence_logs=logging.CRITICAL,
            )
    cores = usable_cores()
    threads = threads_per_worker or 1
    workers = n_workers or max(1, cores // threads)
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=threads,
        processes=True,
        memory_limit=memory_limit,
        host="127.0.0.1",  # scheduler, workers and dashboard on loopback only
        dashboard_address="127.0.0.1:0",
        silence_logs=logging.CRITICAL,  # a failed task is reported by tomocare in one line, not as a worker traceback
    )


def _active_client() -> Client | None:
    try:
        return default_client()
    except ValueError:
        return None


def connect_timeout() -> float:
    """The connect timeout in seconds: ``TOMOCARE_CONNECT_TIMEOUT`` or ``CONNECT_TIMEOUT``."""
    value = os.environ.get("TOMOCARE_CONNECT_TIMEOUT")
    if value is None:
        return CONNECT_TIMEOUT
    try:
        return float(value)
    except ValueError:
        raise TomocareError(f"TOMOCARE_CONNECT_TIMEOUT={value!r}: not a number of seconds") from None


def _is_scheduler_file(scheduler: str) -> bool:
    return "://" not in scheduler and (Path(scheduler).is_file() or scheduler.endswith(".json"))


def scheduler_address(scheduler: str, timeout: float | None = None) -> str:
    """The address named by ``--scheduler``: the address itself, or the one in a scheduler file.

    A scheduler file that does not exist yet is waited for (a batch job may still be starting).
    """
    timeout = connect_timeout() if timeout is None else timeout
    if _is_scheduler_file(scheduler):
        path = Path(scheduler)
        deadline = time.monotonic() + timeout
        while not path.is_file():
            if time.monotonic() > deadline:
                raise TomocareError(f"{path}: no scheduler file after {timeout:g} s (is the scheduler running?)")
            time.sleep(0.2)
        try:
            address = json.loads(path.read_text())["address"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise TomocareError(f"{path}: not a dask scheduler file ({type(err).__name__}: {err})") from None
    else:
        address = scheduler
    from distributed.comm.addressing import parse_address, parse_host_port

    try:
        protocol, location = parse_address(address)
        if protocol in ("tcp", "tls", "ucx", "ucxx"):
            parse_host_port(location)
    except ValueError as err:
        raise TomocareError(
            f"{scheduler}: not a scheduler address or file ({err}); e.g. tcp://HOST:8786 or scheduler.json"
        ) from None
    return address


def tls_security(address: str):
    """dask's ``Security`` from its config for a ``tls://`` address, its certificates loaded and
    checked (one line naming the settings when they are missing or unusable); None for other
    addresses, or when a ``distributed.client.security-loader`` provides it."""
    import dask
    from distributed.security import Security

    if not address.startswith("tls://") or dask.config.get("distributed.client.security-loader", None):
        return None
    settings = ", ".join(f"{key} (or {env})" for key, env in zip(TLS_CONFIG, TLS_ENV))
    try:
        security = Security()
    except ValueError as err:  # e.g. an unsupported distributed.comm.tls.min-version
        raise TomocareError(f"{address}: dask's TLS settings are not usable ({err})") from None
    tls = security.get_tls_config_for_role("client")
    if not (tls["ca_file"] and tls["cert"]):
        raise TomocareError(f"{address}: a tls:// scheduler needs the cluster's TLS certificates; set dask's config "
                            f"{settings}; the key may also be appended to the certificate file")
    try:
        security.get_connection_args("client")  # reads the files now
    except (OSError, ValueError) as err:  # ssl.SSLError is an OSError
        values = [v if "\n" not in str(v) else "(PEM text)" for v in
                  (tls["ca_file"], tls["cert"], tls["key"])]
        given = ", ".join(f"{key}={v}" for key, v in zip(TLS_CONFIG, values))
        raise TomocareError(
            f"{address}: the TLS certificates are not usable ({err}); dask's config has {given}"
        ) from None
    return security


def connect(scheduler: str, timeout: float | None = None) -> Client:
    """A client of the scheduler named by ``scheduler``; one-line errors when it cannot be reached."""
    timeout = connect_timeout() if timeout is None else timeout
    address = scheduler_address(scheduler, timeout)
    security = tls_security(address)
    try:
        client = Client(address, timeout=timeout, security=security)
    except OSError as err:  # includes TimeoutError
        where = address if address == scheduler else f"{address} (from {scheduler})"
        raise TomocareError(f"{where}: cannot reach the dask scheduler ({err})") from None
    if not client.scheduler_info().get("workers"):
        warnings.warn(f"{address}: the scheduler has no workers yet; tasks wait until workers join", stacklevel=2)
    return client


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None,
    *,
    n_workers: int | None = None,
    threads_per_worker: int | None = None,
    memory_limit: str = "auto",
) -> Iterator[Client]:
    """A distributed client for the duration of a command; closes what it started.

    ``n_workers``, ``threads_per_worker`` and ``memory_limit`` size a local cluster only; with a
    ``scheduler`` the cluster is whatever the site started.
    """
    if scheduler:
        if n_workers is not None:
            warnings.warn("--workers is ignored with --scheduler (the cluster's workers are used)", stacklevel=3)
        with connect(scheduler) as client:
            yield client
        return
    existing = _active_client()
    if existing is not None:
        yield existing
        return
    with _local_cluster(n_workers, threads_per_worker, memory_limit) as cluster, Client(cluster) as client:
        log.info("dask dashboard: %s", client.dashboard_link)
        yield client
