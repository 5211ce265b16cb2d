"""A ``tls://`` scheduler: a job runs over TLS with self-signed certificates named by dask's config
(as environment variables, or set in the process), and without usable certificates the command ends
in one line saying what to set."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import dask
import mrcfile
import numpy as np
import pytest
import zarr
from distributed import LocalCluster
from distributed.security import Security
from helpers import write_test_mrc

from tomocare.cli import main
from tomocare.cluster import TLS_CONFIG, TLS_ENV


def _self_signed(d: Path, name: str) -> tuple[Path, Path]:
    """A certificate that is its own CA, and its key: by openssl, else by ``Security.temporary``
    (which needs the ``cryptography`` package)."""
    cert, key = d / f"{name}.pem", d / f"{name}.key"
    if shutil.which("openssl"):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", f"/CN={name}"],
                       check=True, capture_output=True)
        return cert, key
    try:
        temporary = Security.temporary()
    except ImportError:
        pytest.skip("neither openssl nor the cryptography package: no self-signed certificate")
    cert.write_text(temporary.tls_client_cert)
    key.write_text(temporary.tls_client_key)
    return cert, key


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """(scheduler address, {config key: file}) of a TLS-only local cluster of one worker process."""
    d = tmp_path_factory.mktemp("tls")
    cert, key = _self_signed(d, "dask-internal")
    security = Security(tls_ca_file=str(cert), tls_client_cert=str(cert), tls_client_key=str(key),
                        tls_scheduler_cert=str(cert), tls_scheduler_key=str(key),
                        tls_worker_cert=str(cert), tls_worker_key=str(key), require_encryption=True)
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, host="127.0.0.1", protocol="tls",
                      security=security, dashboard_address=":0", memory_limit="2GiB") as cluster:
        assert cluster.scheduler_address.startswith("tls://127.0.0.1:")
        yield cluster.scheduler_address, dict(zip(TLS_CONFIG, (str(cert), str(cert), str(key))))


@pytest.fixture(scope="module")
def volume(tmp_path_factory) -> tuple[Path, np.ndarray]:
    data = np.random.default_rng(3).normal(size=(16, 24, 20)).astype(np.float32)
    return write_test_mrc(tmp_path_factory.mktemp("vol") / "v.mrc", data), data


def test_convert_over_tls_with_certificates_from_the_environment(tls_cluster, volume, tmp_path):
    """The way a user runs it: ``DASK_DISTRIBUTED__COMM__TLS__*`` variables name the files."""
    address, files = tls_cluster
    source, data = volume
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASK_")}
    env.update(zip(TLS_ENV, files.values()))
    done = subprocess.run([sys.executable, "-m", "tomocare", "convert", str(source), str(tmp_path / "v.zarr"),
                           "--chunks", "8", "--levels", "1", "--scheduler", address],
                          env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert np.array_equal(zarr.open_group(str(tmp_path / "v.zarr"), mode="r")["0"][:], data)


def test_baseline_over_tls_with_certificates_in_dask_config(tls_cluster, volume, tmp_path, capsys):
    """Blocks submitted one by one (the prediction engine) over TLS, the settings given in-process."""
    address, files = tls_cluster
    source, data = volume
    out = tmp_path / "b.zarr"
    with dask.config.set(files):
        assert main(["baseline", "median", str(source), str(out), "--param", "size=1", "--chunks", "8",
                     "--mrc", str(tmp_path / "b.mrc"), "--scheduler", address]) == 0, capsys.readouterr().err
    assert np.array_equal(zarr.open_group(str(out), mode="r")["0"][:], data)  # a median of one voxel
    assert np.array_equal(mrcfile.read(tmp_path / "b.mrc"), data)


def test_tls_without_usable_certificates_is_one_line(tls_cluster, volume, tmp_path, capsys):
    address, files = tls_cluster
    source, _ = volume
    other_cert, other_key = _self_signed(tmp_path, "other")
    cases = [  # (settings, what the line says)
        (dict.fromkeys(TLS_CONFIG), ["needs the cluster's TLS certificates", *TLS_CONFIG, *TLS_ENV]),
        ({**files, TLS_CONFIG[0]: str(tmp_path / "missing.pem")}, ["certificates are not usable", "missing.pem"]),
        (dict(zip(TLS_CONFIG, (str(other_cert), str(other_cert), str(other_key)))), ["TLS certificate does not match"]),
    ]
    for settings, says in cases:
        with dask.config.set(settings):
            assert main(["convert", str(source), str(tmp_path / "o.zarr"), "--scheduler", address]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {address}: ") and "\n" not in err, err
        assert all(part in err for part in says), err
    assert not (tmp_path / "o.zarr").exists()
