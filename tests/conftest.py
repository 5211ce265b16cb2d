"""Shared fixtures: a real dask cluster of worker processes on loopback."""

from __future__ import annotations

import pytest
from distributed import Client, LocalCluster


@pytest.fixture(scope="session")
def client():
    """Two single-threaded worker processes, as on the 2-core CI machine."""
    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=":0",
        memory_limit="4GiB",
    ) as cluster, Client(cluster) as c:
        yield c
