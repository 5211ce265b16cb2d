"""Distributed prediction: equals whole-volume inference, resumes, survives a killed worker."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
import zarr
from distributed import Client, LocalCluster
from helpers import write_test_mrc

from tomocare import TomocareError
from tomocare.cli import main
from tomocare.config import PredictSettings
from tomocare.io.volume import open_volume
from tomocare.model import Model, save_model
from tomocare.nn.unet import UNet
from tomocare.predict.engine import (
    CPU_TASK_SHARE,
    DONE_FILE,
    TaskMemory,
    local_task_memory,
    plan_run,
    run_blocks,
    task_memory,
)
from tomocare.predict.network import NetworkOperator
from tomocare.testing import RecordingOperator

SHAPE = (40, 72, 80)


def _model(path, depth):
    torch.manual_seed(3)
    net = UNet(ndim=3, depth=depth, base_channels=4)
    save_model(path, net, mean=0.5, std=2.0, voxel_size=10.0, patch_size=32, trained_on=["test"])
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("model") / "model", depth=2)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """Depth 1 (halo 10): many small blocks stay cheap for the resume and fault tests."""
    return _model(tmp_path_factory.mktemp("model") / "small", depth=1)


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    d = tmp_path_factory.mktemp("halves")
    rng = np.random.default_rng(0)
    signal_ = rng.normal(size=SHAPE).astype(np.float32)
    even = write_test_mrc(d / "t_even.mrc", signal_ + rng.normal(size=SHAPE).astype(np.float32), voxel_size=(10.0,) * 3)
    odd = write_test_mrc(d / "t_odd.mrc", signal_ + rng.normal(size=SHAPE).astype(np.float32), voxel_size=(10.0,) * 3)
    return even, odd


def _plan(model_dir, inputs, out, *, memory=None, **settings):
    """The network of ``model_dir`` planned over ``inputs`` with ``PredictSettings(**settings)``."""
    settings = PredictSettings(**settings)
    operator = NetworkOperator.from_settings(Model.read(model_dir), settings)
    return plan_run(operator, inputs, out, settings, memory=memory)


def _reference(model_dir, even, odd, precision="auto"):
    """Whole-volume prediction, at the engine's default precision (bf16 on CPUs that have it)."""
    vols = [np.asarray(open_volume(p).array[...]) for p in (even, odd)]
    return Model.read(model_dir).predict_whole(vols, precision=precision)


def test_distributed_prediction_equals_whole_volume(tmp_path, client, model_dir, halves):
    setup = _plan(model_dir, list(halves), tmp_path / "out.zarr", chunks=32)
    assert setup.plan.n_blocks == 2 * 3 * 3
    stats = run_blocks(setup, client)
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    assert group.attrs["tomocare"]["operator"] == setup.operator.describe()  # the model, precision, orientations
    assert group.attrs["tomocare"]["operator"]["model"] == str(model_dir)
    out = np.asarray(group["0"][:])
    ref = _reference(model_dir, *halves)
    assert np.abs(out - ref).max() <= 1e-5
    fp32 = tmp_path / "fp32.zarr"
    run_blocks(_plan(model_dir, list(halves), fp32, chunks=32, precision="fp32"), client)
    out32 = np.asarray(zarr.open_group(str(fp32), mode="r")["0"][:])
    assert np.abs(out32 - _reference(model_dir, *halves, precision="fp32")).max() <= 1e-5
    shutil.rmtree(fp32)
    assert stats.mean == pytest.approx(float(ref.astype(np.float64).mean()), rel=1e-5)
    vol = open_volume(tmp_path / "out.zarr")
    assert vol.voxel_size == (10.0, 10.0, 10.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]


def test_cli_predict_dry_run_and_bad_block(tmp_path, model_dir, halves, capsys):
    even, odd = halves
    args = ["predict", "--model", str(model_dir), "--even", str(even), "--odd", str(odd),
            "--out", str(tmp_path / "o.zarr")]
    assert main([*args, "--dry-run"]) == 0
    summary = capsys.readouterr().out.splitlines()  # a few readable lines
    assert len(summary) <= 8 and summary[0].startswith("blocks: 1 of ") and "voxels computed per voxel" in summary[1]
    assert main([*args, "--dry-run", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"computed_to_output_ratio"' in out and '"blocks": 1' in out
    described = json.loads(out)  # one JSON object: the operator, then the plan
    assert described["operator"] == {"model": str(model_dir), "precision": "auto", "orientations": 1,
                                     "halo": Model.read(model_dir).halo}
    assert main([*args, "--chunks", "30"]) == 2
    assert "nearest valid sizes: 28 or 32" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()


def test_mismatched_halves_refused(tmp_path, model_dir, halves):
    small = write_test_mrc(tmp_path / "small.mrc", np.zeros((8, 8, 8), np.float32), voxel_size=(10.0,) * 3)
    with pytest.raises(TomocareError, match="shape .* differs"):
        _plan(model_dir, [halves[0], small], tmp_path / "o.zarr")


def test_orientations_bounded_and_part_of_the_resume_fingerprint(tmp_path, model_dir, halves):
    with pytest.raises(TomocareError, match="at most 4 per input"):
        _plan(model_dir, list(halves), tmp_path / "o.zarr", orientations=5)
    one, two = (_plan(model_dir, list(halves), tmp_path / "o.zarr", orientations=n) for n in (1, 2))
    assert one.fingerprint() != two.fingerprint()  # a rerun with another setting recomputes


def test_voxel_size_mismatch_warns_or_errors(tmp_path, model_dir):
    vol = write_test_mrc(tmp_path / "v.mrc", np.zeros((8, 8, 8), np.float32), voxel_size=(13.0,) * 3)
    with pytest.warns(UserWarning, match=r"differs from the model.s training data \(10 Å\) by 30%"):
        _plan(model_dir, [vol], tmp_path / "o.zarr")
    with pytest.raises(TomocareError, match="30%"):
        _plan(model_dir, [vol], tmp_path / "o.zarr", strict=True)


def test_interrupted_run_resumes_without_recomputing(tmp_path, small_model, halves, client):
    model_dir = small_model
    even, odd = halves
    out = tmp_path / "r.zarr"
    cmd = [sys.executable, "-m", "tomocare.cli", "predict", "--model", str(model_dir), "--even", str(even),
           "--odd", str(odd), "--out", str(out), "--chunks", "8", "--block", "8", "--workers", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    done = tmp_path / f".{out.name}.partial" / DONE_FILE
    deadline = time.time() + 120
    while time.time() < deadline and (not done.exists() or len(done.read_text().splitlines()) < 30):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = len(done.read_text().splitlines())
    assert 30 <= finished_before < 5 * 9 * 10, finished_before
    assert not out.exists()

    setup = _plan(model_dir, [even, odd], out, chunks=8)
    recording = RecordingOperator(setup.operator, str(tmp_path / "computed.log"))  # same identity: it resumes
    run_blocks(replace(setup, operator=recording), client)
    assert recording.calls() == setup.plan.n_blocks - finished_before
    result = np.asarray(zarr.open_group(str(out), mode="r")["0"][:])
    assert np.abs(result - _reference(model_dir, even, odd)).max() <= 1e-5


def test_killed_worker_does_not_stop_the_run(tmp_path, small_model, halves):
    model_dir = small_model
    with (LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=":0") as cluster,
          Client(cluster) as c):
        setup = _plan(model_dir, list(halves), tmp_path / "k.zarr", chunks=8)
        done = tmp_path / ".k.zarr.partial" / DONE_FILE
        pids = list(c.run(os.getpid).values())

        def kill_one():
            while not done.exists() or len(done.read_text().splitlines()) < 10:
                time.sleep(0.05)
            os.kill(pids[0], signal.SIGKILL)

        killer = threading.Thread(target=kill_one, daemon=True)
        killer.start()
        run_blocks(setup, c)
        killer.join(timeout=5)
        assert pids[0] not in c.run(os.getpid).values()  # the worker really died (and was replaced)
    result = np.asarray(zarr.open_group(str(tmp_path / "k.zarr"), mode="r")["0"][:])
    assert np.abs(result - _reference(model_dir, *halves)).max() <= 1e-5


def test_baseline_on_the_engine_equals_whole_volume_filter(tmp_path, client, halves, capsys):
    from scipy import ndimage

    even, odd = halves
    out = tmp_path / "gauss.zarr"
    capsys.readouterr()
    assert main(["baseline", "gaussian", str(even), str(out), "--odd", str(odd), "--param", "sigma=1.5",
                 "--chunks", "32"]) == 0
    assert capsys.readouterr().out.startswith(f"{out}: gaussian {{'sigma': 1.5}}, 18 blocks, mean ")
    operator = zarr.open_group(str(out), mode="r").attrs["tomocare"]["operator"]
    assert operator == {"method": "gaussian", "params": {"sigma": 1.5}, "halo": 6}
    average = (np.asarray(open_volume(even).array[...]) + np.asarray(open_volume(odd).array[...])) / 2
    ref = ndimage.gaussian_filter(average, 1.5, mode="mirror", truncate=4.0)
    assert np.abs(np.asarray(open_volume(out).array[...]) - ref).max() <= 1e-5
    assert main(["baseline", "gaussian", str(even), str(tmp_path / "x.zarr"), "--param", "sigma"]) == 2


def test_2d_network_on_an_image_stack(tmp_path, client):
    torch.manual_seed(5)
    net = UNet(ndim=2, depth=2, base_channels=4)
    model = save_model(tmp_path / "m2d", net, mean=0.0, std=1.0, voxel_size=10.0, patch_size=32,
                       trained_on=["test"]) or tmp_path / "m2d"
    stack = np.random.default_rng(1).normal(size=(5, 70, 66)).astype(np.float32)
    src = write_test_mrc(tmp_path / "stack.mrc", stack, voxel_size=(10.0,) * 3)
    setup = _plan(model, [src], tmp_path / "s.zarr", chunks=32)
    assert setup.plan.halo[0] == 0 and setup.plan.factor[0] == 1
    run_blocks(setup, client)
    out = np.asarray(open_volume(tmp_path / "s.zarr").array[...])
    info = Model.read(model)
    net = info.network()
    ref = np.stack([info.predict_whole(img, net=net, precision="auto") for img in stack])
    assert np.abs(out - ref).max() <= 1e-5


@pytest.mark.parametrize("device", ["cuda", "cpu"])
def test_block_grows_to_the_task_memory_given(model_dir, halves, device):
    even, odd = halves
    assert _plan(model_dir, [even, odd], "o.zarr", chunks=16).plan.block == (16, 16, 16)  # no memory given
    small = _plan(model_dir, [even, odd], "o.zarr", chunks=16, block=16, memory=TaskMemory(device, 10**15))
    roomy = _plan(model_dir, [even, odd], "o.zarr", chunks=16, memory=TaskMemory(device, 3 * small.memory_per_task))
    assert roomy.plan.block[0] > 16 and roomy.memory_per_task <= 3 * small.memory_per_task
    assert all(b % 16 == 0 or b >= n for b, n in zip(roomy.plan.block, SHAPE))
    assert "network_pieces" not in roomy.describe()  # the grown tile fits: computed whole
    huge = _plan(model_dir, [even, odd], "o.zarr", chunks=16, memory=TaskMemory(device, 10**15))
    assert huge.plan.n_blocks == 1
    shared = _plan(model_dir, [even, odd], "o.zarr", chunks=16, memory=TaskMemory(device, 10**15, slots=4))
    assert shared.plan.n_blocks >= 4  # every slot gets a block
    assert small.plan.block == (16, 16, 16)  # a block given is kept


def test_the_planned_block_is_seamless(tmp_path, client, model_dir, halves):
    """Whatever block the memory allows (here grown past the chunks), the output equals the whole volume's."""
    one = _plan(model_dir, list(halves), "o.zarr", chunks=16, block=16, memory=TaskMemory("cpu", 10**15))
    planned = _plan(model_dir, list(halves), tmp_path / "g.zarr", chunks=16,
                    memory=TaskMemory("cpu", 3 * one.memory_per_task, slots=2))
    assert 16 < planned.plan.block[-1] and planned.plan.n_blocks >= 2 and "network_pieces" not in planned.describe()
    run_blocks(planned, client)
    out = np.asarray(zarr.open_group(str(tmp_path / "g.zarr"), mode="r")["0"][:])
    assert np.abs(out - _reference(model_dir, *halves)).max() <= 1e-5


def test_a_small_cpu_budget_computes_the_network_in_pieces(model_dir, halves):
    even, odd = halves
    whole = _plan(model_dir, [even, odd], "o.zarr", chunks=32)
    tight = _plan(model_dir, [even, odd], "o.zarr", chunks=32, memory=TaskMemory("cpu", whole.memory_per_task // 4))
    assert tight.plan.block == whole.plan.block and "network_pieces" in tight.describe()
    assert tight.memory_per_task < whole.memory_per_task


def test_task_memory_is_a_share_of_the_cpu_workers_memory_limit(client):
    info = client.scheduler_info(n_workers=-1)["workers"].values()
    memory = task_memory(client)
    least = min(w["memory_limit"] // w["nthreads"] for w in info)
    assert memory == TaskMemory("cpu", int(CPU_TASK_SHARE * least), sum(w["nthreads"] for w in info))
    assert abs(2 * local_task_memory(2).budget - local_task_memory(1).budget) <= 2 and local_task_memory(2).slots == 2
