"""Options shared by several commands, and the dask client they run on."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

Scheduler = Annotated[
    Optional[str],
    typer.Option("--scheduler", help="Address (tcp://HOST:8786, tls://HOST:8786) or scheduler-file of a running dask cluster "
                 "(default: start a local one). tls:// takes the certificates from dask's config: "
                 "distributed.comm.tls.ca-file, .client.cert and .client.key, or the environment variables "
                 "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ..._CLIENT__CERT and ..._CLIENT__KEY."),
]
Workers = Annotated[Optional[int], typer.Option("--workers", help="Worker processes of the local cluster (default: one per core).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that exist.")]


def open_client(scheduler: str | None, workers: int | None):
    """The dask client of ``--scheduler`` (or of a local cluster of ``--workers`` processes); a context manager."""
    from tomocare.cluster import dask_client

    return dask_client(scheduler, n_workers=workers)
