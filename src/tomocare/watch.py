"""Live mode's bookkeeping (``denoise --watch``): which pairs of a watched directory are complete, and
stopping on SIGINT/SIGTERM. No dask, no torch: the clock, ``stat`` and ``open`` are given, so it is tested alone.

The completion rule: a file is *settled* once its size and modification time (ns) have stayed the same
over polls spanning at least ``settle_s`` seconds of this process's clock (the first poll that sees a
size and time starts the count; any change restarts it; a file present at start waits ``settle_s`` too).
A pair is *complete* when both halves are settled and it opens cleanly (:func:`~tomocare.io.discover.open_pair`:
header and data size agree, shapes and voxel sizes match). A settled pair that does not open is
reported once and skipped until one of its files changes again (a writer that paused, then went on).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from tomocare.errors import TomocareError
from tomocare.io.discover import Pair, VolumePair, open_pair

Signature = tuple[int, int]  # size in bytes, modification time in ns


def signature(path: Path) -> Signature | None:
    """A file's size and modification time, or None where it is gone."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


class Settler:
    """Files' signatures over polls: :meth:`settled` once one has not changed for ``settle_s`` seconds."""

    def __init__(self, settle_s: float):
        self.settle_s = settle_s
        self._since: dict[Path, tuple[Signature, float]] = {}

    def settled(self, path: Path, sig: Signature | None, now: float) -> bool:
        """Record ``sig`` seen at ``now``; whether the file has kept it for ``settle_s`` seconds."""
        if sig is None:
            self._since.pop(path, None)
            return False
        seen = self._since.get(path)
        if seen is None or seen[0] != sig:
            self._since[path] = seen = (sig, now)
        return now - seen[1] >= self.settle_s


@dataclass
class Poll:
    """What one poll found: pairs newly complete (each returned once), and settled pairs that do not open
    (name, one-line reason), each reported once per version of its files."""

    ready: list[VolumePair] = field(default_factory=list)
    broken: list[tuple[str, str]] = field(default_factory=list)


class Watcher:
    """The complete pairs of a directory, poll after poll (the rule in the module's docstring)."""

    def __init__(self, settle_s: float, *, stat: Callable[[Path], Signature | None] = signature,
                 opener: Callable[[Pair], VolumePair] = open_pair):
        self.settler = Settler(settle_s)
        self._stat, self._open = stat, opener
        self._taken: set[str] = set()
        self._broken: dict[str, tuple[Signature | None, Signature | None]] = {}

    def poll(self, pairs: Iterable[Pair], now: float) -> Poll:
        out = Poll()
        for pair in pairs:
            if pair.name in self._taken:
                continue
            sigs = self._stat(pair.even), self._stat(pair.odd)
            settled = [self.settler.settled(p, s, now) for p, s in zip((pair.even, pair.odd), sigs)]
            if not all(settled) or self._broken.get(pair.name) == sigs:
                continue
            try:
                opened = self._open(pair)
            except TomocareError as err:
                self._broken[pair.name] = sigs
                out.broken.append((pair.name, " ".join(str(err).split())))
                continue
            self._broken.pop(pair.name, None)
            self._taken.add(pair.name)
            out.ready.append(opened)
        return out


class Stopped(BaseException):
    """Raised by :class:`StopSignal` in the main thread: a BaseException, so no ``except Exception`` swallows it."""


class StopSignal:
    """SIGINT and SIGTERM stop live mode cleanly. The first signal sets :attr:`requested`; inside
    :meth:`armed` it also raises :class:`Stopped` (abandoning a poll, a training or a block run: outputs
    are written under temporary names, so none is left half-written); later signals are ignored while
    the cluster closes."""

    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name
        self._armed = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        first = self.requested is None
        if first:
            self.requested = signal.Signals(signum).name
        if first and self._armed:
            self._armed = False
            raise Stopped(self.requested)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignal]:
        """The handler for SIGINT and SIGTERM, the previous ones restored after."""
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    @staticmethod
    @contextlib.contextmanager
    def sigint_ignored() -> Iterator[None]:
        """SIGINT ignored meanwhile: worker processes started now inherit that, so a Ctrl-C (sent to the
        whole process group) reaches only this process, which closes them (no traceback from each)."""
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        """A region the first signal interrupts, leaving it quietly; one requested before is seen in
        :attr:`requested` (check it in the region's loop)."""
        self._armed = self.requested is None
        try:
            yield
        except Stopped:
            pass
        finally:
            self._armed = False
