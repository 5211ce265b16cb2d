"""Fuzz: generated malformed inputs (tests/fuzz_cases.py) through every command that reads data.

Every run ends in exit 0 with a correct output, or in exit 2 with one line ``error: ...`` naming the
input (the last line on stderr; before it only warnings and progress lines); never a traceback,
an exception out of ``main`` or a hang; nothing left in the output directory on refusal; the
inputs byte for byte unchanged. The fast variant runs each case through the commands' checks and
their real work on tiny volumes; the slow one (``-m slow``) adds real predictions, filters, FSC,
exports, training and ``denoise``. The last test of each variant prints the tally.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import re
import shutil
import signal
import stat
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import fuzz_cases as fc
import numpy as np
import pytest
import torch
import typer.main
from fuzz_cases import CONSTANT, EITHER, INVALID, PAIR, VALID, VOXELS, Case
from helpers import write_test_mrc

from tomocare.baselines import make_filter
from tomocare.cli import main
from tomocare.io.volume import open_volume
from tomocare.model import save_model
from tomocare.nn import UNet

RUN_LIMIT = 120.0  # seconds one command may take before it counts as a hang (each takes < 1 s unloaded)
CASES = fc.all_cases()
PROBLEMS = ("tracebacks", "wrong successes", "hangs", "wrong refusals", "bad messages", "left behind",
            "inputs changed")
TALLY = {"fast": Counter(), "slow": Counter()}
# stderr lines allowed before the error line: warnings, the dashboard address, progress lines
NOISE = re.compile(r"^(warning: |dask dashboard: |\d\d:\d\d:\d\d )")


class Env(NamedTuple):
    """What every case shares: the partner half, a tiny model, the cluster, a tiny training."""

    partner: Path
    model: Path
    scheduler: str
    train_config: Path


@pytest.fixture(scope="module")
def env(tmp_path_factory, client) -> Env:
    d = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    save_model(d / "model", UNet(depth=1, base_channels=2, residual=False), mean=0.0, std=1.0, voxel_size=fc.VOXEL,
               patch_size=16, trained_on=["t"])
    (d / "train.toml").write_text("[train]\npatch_size = 8\nn_patches = 4\nn_val_patches = 2\nbatch_size = 2\n"
                                  "depth = 1\nbase_channels = 2\nmax_steps = 2\nsteps_per_epoch = 2\n"
                                  "progress = false\n")
    partner = write_test_mrc(d / "g.mrc", fc.PARTNER, voxel_size=(fc.VOXEL,) * 3)
    return Env(partner, d / "model", client.scheduler.address, d / "train.toml")


@pytest.fixture(scope="module", autouse=True)
def _commands_built_once() -> Iterator[None]:
    """``main`` has typer build the click commands from the command functions on every call (~30 ms,
    most of a refused run); the fuzz calls it thousands of times, so here they are built once."""
    original = typer.main.get_command
    typer.main.get_command = functools.cache(original)
    yield
    typer.main.get_command = original


# ---------------------------------------------------------------- what a correct output is

def _strict_json(text: str):
    """JSON as the standard has it: NaN and Infinity are not numbers there."""
    def refuse(name: str):
        raise ValueError(f"{name} in JSON output")
    return json.loads(text, parse_constant=refuse)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64), equal_nan=True)


def _finite_where(expected: np.ndarray | None, got: np.ndarray) -> bool:
    """Finite output wherever the input is finite everywhere (a NaN input may give NaN out)."""
    return expected is None or not np.isfinite(np.asarray(expected, np.float64)).all() or np.isfinite(got).all()


@dataclass(frozen=True)
class Run:
    """One command's success on one case: what it had to answer and what it printed."""

    data: np.ndarray | None  # its correct voxels, when known
    out: Path  # the command's own output directory
    stdout: str


def check_info(run: Run) -> str | None:
    entry = _strict_json(run.stdout)[0]
    if run.data is not None and tuple(entry["shape"]) != run.data.shape:
        return f"shape {entry['shape']} instead of {run.data.shape}"
    if not all(math.isfinite(v) and v >= 0 for v in entry["voxel_size"]):
        return f"voxel size {entry['voxel_size']}"
    return None


def check_plan(run: Run) -> str | None:
    shape = tuple(_strict_json(run.stdout)["shape"])
    return None if shape == fc.SHAPE else f"planned shape {shape} for halves of {fc.SHAPE}"


def _level0(path: Path) -> np.ndarray:
    """An output read back by tomocare itself (it must be able to), level 0 as numbers."""
    return np.asarray(open_volume(path).array[...])


def check_copy(name: str) -> Callable[[Run], str | None]:
    """convert, export: the voxels unchanged (float64 stores are exported as float32)."""
    def check(run: Run) -> str | None:
        got = _level0(run.out / name)
        expected = run.data
        if expected is not None and expected.dtype == np.float64 and name.endswith(".mrc"):
            expected = expected.astype(np.float32)
        if expected is not None and not _same(got, expected):
            return f"{name}: voxels differ from the input's"
        if name.endswith(".mrc"):  # and read by the MRC2014 rules alone, the header written carried over
            raw = fc.raw_mrc_data(run.out / name)
            if raw is None or not _same(raw, got):
                return f"{name}: its header does not describe the voxels written"
        return None
    return check


def check_filtered(name: str, method: str, pair: bool) -> Callable[[Run], str | None]:
    """baseline: the whole-volume filter of the input (the halves' mean with ``pair``)."""
    def check(run: Run) -> str | None:
        got = _level0(run.out / name)
        if run.data is None:
            return None if got.ndim == 3 else f"{name}: shape {got.shape}"
        source = (fc.PARTNER + run.data.astype(np.float32)) / 2 if pair else run.data.astype(np.float32)
        if got.shape != source.shape or not _finite_where(source, got):
            return f"{name}: shape {got.shape} or non-finite voxels for an input of {source.shape}"
        expected = make_filter(method).reference(source)
        scale = float(np.nanmax(np.abs(expected))) or 1.0
        ok = np.allclose(got, expected, rtol=0, atol=1e-5 * scale, equal_nan=True)
        return None if ok else f"{name}: differs from the whole-volume {method} filter"
    return check


def check_denoised(name: str) -> Callable[[Run], str | None]:
    def check(run: Run) -> str | None:
        got = _level0(run.out / name)
        if run.data is not None and (got.shape != run.data.shape or not _finite_where(run.data, got)):
            return f"{name}: shape {got.shape} or non-finite voxels for an input of {run.data.shape}"
        return None
    return check


def _numbers(value) -> Iterator[float | None]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        yield value


def check_metrics(name: str, section: str) -> Callable[[Run], str | None]:
    """evaluate: every metric of ``section`` a finite number (None stands for NaN or infinity)."""
    def check(run: Run) -> str | None:
        metrics = json.loads((run.out / name / "metrics.json").read_text())
        values = list(_numbers(metrics[section]))
        if section == "fsc":  # a resolution may be None: the curve stays above the threshold to Nyquist
            values = list(_numbers({k: v for k, v in metrics["fsc"].items() if k != "resolution_A"}))
            rows = (run.out / name / "fsc.csv").read_text().splitlines()[1:]
            values += [float(v) for row in rows for v in row.split(",")]
        bad = [v for v in values if v is None or not math.isfinite(v)]
        return f"{name}: non-finite {section} values {bad[:3]}" if bad else None
    return check


def check_denoise(run: Run) -> str | None:
    state = json.loads((run.out / "d" / "state.json").read_text())["tomograms"]
    if [e.get("status") for e in state.values()] != ["done"]:
        return f"state {state}"
    return check_denoised("d/t.zarr")(run)


# ---------------------------------------------------------------- the commands

@dataclass(frozen=True)
class Command:
    name: str
    argv: Callable[[Path, Env, Path], list[str]]  # (input, env, output directory) -> arguments
    outputs: tuple[str, ...]  # what it writes into its output directory on success
    check: Callable[[Run], str | None]
    reads_voxels: bool = True  # False: describes headers only (info, --dry-run)
    exports: bool = False  # writes a result out as MRC (export): a constant one too
    pair: bool = False  # the input is one of two that must agree (the other is the partner)
    suffixes: tuple[str, ...] = (".mrc", ".zarr")
    dataset: bool = False  # the input is the odd half of a dataset directory (denoise)


def _on(env: Env) -> list[str]:
    return ["--scheduler", env.scheduler]


INFO = Command("info", lambda x, e, o: ["info", "--json", str(x)], (), check_info, reads_voxels=False)
DRY_RUN = Command("predict --dry-run", lambda x, e, o: [
    "predict", "-m", str(e.model), "--even", str(e.partner), "--odd", str(x), "--out", str(o / "p.zarr"), "--dry-run",
    "--json"],
    (), check_plan, reads_voxels=False, pair=True)
CONVERT = Command("convert", lambda x, e, o: [
    "convert", str(x), str(o / "c.zarr"), "--chunks", "16", "--levels", "1", *_on(e)],
    ("c.zarr",), check_copy("c.zarr"))
EXPORT = Command("export", lambda x, e, o: ["export", str(x), str(o / "e.mrc"), *_on(e)], ("e.mrc",),
                 check_copy("e.mrc"), suffixes=(".zarr",), exports=True)
BASELINE = Command("baseline gaussian --odd", lambda x, e, o: [
    "baseline", "gaussian", str(e.partner), str(o / "b.zarr"), "--odd", str(x), "--chunks", "16", *_on(e)],
    ("b.zarr",), check_filtered("b.zarr", "gaussian", pair=True), pair=True)
EVALUATE = Command("evaluate --reference", lambda x, e, o: [
    "evaluate", str(x), "--reference", str(e.partner), "--out", str(o / "ev")],
    ("ev",), check_metrics("ev", "reference"), pair=True)
FAST = (INFO, DRY_RUN, CONVERT, EXPORT, BASELINE, EVALUATE)

SLOW = FAST + (
    Command("export (MRC)", EXPORT.argv, ("e.mrc",), check_copy("e.mrc"), suffixes=(".mrc",), exports=True),
    Command("convert pyramid", lambda x, e, o: [
        "convert", str(x), str(o / "c.zarr"), "--chunks", "8", "--levels", "3", "--compression", "zstd", *_on(e)],
        ("c.zarr",), check_copy("c.zarr")),
    Command("predict", lambda x, e, o: [
        "predict", "-m", str(e.model), "--input", str(x), "--out", str(o / "p.zarr"), "--chunks", "16", *_on(e)],
        ("p.zarr",), check_denoised("p.zarr")),
    Command("predict --even --odd --mrc", lambda x, e, o: [
        "predict", "-m", str(e.model), "--even", str(e.partner), "--odd", str(x), "--out", str(o / "p.zarr"),
        "--mrc", str(o / "p.mrc"), "--chunks", "16", *_on(e)], ("p.zarr", "p.mrc"), check_denoised("p.zarr"),
        pair=True),
    Command("baseline median --mrc", lambda x, e, o: [
        "baseline", "median", str(x), str(o / "m.zarr"), "--mrc", str(o / "m.mrc"), "--chunks", "16", *_on(e)],
        ("m.zarr", "m.mrc"), check_filtered("m.zarr", "median", pair=False)),
    Command("evaluate A B", lambda x, e, o: ["evaluate", str(e.partner), str(x), "--out", str(o / "fsc")],
            ("fsc",), check_metrics("fsc", "fsc"), pair=True),
    Command("evaluate --reference X", lambda x, e, o: [
        "evaluate", str(e.partner), "--reference", str(x), "--out", str(o / "ev")],
        ("ev",), check_metrics("ev", "reference"), pair=True),
    Command("denoise --model", lambda x, e, o: [
        "denoise", str(x.parent), "--out", str(o / "d"), "--model", str(e.model), "--chunks", "16", *_on(e)],
        ("d",), check_denoise, pair=True, suffixes=(".mrc",), dataset=True),
)
DENOISE_TRAINING = Command("denoise (training)", lambda x, e, o: [
    "denoise", str(x.parent), "--out", str(o / "d"), "--config", str(e.train_config), "--chunks", "16", "--no-mrc",
    *_on(e)], ("d",), check_denoise, pair=True, suffixes=(".mrc",), dataset=True)
# cases denoise also trains on (a tiny network, two steps: still the slowest runs by far)
TRAINED = ("voxels: int16", "voxels: constant 0", "voxels: all NaN", "voxels: one NaN voxel",
           "mismatched halves: shape (15, 24, 20)", "truncated: data cut: half")


# ---------------------------------------------------------------- running and judging

class Hang(BaseException):
    """A command ran past RUN_LIMIT."""


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Raise Hang in the main thread after ``seconds``; pytest-timeout's own alarm is put back after."""
    def expire(signum, frame):
        raise Hang
    previous = signal.signal(signal.SIGALRM, expire)
    delay, interval = signal.setitimer(signal.ITIMER_REAL, seconds)
    start = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if delay:
            signal.setitimer(signal.ITIMER_REAL, max(delay - (time.monotonic() - start), 1e-3), interval)


def digest(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed): regular files by their bytes, others by kind."""
    out = {}
    for parent, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(parent, name)
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode):
                out[str(path)] = "link " + os.readlink(path)
            elif stat.S_ISREG(mode):
                try:
                    out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                except PermissionError:
                    out[str(path)] = "unreadable"
            else:
                out[str(path)] = f"kind {stat.S_IFMT(mode)}"
    return out


def _release_fifos(root: Path) -> None:
    """Give every reader blocked on a FIFO under ``root`` its end of file (a hung run's thread)."""
    for parent, _, files in os.walk(root):
        for name in files:
            path = Path(parent, name)
            if stat.S_ISFIFO(path.lstat().st_mode):
                with contextlib.suppress(OSError):
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


def _temporaries(root: Path) -> list[str]:
    """Temporary siblings (``.NAME.partial``, ``.NAME.lock``, ``NAME.tmp``) anywhere under ``root``."""
    return [name for _, dirs, files in os.walk(root) for name in dirs + files
            if name.endswith((".partial", ".lock", ".tmp"))]


def invoke(argv: list[str], capsys) -> tuple[int | None, str, str, str | None]:
    """(exit code or None on a hang, stdout, stderr, the traceback of an exception out of main)."""
    code, escaped = None, None
    with deadline(RUN_LIMIT):
        try:
            code = main(argv)
        except Hang:
            pass
        except (Exception, SystemExit):
            escaped = traceback.format_exc()
    out, err = capsys.readouterr()
    return code, out, err, escaped


def _expects_refusal(case: Case, command: Command) -> bool:
    """Whether exit 0 is a wrong success whatever the output: for an INVALID input, a VOXELS input given
    to a command that reads voxels, a CONSTANT one given to such a command other than export, a PAIR
    input given to one that pairs it with the partner. Any other exit 0 is a wrong success when the
    output is not the correct one (``Command.check``: readable by tomocare, the input's shape, the
    input's voxels or their exact filter, finite numbers), or when an MRC file was accepted whose
    header describes no volume the file holds (``fc.raw_mrc_data``)."""
    unusable = case.verdict == VOXELS or (case.verdict == CONSTANT and not command.exports)
    return (case.verdict == INVALID or (unusable and command.reads_voxels)
            or (case.verdict == PAIR and command.pair))


def _names(line: str, paths: list[Path]) -> bool:
    return any(str(p) in line or os.path.realpath(p) in line for p in paths)


def _kept_for_rerun(command: Command, left: list[str], error: str) -> bool:
    """What a run stopped part way keeps by design: denoise its state, the block engine the blocks it
    finished (a chunk found corrupt while reading; the error line says to rerun)."""
    if command.dataset:
        return left == ["d"]
    partial = {f".{name}.partial" for name in command.outputs}
    return "rerun the same command to resume" in error and set(left) <= partial


def judge(case: Case, command: Command, built: fc.Built, code, stdout: str, stderr: str, escaped, out: Path,
          named: list[Path]) -> tuple[str, str] | None:
    """The problem with one run, as (tally key, detail), or None."""
    if escaped or "Traceback" in stderr:
        return "tracebacks", (escaped or stderr).strip().splitlines()[-1]
    if code is None:
        return "hangs", f"no answer after {RUN_LIMIT:g} s"
    left = sorted(p.name for p in out.iterdir())
    if code == 0:
        if _expects_refusal(case, command):
            return "wrong successes", f"exit 0 for a {case.verdict} input: {stdout.strip()[-200:]}"
        if left != sorted(command.outputs):
            return "left behind", f"outputs {left}, expected {list(command.outputs)}"
        data = built.data if built.data is not None else fc.raw_mrc_data(built.path)
        if data is None and case.suffix == ".mrc":
            return "wrong successes", "accepted a file whose header describes no volume it holds"
        try:
            problem = command.check(Run(data, out, stdout))
        except Exception as err:  # an output that cannot be read back is not a correct output
            problem = f"output unreadable: {type(err).__name__}: {' '.join(str(err).split())[:200]}"
        return ("wrong successes", problem) if problem else None
    lines = stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    if code != 2 or len(errors) != 1 or lines[-1] != errors[0] or not all(NOISE.match(x) for x in lines[:-1]):
        return "bad messages", f"exit {code}, stderr {stderr.strip()[-400:]!r}"
    failed_line = [line for line in stdout.splitlines() if "FAILED:" in line]  # denoise reports per tomogram
    if not _names(errors[0] + "".join(failed_line), named):
        return "bad messages", f"does not name {named[0]}: {errors[0]}"
    if left and not _kept_for_rerun(command, left, errors[0]):
        return "left behind", f"{left} after a refusal"
    if case.verdict == VALID or (case.verdict == PAIR and not command.pair):
        return "wrong refusals", errors[0]
    return None


def _layout(case: Case, env: Env, tmp_path: Path, dataset: bool) -> tuple[Path, fc.Built] | None:
    """The case's input written once: alone in ``in/``, or as the odd half of the dataset ``ds/``
    (None for a case about a file's name or place, which makes no dataset)."""
    inputs = tmp_path / ("ds" if dataset else "in")
    inputs.mkdir()
    if not dataset:
        return inputs, case.build(inputs / f"x{case.suffix}")
    shutil.copyfile(env.partner, inputs / "t_even.mrc")
    built = case.build(inputs / "t_odd.mrc")
    return (inputs, built) if built.path.name == "t_odd.mrc" else None


def run_case(case: Case, commands: tuple[Command, ...], env: Env, tmp_path: Path, capsys, tally: Counter) -> list[str]:
    """Every command of ``commands`` that takes the case's kind of input, each writing into a directory
    of its own; the problems found."""
    problems, layouts = [], {}
    shared = digest(env.partner.parent)
    for i, command in enumerate(c for c in commands if case.suffix in c.suffixes):
        if command.dataset not in layouts:
            layout = _layout(case, env, tmp_path, command.dataset)
            layouts[command.dataset] = layout and (*layout, digest(layout[0]))
        if layouts[command.dataset] is None:
            continue
        inputs, built, before = layouts[command.dataset]
        out = tmp_path / f"out{i}"
        out.mkdir()
        code, stdout, stderr, escaped = invoke(command.argv(built.path, env, out), capsys)
        _release_fifos(tmp_path)
        named = [built.path, *([env.partner] if case.verdict in (PAIR, EITHER) else []),
                 *([inputs] if command.dataset else [])]
        problem = judge(case, command, built, code, stdout, stderr, escaped, out, named)
        partial = [p for p in _temporaries(out) + _temporaries(inputs)
                   if not (code == 2 and _kept_for_rerun(command, [p], stderr))]
        if problem is None and partial:
            problem = "left behind", f"temporary files {partial}"
        if problem is None and (digest(inputs), digest(env.partner.parent)) != (before, shared):
            problem = "inputs changed", "an input's bytes or its directory changed"
        tally["runs"] += 1
        tally[f"exit {code}"] += 1
        if problem:
            tally[problem[0]] += 1
            problems.append(f"{command.name}: {problem[0]}: {problem[1]}")
    tally["cases"] += 1
    return problems


def _summary(tally: Counter) -> str:
    keys = ("cases", "runs", "exit 0", "exit 2", *PROBLEMS)
    other = sorted(k for k in tally if k.startswith("exit ") and k not in keys)
    return ", ".join(f"{k} {tally[k]}" for k in (*keys, *other))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fuzz(case, env, tmp_path, capsys):
    problems = run_case(case, FAST, env, tmp_path, capsys, TALLY["fast"])
    assert not problems, "\n".join(problems)


def _report(variant: str, capsys, least_runs: int) -> None:
    """Print the tally of a variant (shown without -s too) and assert that no run went wrong."""
    tally = TALLY[variant]
    if not tally["cases"]:
        pytest.skip(f"no {variant} fuzz case ran in this session")
    with capsys.disabled():
        print(f"\nfuzz ({variant}): {_summary(tally)}")
    assert not any(tally[k] for k in PROBLEMS), _summary(tally)
    assert len(CASES) >= 300 and (tally["cases"] < len(CASES) or tally["runs"] >= least_runs), _summary(tally)


def test_fuzz_tally(capsys):
    _report("fast", capsys, least_runs=300)


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fuzz_end_to_end(case, env, tmp_path, capsys):
    commands = SLOW + ((DENOISE_TRAINING,) if case.id in TRAINED else ())
    problems = run_case(case, commands, env, tmp_path, capsys, TALLY["slow"])
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_fuzz_end_to_end_tally(capsys):
    _report("slow", capsys, least_runs=600)


@pytest.mark.slow
def test_train_refuses_a_constant_half(env, tmp_path, capsys):
    case = next(c for c in CASES if c.id == "voxels: constant 0")
    train = Command("train", lambda x, e, o: [
        "train", "--even", str(e.partner), "--odd", str(x), "-o", str(o / "model"), "--config", str(e.train_config),
        *_on(e)], ("model",), lambda run: None, pair=True)
    assert not run_case(case, (train,), env, tmp_path, capsys, Counter())
