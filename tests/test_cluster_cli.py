"""A real multi-process cluster started from the command line (``dask scheduler`` + 2 ``dask worker``).

``tomocare train`` and ``tomocare predict`` run against it with ``--scheduler``; the prediction
must equal the one made on the session's LocalCluster byte for byte. Also: the scheduler-file
form, one-line errors for unreachable schedulers, and the choice of local cluster (GPU or CPU).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

from tomocare import cluster
from tomocare.cli import main
from tomocare.config import PredictSettings
from tomocare.model import Model
from tomocare.predict.engine import plan_run, run_blocks
from tomocare.predict.network import NetworkOperator
from tomocare.simulate import simulate_dataset

BIN = Path(sys.executable).parent
TINY = ["--depth", "1", "--channels", "4", "--patch-size", "16", "--batch-size", "2", "--n-patches", "8",
        "--max-steps", "4"]


def _command(name: str) -> list[str]:
    exe = BIN / name
    return [str(exe)] if exe.exists() else [sys.executable, "-m", {"dask": "dask", "tomocare": "tomocare.cli"}[name]]


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each process group (a nanny and its worker), all at once; SIGKILL after 15 s."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def cli_cluster(tmp_path_factory):
    """(address, scheduler file) of ``dask scheduler`` and two ``dask worker`` processes on loopback."""
    d = tmp_path_factory.mktemp("cluster")
    sched_file = d / "scheduler.json"
    procs, logs = [], []

    def start(name: str, args: list[str]) -> None:
        log = open(d / f"{name}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(_command("dask") + args, stdout=log, stderr=subprocess.STDOUT,
                                      cwd=d, start_new_session=True))

    try:
        start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
                            "--scheduler-file", str(sched_file)])
        for i in range(2):
            start(f"worker{i}", ["worker", "--scheduler-file", str(sched_file), "--host", "127.0.0.1",
                                 "--nworkers", "1", "--nthreads", "1", "--memory-limit", "2GiB",
                                 "--no-dashboard", "--name", f"cli-{i}", "--local-directory", str(d / f"w{i}")])
        # The scheduler-file form of --scheduler (waits for the file while the scheduler starts).
        address = cluster.scheduler_address(str(sched_file), timeout=60)
        assert address == json.loads(sched_file.read_text())["address"]
        assert address.startswith("tcp://127.0.0.1:")
        with warnings.catch_warnings():  # "no workers yet" while they start
            warnings.simplefilter("ignore")
            c = cluster.connect(str(sched_file), timeout=30)
        with c:
            c.wait_for_workers(2, timeout=90)
            assert sorted(w["name"] for w in c.scheduler_info()["workers"].values()) == ["cli-0", "cli-1"]
        yield address, sched_file
    finally:
        _stop(procs[::-1])
        for log in logs:
            log.close()
        for proc in procs:
            assert proc.poll() is not None


@pytest.fixture(scope="module")
def pair(tmp_path_factory, client):
    d = tmp_path_factory.mktemp("sim")
    (row,) = simulate_dataset(d, n_tomograms=1, shape=(32, 64, 64), snr=0.5, seed=2, chunks=32)
    return Path(row["even"]), Path(row["odd"])


def test_train_and_predict_on_cli_cluster_equal_local(tmp_path, cli_cluster, pair, client):
    address, sched_file = cli_cluster
    even, odd = pair
    model = tmp_path / "model"
    # Training in this process, patches read by the command-line workers.
    assert main(["train", "--even", str(even), "--odd", str(odd), "--out", str(model), *TINY,
                 "--scheduler", address]) == 0
    assert (model / "model.json").exists()

    # Prediction by the tomocare executable in its own process, against the scheduler address.
    out = tmp_path / "cli.zarr"
    run = subprocess.run(_command("tomocare") + ["predict", "--model", str(model), "--even", str(even),
                                                 "--odd", str(odd), "--out", str(out), "--chunks", "32",
                                                 "--scheduler", address],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr
    assert "4 blocks" in run.stdout

    # The same prediction on the session's LocalCluster.
    ref = tmp_path / "local.zarr"
    operator = NetworkOperator(Model.read(model))
    run_blocks(plan_run(operator, [even, odd], ref, PredictSettings(chunks=32)), client)
    a = zarr.open_group(str(out), mode="r")["0"][:]
    b = zarr.open_group(str(ref), mode="r")["0"][:]
    assert a.shape == (32, 64, 64) and np.isfinite(a).all() and a.std() > 0
    assert np.array_equal(a, b)

    # The command-line workers did the work: they hold the network opened (once per worker).
    with cluster.connect(str(sched_file)) as c:
        from tomocare.predict import operator as block_operator

        opened = c.run(lambda: list(block_operator._OPENED))
        assert any(keys == [operator.key()] for keys in opened.values()), opened


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_line(tmp_path, pair, monkeypatch, capsys):
    monkeypatch.setenv("TOMOCARE_CONNECT_TIMEOUT", "1")
    even, _ = pair
    cases = {
        f"tcp://127.0.0.1:{_free_port()}": "cannot reach the dask scheduler",
        str(tmp_path / "missing.json"): "no scheduler file after 1 s",
        str(even): "not a dask scheduler file",
        "nonsense": "not a scheduler address or file",
    }
    for scheduler, message in cases.items():
        t = time.monotonic()
        assert main(["convert", str(even), str(tmp_path / "o.zarr"), "--scheduler", scheduler]) == 2
        assert time.monotonic() - t < 10
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {scheduler}") and message in err and "\n" not in err, err
    assert not (tmp_path / "o.zarr").exists()


class _Recorder:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


def test_local_cluster_choice(monkeypatch):
    """GPUs + dask-cuda: LocalCUDACluster, one worker per GPU (two threads); without dask-cuda: LocalCluster of
    processes."""
    class FakeCUDA(_Recorder):
        pass

    monkeypatch.setattr(cluster, "LocalCluster", _Recorder)
    monkeypatch.setattr(cluster, "gpu_count", lambda: 2)
    monkeypatch.setitem(sys.modules, "dask_cuda", types.SimpleNamespace(LocalCUDACluster=FakeCUDA))
    made = cluster._local_cluster(None, None, "auto")
    # I/O overlaps the GPU
    assert isinstance(made, FakeCUDA) and made.kwargs["n_workers"] == 2 and made.kwargs["threads_per_worker"] == 2
    assert cluster._local_cluster(1, None, "auto").kwargs["n_workers"] == 1

    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # import fails
    made = cluster._local_cluster(3, 1, "2GiB")
    assert type(made) is _Recorder and made.kwargs["n_workers"] == 3 and made.kwargs["processes"] is True

    monkeypatch.setattr(cluster, "gpu_count", lambda: 0)
    assert type(cluster._local_cluster(None, 1, "auto")) is _Recorder



def test_local_cluster_has_a_worker_per_core_this_process_may_use(monkeypatch):
    """One worker per core of the process's share (affinity, cgroup quota), not of the whole machine."""
    assert 1 <= cluster.usable_cores() <= len(os.sched_getaffinity(0))
    monkeypatch.setattr(cluster, "LocalCluster", _Recorder)
    monkeypatch.setattr(cluster, "gpu_count", lambda: 0)
    monkeypatch.setattr(cluster, "usable_cores", lambda: 3)
    assert cluster._local_cluster(None, None, "auto").kwargs["n_workers"] == 3


def test_local_cluster_listens_on_loopback_only():
    """The scheduler, the workers and the dashboard of the default local cluster bind 127.0.0.1."""
    with cluster._local_cluster(1, 1, "1GiB") as local:
        addresses = [local.scheduler_address, *local.scheduler_info["workers"]]
        assert all(a.startswith("tcp://127.0.0.1:") for a in addresses), addresses
        assert local.dashboard_link.startswith("http://127.0.0.1:")
