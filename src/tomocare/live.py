"""Live mode, ``denoise DIR --out OUT --watch``: denoise each even/odd pair as it is completed on disk.

DIR is looked at every ``watch_interval_s`` seconds; a pair is taken once complete (the rule is in
:mod:`tomocare.watch`). Without ``--model`` it waits for the first N complete pairs (``train_on``,
default 1; their names are kept in ``state.json`` so an interrupted training resumes on the same ones),
trains one model on them as the batch mode does, then denoises them and every later pair, one at a time,
each through the batch mode's own step (:func:`~tomocare.pipeline.denoise_pair`) and recorded in
``OUT/state.json``: a rerun skips the finished ones. The report is rewritten after each tomogram.
Runs until SIGINT or SIGTERM (:class:`~tomocare.watch.StopSignal`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from distributed import Client

from tomocare import __version__
from tomocare.errors import TomocareError
from tomocare.io import relion
from tomocare.io.atomic import refuse_inputs, write_atomic
from tomocare.io.discover import VolumePair, discover_pairs
from tomocare.pipeline import STATE, DenoiseOptions, State, _copy_loss, _train_model, denoise_pair, is_done
from tomocare.progress import progress_log
from tomocare.watch import StopSignal, Watcher

log = logging.getLogger(__name__)


@dataclass
class WatchResult:
    """Tomograms of a live run so far: denoised now, done in an earlier run, failed (each once)."""

    denoised: int = 0
    earlier: int = 0
    failed: int = 0
    rows: dict[str, dict] = field(default_factory=dict)  # name -> summary row, for the report


def watch_dataset(dataset: str | os.PathLike, out_dir: str | os.PathLike, *, options: DenoiseOptions,
                  client: Client, stop: StopSignal, result: WatchResult | None = None,
                  clock: Callable[[], float] = time.monotonic) -> WatchResult:
    """Denoise the pairs of ``dataset`` as they are completed, until ``stop`` is requested; return the counts
    (``result``, filled as it goes, is the caller's even when a TomocareError ends the run)."""
    dataset, out_dir = check_watchable(dataset), Path(out_dir)
    run = _LiveRun(dataset, out_dir, options, client, result or WatchResult())
    watcher = Watcher(options.settings.denoise.watch_settle_s)
    with stop.armed():
        while stop.requested is None:
            poll = watcher.poll(discover_pairs(dataset, allow_empty=True).pairs, clock())
            for name, error in poll.broken:
                run.fail(name, f"{error} (skipped until its files change)")
            for pair in poll.ready:
                run.add(pair)
            run.step()
            time.sleep(options.settings.denoise.watch_interval_s)
    return run.result


def check_watchable(dataset: str | os.PathLike) -> Path:
    """``dataset`` if it is a directory (live mode watches directories, not a RELION STAR file)."""
    dataset = Path(dataset)
    if not dataset.exists():
        raise TomocareError(f"{dataset}: no such directory")
    if relion.is_star(dataset) or not dataset.is_dir():
        raise TomocareError(f"{dataset}: --watch watches a directory of even/odd halves, not a file")
    return dataset


class _LiveRun:
    """The state of one live run: the pairs waiting for the model, the model, the report's rows."""

    def __init__(self, dataset: Path, out_dir: Path, options: DenoiseOptions, client: Client, result: WatchResult):
        from tomocare.predict.engine import task_memory

        self.out_dir, self.options, self.client, self.result = out_dir, options, client, result
        self.settings = settings = options.settings
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report").mkdir(exist_ok=True)
        self.state = State(out_dir / STATE)
        self.run_config = {"version": __version__, "dataset": str(dataset), "watch": True,
                           "model": str(options.model) if options.model else None, **settings.model_dump()}
        write_atomic(out_dir / "config.json", json.dumps(self.run_config, indent=2) + "\n")
        self.memory = task_memory(client) if settings.predict.block is None else None
        self.model_dir: Path | None = options.model
        self.train = options.model is None and not settings.denoise.per_tomogram  # one model, trained here
        self.waiting: list[VolumePair] = []
        self.voxel_size: float | None = None
        self._said_waiting = -1

    def add(self, pair: VolumePair) -> None:
        """A newly complete pair: checked (not an output, the dataset's voxel size) and queued."""
        refuse_inputs(self.out_dir, [pair.even.path, pair.odd.path])
        size = pair.even.voxel_size[-1]
        if self.voxel_size is None:
            self.voxel_size = size
        elif abs(size - self.voxel_size) > 0.01 * max(abs(size), abs(self.voxel_size)) \
                and not self.settings.denoise.allow_mixed:
            self.fail(pair.name, f"voxel size {size:g} Å differs from the first tomogram's {self.voxel_size:g} Å; "
                                 "use --allow-mixed to proceed anyway")
            return
        self.waiting.append(pair)

    def step(self) -> None:
        """Train once enough pairs are complete; then denoise every waiting pair."""
        if self.train and self.model_dir is None:
            self.model_dir = self._train()
            if self.model_dir is None:
                return
        while self.waiting:
            self._denoise(self.waiting.pop(0))

    def _train(self) -> Path | None:
        model_dir = self.out_dir / "model"
        finished = (model_dir / "model.json").exists() and not (model_dir / "checkpoint.pt").exists()
        if finished and not self.options.retrain:  # trained in an earlier run (its settings are still checked)
            return _train_model([], model_dir, self.options, self.voxel_size or 0.0, self.client)
        n = self.settings.denoise.train_on or 1
        names = self.state.data.get("training_set") if (model_dir / "checkpoint.pt").exists() else None
        names = names or [p.name for p in self.waiting[:n]]
        by_name = {p.name: p for p in self.waiting}
        ready = [by_name[name] for name in names if name in by_name]
        if len(names) < n or len(ready) < len(names):
            if len(ready) != self._said_waiting:
                progress_log.info("waiting for complete pairs to train on: %d of %d", len(ready), max(n, len(names)))
                self._said_waiting = len(ready)
            return None
        self.state.data["training_set"] = names
        self.state.save()
        progress_log.info("training on %s", ", ".join(names))
        trained = _train_model(ready, model_dir, self.options, ready[0].even.voxel_size[-1], self.client)
        _copy_loss(trained, self.out_dir / "report" / "training_loss.png")
        return trained

    def _denoise(self, pair: VolumePair) -> None:
        name, settings = pair.name, self.settings
        done = self.state.tomogram(name)
        model_dir = self.model_dir or self.out_dir / "models" / name  # --per-tomogram: its own, once trained
        if is_done(done, name, self.out_dir, model_dir, settings):
            log.info("%s: done in an earlier run, skipped", name)
            self.result.earlier += 1
            self.result.rows[name] = done | {"name": name}
            return
        progress_log.info("%s: complete, denoising", name)
        entry = denoise_pair(pair, self.out_dir, self.model_dir, self.options, self.client, memory=self.memory,
                             state=self.state, finished=self.result.denoised + self.result.earlier)
        if entry["status"] == "done":
            self.result.denoised += 1
            self.result.rows[name] = entry | {"name": name}
            progress_log.info("%s: denoised, %s (%d in this run)", name, entry["output"], self.result.denoised)
            self._report()
        else:
            self.fail(name, entry["error"], recorded=True)

    def fail(self, name: str, error: str, *, recorded: bool = False) -> None:
        """One line for a pair that cannot be denoised; recorded as failed (a rerun tries it again)."""
        progress_log.warning("%s: FAILED: %s", name, error)
        if not recorded:
            self.state.set(name, status="failed", error=error)
        self.result.failed += 1
        self.result.rows[name] = {"name": name, "status": "failed", "error": error}
        self._report()

    def _report(self) -> None:
        from tomocare.evaluate.report import write_summary

        rows = [self.result.rows[n] for n in sorted(self.result.rows)]
        write_summary(rows, self.out_dir / "report", settings=self.run_config)
