"""What a training run shows and leaves behind: a progress bar, and its loss history as CSV, JSON, PNG."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path


class ProgressBar:
    """Steps done and the latest losses: rich if installed, else tqdm, else nothing (log lines only)."""

    def __init__(self, total: int, initial: int, enabled: bool = True):
        self._rich = self._tqdm = None
        if not enabled:
            return
        try:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._rich = Progress(
                TextColumn("training"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[losses]}"),
            )
            self._task = self._rich.add_task("train", total=total, completed=initial, losses="")
        except ImportError:
            try:
                from tqdm.auto import tqdm

                self._tqdm = tqdm(total=total, initial=initial, desc="training", unit="step")
            except ImportError:
                pass

    def __enter__(self) -> ProgressBar:
        if self._rich is not None:
            self._rich.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._rich is not None:
            self._rich.stop()
        if self._tqdm is not None:
            self._tqdm.close()

    def update(self, step: int, **losses: float) -> None:
        text = " ".join(f"{k} {v:.4g}" for k, v in losses.items())
        if self._rich is not None:
            self._rich.update(self._task, completed=step, losses=text)
        elif self._tqdm is not None:
            self._tqdm.update(step - self._tqdm.n)
            self._tqdm.set_postfix_str(text, refresh=False)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_history(directory: Path, history: list[dict]) -> None:
    """``history.json``, ``history.csv`` and ``loss.png`` (train and validation loss per step)."""
    if not history:
        return
    _write_atomic(directory / "history.json", (json.dumps(history, indent=1) + "\n").encode())
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    _write_atomic(directory / "history.csv", text.getvalue().encode())

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
    _write_atomic(directory / "loss.png", png.getvalue())
