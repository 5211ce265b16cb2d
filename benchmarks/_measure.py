"""Measurement helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import json
import os
import platform
import threading
import time
from pathlib import Path

PAGE = os.sysconf("SC_PAGE_SIZE")


def _parents() -> dict[int, int]:
    """Parent of every process now running, from /proc (Linux)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # the process has just ended
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])  # after "pid (comm) state"
    return parents


def _rss(pid: int) -> int:
    """Resident bytes of a process (0 when it has just ended); as ``ps`` and psutil count it."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return 0


class PeakRSS:
    """Samples the resident memory of a process (default: this one) and all its descendants, summed;
    keeps the peak. Use as a context manager around the measured work; ``peak`` is in bytes.
    Reads /proc (Linux), as the benchmarks' figures were measured.
    """

    def __init__(self, interval: float = 0.05, pid: int | None = None):
        self.interval = interval
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _total(self) -> int:
        parents = _parents()
        family, grown = {self.pid or os.getpid()}, True
        while grown:
            more = {pid for pid, parent in parents.items() if parent in family} - family
            family |= more
            grown = bool(more)
        return sum(_rss(pid) for pid in family)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._total())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._total())


def machine() -> dict:
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version(),
            "memory_gib": round(PAGE * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def save(results: dict, name: str) -> Path:
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **results}, indent=2) + "\n")
    print(f"wrote {path}")
    return path


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"
