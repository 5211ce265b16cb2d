"""Live mode (``denoise --watch``): the completion rule alone, then the command as a real process fed while it runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tomocare.errors import TomocareError
from tomocare.io.discover import Pair
from tomocare.testing import tiny_model, write_mrc
from tomocare.watch import Settler, StopSignal, Watcher

SHAPE = (16, 32, 32)
SETTLE = 1.5  # seconds; a slow writer's pauses (0.4 s) are well within it, its whole write is longer


def test_a_file_is_settled_once_unchanged_for_the_settle_time():
    settler, path = Settler(2.0), Path("a")
    assert not settler.settled(path, (10, 1), now=0.0)  # first seen: the count starts
    assert not settler.settled(path, (10, 1), now=1.9)
    assert not settler.settled(path, (20, 2), now=2.5)  # grew: starts again
    assert not settler.settled(path, (20, 2), now=4.4)
    assert settler.settled(path, (20, 2), now=4.5)
    assert not settler.settled(path, None, now=5.0)  # gone
    assert Settler(0.0).settled(path, (1, 1), now=0.0)


def test_watcher_returns_each_complete_pair_once_and_reports_a_broken_one_once_per_version():
    sizes = {"a_even": (1, 1), "a_odd": (1, 1), "b_even": (1, 1), "b_odd": (5, 1)}
    broken = {"b"}

    def opener(pair: Pair):
        if pair.name in broken:
            raise TomocareError(f"{pair.odd}: truncated MRC file\n(ends early)")
        return pair.name

    watcher = Watcher(1.0, stat=lambda p: sizes.get(p.name), opener=opener)  # type: ignore[arg-type]
    pairs = [Pair(n, Path(f"{n}_even"), Path(f"{n}_odd")) for n in "ab"]
    assert watcher.poll(pairs, 0.0).ready == []  # nothing settled yet
    first = watcher.poll(pairs, 1.0)
    assert first.ready == ["a"] and first.broken == [("b", "b_odd: truncated MRC file (ends early)")]
    again = watcher.poll(pairs, 2.0)
    assert again.ready == [] and again.broken == []  # a taken, b said once
    sizes["b_odd"] = (9, 2)  # its writer went on
    broken.clear()
    assert watcher.poll(pairs, 2.5).ready == []  # not settled again yet
    assert watcher.poll(pairs, 3.5).ready == ["b"]


def test_stop_signal_interrupts_only_the_armed_region():
    before = signal.getsignal(signal.SIGINT)  # the default handler, or SIG_IGN when started in the background
    stop = StopSignal()
    with stop.installed():
        os.kill(os.getpid(), signal.SIGTERM)  # not armed: only noted
        assert stop.requested == "SIGTERM"
    fresh = StopSignal()
    with fresh.installed(), fresh.armed():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)  # interrupted at once
        pytest.fail("not interrupted")
    assert fresh.requested == "SIGINT"
    assert signal.getsignal(signal.SIGINT) == before  # restored


def _volume(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=SHAPE).astype(np.float32)


def _write_pair(data: Path, name: str, seed: int) -> None:
    write_mrc(data / f"{name}_even.mrc", _volume(seed))
    write_mrc(data / f"{name}_odd.mrc", _volume(seed + 100))


def _write_slowly(data: Path, scratch: Path, name: str, seed: int, pieces: int = 6, pause: float = 0.4) -> float:
    """The pair written as a slow writer does: the even half at once, the odd one in ``pieces`` with
    pauses shorter than the settle time between; return the seconds the odd half took."""
    write_mrc(data / f"{name}_even.mrc", _volume(seed))
    blob = write_mrc(scratch / f"{name}_odd.mrc", _volume(seed + 100)).read_bytes()
    step = -(-len(blob) // pieces)
    start = time.monotonic()
    with open(data / f"{name}_odd.mrc", "wb") as f:
        for i in range(pieces):
            f.write(blob[i * step:(i + 1) * step])
            f.flush()
            if i < pieces - 1:
                time.sleep(pause)
    return time.monotonic() - start


def _start(data: Path, out: Path, model: Path, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "tomocare.cli", "denoise", str(data), "--out", str(out), "--watch",
           "--model", str(model), "--chunks", "16", "--no-mrc", "--workers", "1",
           "--watch-interval", "0.2", "--watch-settle", str(SETTLE)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log.open("w"), text=True)


def _done(out: Path) -> set[str]:
    try:
        state = json.loads((out / "state.json").read_text())["tomograms"]
    except (OSError, ValueError):
        return set()
    return {name for name, entry in state.items() if entry.get("status") == "done"}


def _wait_for(out: Path, names: set[str], proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while not names <= _done(out):
        assert proc.poll() is None, log.read_text()
        assert time.time() < deadline, f"not denoised in time: {names - _done(out)}\n{log.read_text()}"
        time.sleep(0.2)


def _stop(proc: subprocess.Popen, log: Path) -> str:
    proc.send_signal(signal.SIGTERM)
    stdout, _ = proc.communicate(timeout=60)
    err = log.read_text()
    assert proc.returncode == 0, err
    assert "Traceback" not in err + stdout
    return stdout


def test_watch_denoises_each_pair_once_as_it_completes_stops_on_sigterm_and_resumes(tmp_path):
    model = tiny_model(tmp_path / "model")
    data, out, scratch = tmp_path / "data", tmp_path / "out", tmp_path / "scratch"
    data.mkdir()
    scratch.mkdir()
    _write_pair(data, "a", 1)  # there before the start
    log = tmp_path / "run1.log"
    proc = _start(data, out, model, log)
    try:
        _wait_for(out, {"a"}, proc, log)
        _write_pair(data, "b", 2)
        assert _write_slowly(data, scratch, "c", 3) > SETTLE
        bad = write_mrc(scratch / "d_odd.mrc", _volume(4)).read_bytes()
        write_mrc(data / "d_even.mrc", _volume(5))
        (data / "d_odd.mrc").write_bytes(bad[:3000])  # settles truncated: one line, skipped
        _wait_for(out, {"a", "b", "c"}, proc, log)
        time.sleep(1.5)  # more polls: nothing is taken twice
    finally:
        if proc.poll() is None:
            stdout = _stop(proc, log)
    first = log.read_text()
    for name in "abc":
        assert first.count(f"{name}: complete, denoising") == 1, first
    assert first.count("d: FAILED: ") == 1 and "truncated MRC file" in first
    assert "c: FAILED" not in first  # never read while it grew
    assert "stopped (SIGTERM): 3 tomograms denoised in this run, 0 done before, 1 failed" in stdout
    assert "rerun the same command to resume" in stdout
    assert _done(out) == {"a", "b", "c"}
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # no partial, lock or temporary
    assert {p.name for p in out.iterdir()} == {"a.zarr", "b.zarr", "c.zarr", "state.json", "config.json", "report"}
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert [(r["name"], r["status"]) for r in summary] == [("a", "done"), ("b", "done"), ("c", "done"),
                                                           ("d", "failed")]
    outputs = {n: (out / f"{n}.zarr" / "zarr.json").stat().st_mtime_ns for n in "abc"}

    log = tmp_path / "run2.log"
    proc = _start(data, out, model, log)
    try:
        _write_pair(data, "e", 6)
        _wait_for(out, {"e"}, proc, log)
    finally:
        if proc.poll() is None:
            stdout = _stop(proc, log)
    second = log.read_text()
    assert "e: complete, denoising" in second
    assert not any(f"{n}: complete, denoising" in second for n in "abc"), second
    assert "stopped (SIGTERM): 1 tomograms denoised in this run, 3 done before" in stdout
    assert {n: (out / f"{n}.zarr" / "zarr.json").stat().st_mtime_ns for n in "abc"} == outputs  # not redone
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
