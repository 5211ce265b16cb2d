"""What a training run shows and leaves behind: progress (a bar, or log lines), its loss history as CSV, JSON, PNG."""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import time
from pathlib import Path

from tomocare.io.atomic import write_atomic


#: Seconds between progress lines when stderr is not a terminal (batch jobs, SLURM logs).
LOG_INTERVAL = 30.0
progress_log = logging.getLogger("tomocare.progress")


class ProgressBar:
    """Training progress: a rich bar on a terminal; otherwise a log line on ``tomocare.progress``
    at most every ``LOG_INTERVAL`` seconds (step, losses, learning rate, steps/s, time left)."""

    def __init__(self, total: int, initial: int, enabled: bool = True, interval: float | None = None):
        self.total, self.interval = total, LOG_INTERVAL if interval is None else interval
        self._rich = None
        self._last_time = self._start_time = time.monotonic()
        self._start_step = initial
        self._values: dict[str, float] = {}
        if not enabled:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._rich = Progress(
            TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            TextColumn("{task.fields[losses]}"),
        )
        self._task = self._rich.add_task("train", total=total, completed=initial, losses="")

    def __enter__(self) -> ProgressBar:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()

    def update(self, step: int, *, left: float | None = None, force: bool = False, **values: float) -> None:
        """Record ``values`` (loss, val, lr) at ``step``; ``left``: seconds of budget left."""
        self._values.update(values)
        text = " ".join(f"{k} {v:.4g}" for k, v in self._values.items())
        if self._rich is not None:
            self._rich.update(self._task, completed=step, losses=text)
            return
        now = time.monotonic()
        if not force and now - self._last_time < self.interval:
            return
        self._last_time = now
        rate = (step - self._start_step) / max(now - self._start_time, 1e-9)
        remaining = f", {left:.0f} s left" if left is not None else ""
        progress_log.info("step %d of ~%d: %s, %.2f steps/s%s", step, self.total, text, rate, remaining)


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
