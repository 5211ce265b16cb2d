"""What a long run shows: a rich bar on a terminal; otherwise a log line on ``tomocare.progress``
at most every ``LOG_INTERVAL`` seconds (batch jobs, SLURM logs). One implementation for training
steps (:class:`ProgressBar`) and prediction blocks (:func:`block_progress`); and what a training
run leaves behind: its loss history as CSV, JSON, PNG (:func:`write_history`).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tomocare.io.atomic import write_atomic

#: Seconds between progress lines when stderr is not a terminal (batch jobs, SLURM logs).
LOG_INTERVAL = 30.0
progress_log = logging.getLogger("tomocare.progress")


class _Bar:
    """A rich bar of ``total`` units from ``start`` (``enabled``), else the timing of log lines:
    :meth:`show` updates the bar, or says when a line is due and the rate since the start."""

    def __init__(self, description: str, total: int, start: int, enabled: bool, interval: float | None = None,
                 **fields: Any):
        self.start = start
        self.interval = LOG_INTERVAL if interval is None else interval
        self._last = self._t0 = time.monotonic()
        self._rich = None
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = [TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeRemainingColumn(), *(TextColumn(f"{{task.fields[{name}]}}") for name in fields)]
        self._rich = Progress(*columns)
        self._task = self._rich.add_task(description, total=total, completed=start, **fields)

    def begin(self) -> None:
        if self._rich is not None:
            self._rich.start()

    def end(self) -> None:
        if self._rich is not None:
            self._rich.stop()

    def show(self, count: int, *, force: bool = False, **fields: Any) -> float | None:
        """Move the bar to ``count``; without a bar, the units per second since the start when a
        log line is due (``force``, or ``interval`` seconds since the last), else None."""
        if self._rich is not None:
            self._rich.update(self._task, completed=count, **fields)
            return None
        now = time.monotonic()
        if not force and now - self._last < self.interval:
            return None
        self._last = now
        return (count - self.start) / max(now - self._t0, 1e-9)


class ProgressBar:
    """Training progress: a rich bar on a terminal; otherwise a log line on ``tomocare.progress``
    at most every ``LOG_INTERVAL`` seconds (step, losses, learning rate, steps/s, time left)."""

    def __init__(self, total: int, initial: int, enabled: bool = True, interval: float | None = None):
        self.total = total
        self._bar = _Bar("training", total, initial, enabled, interval, losses="")
        self.interval = self._bar.interval
        self._values: dict[str, float] = {}

    def __enter__(self) -> ProgressBar:
        self._bar.begin()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.end()

    def update(self, step: int, *, left: float | None = None, force: bool = False, **values: float) -> None:
        """Record ``values`` (loss, val, lr) at ``step``; ``left``: seconds of budget left."""
        self._values.update(values)
        text = " ".join(f"{k} {v:.4g}" for k, v in self._values.items())
        rate = self._bar.show(step, force=force, losses=text)
        if rate is None:
            return
        remaining = f", {left:.0f} s left" if left is not None else ""
        progress_log.info("step %d of ~%d: %s, %.2f steps/s%s", step, self.total, text, rate, remaining)


def block_progress(total: int, start: int, enabled: bool, name: str = "blocks") -> Callable[..., None]:
    """Progress over ``total`` blocks, ``start`` of them done before: a rich bar on a terminal
    (``enabled``); otherwise a log line on ``tomocare.progress`` at most every ``LOG_INTERVAL``
    seconds and at the end (blocks done / total, rate). Returns ``advance(n, close=False)``:
    ``n`` more blocks done; ``close`` at the end."""
    bar = _Bar(name, total, start, enabled)
    bar.begin()
    done = start

    def advance(n: int, close: bool = False) -> None:
        nonlocal done
        done += n
        rate = bar.show(done, force=close)
        if rate is not None:
            progress_log.info("%s: %d/%d blocks, %.2f blocks/s", name, done, total, rate)
        if close:
            bar.end()

    return advance


def write_history(directory: Path, history: list[dict]) -> None:
    """``history.json``, ``history.csv`` and ``loss.png`` (train and validation loss per step)."""
    if not history:
        return
    write_atomic(directory / "history.json", (json.dumps(history, indent=1) + "\n").encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    write_atomic(directory / "history.csv", text.getvalue().encode())

    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train_loss"] for h in history], "o-", label="train")
    ax.plot(steps, [h["val_loss"] for h in history], "s-", label="validation")
    ax.set(xlabel="step", ylabel="loss", title="Noise2Noise loss")
    ax.legend()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    write_atomic(directory / "loss.png", png.getvalue())
