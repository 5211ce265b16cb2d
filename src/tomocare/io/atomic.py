"""Outputs appear complete or not at all: write under a temporary name, move into place."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

from tomocare.errors import TomocareError


def check_output(path: Path, *, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite``; create a missing parent directory (every
    command does, so a dry run's answer holds)."""
    if path.exists() and not overwrite:
        raise TomocareError(f"{path}: output exists (use --overwrite to replace it)")
    if not path.parent.is_dir():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise TomocareError(f"{path.parent}: cannot create the output directory ({err.strerror or err})") from None


def check_output_dir(path: Path) -> None:
    """Refuse an output directory that exists as something else (a file)."""
    if path.exists() and not path.is_dir():
        raise TomocareError(f"{path}: not a directory")


def refuse_inputs(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse, whatever ``--overwrite`` says, an output that is an input, contains one or lies inside
    one (a zarr store, a directory), or lies inside any zarr store, symlinks resolved: writing it
    would damage the input or the store."""
    out = _resolved(output)
    for given in inputs:
        if given is None:
            continue
        source = _resolved(given)
        if out == source:
            problem = f"is the input {given}"
        elif source.is_relative_to(out):
            problem = f"contains the input {given}"
        elif out.is_relative_to(source):
            problem = f"lies inside the input {given}"
        else:
            continue
        raise TomocareError(f"{output}: output {problem}; inputs are never written, choose another output")
    store = next((p for p in out.parents if (p / "zarr.json").is_file() or (p / ".zgroup").is_file()), None)
    if store is not None:
        raise TomocareError(f"{output}: output lies inside the zarr store {store}; choose another output")


def _resolved(path: str | os.PathLike) -> Path:
    try:
        return Path(path).resolve()
    except (RuntimeError, OSError):  # a symlink loop (RuntimeError before Python 3.13)
        raise TomocareError(f"{path}: a symbolic link that cannot be followed (a loop)") from None


def temporary_sibling(path: Path) -> Path:
    """The temporary name used while ``path`` is being written (same directory, so rename is atomic)."""
    return path.with_name(f".{path.name}.partial")


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def commit(tmp: Path, path: Path) -> None:
    """Move a finished temporary output into place, replacing an old one only at the end: a file
    in one step; a directory (a zarr store), which rename cannot replace, by moving the old one
    aside first."""
    if not (tmp.is_dir() or path.is_dir()):
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        remove(old)
        os.replace(path, old)
    os.replace(tmp, path)
    remove(old)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write (a file or a directory); on success move it to ``path``,
    on failure remove it. The one way tomocare writes an output: it appears complete or not at
    all, and an existing one is refused unless ``overwrite`` (:func:`check_output`)."""
    path = Path(path)
    check_output(path, overwrite=overwrite)
    tmp = temporary_sibling(path)
    remove(tmp)
    try:
        yield tmp
    except BaseException as err:
        remove(tmp)
        if isinstance(err, OSError) and err.filename is None:  # a full disk on a worker says no file: the output
            err.filename = str(path)
        raise
    commit(tmp, path)


def write_atomic(path: str | os.PathLike, data: bytes | str) -> None:
    """Write (or replace) the file ``path`` with ``data`` in one step (a small file: metadata, a
    table, a picture); a string is written as UTF-8."""
    with atomic_path(path, overwrite=True) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


@contextlib.contextmanager
def output_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the one lock of an output (``.NAME.lock`` beside it) for a run: a second run on the
    same output is refused in one line naming the first. The operating system releases the lock
    of a process that dies, so a killed run never blocks the next."""
    import fcntl

    path = Path(path)
    lock = path.with_name(f".{path.name}.lock")
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            other = f.read().strip() or "another process"
            raise TomocareError(f"{path}: another tomocare run ({other}) is writing this output; "
                                "wait for it or choose another output") from None
        try:
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()} on {os.uname().nodename}")
            f.flush()
            yield
        finally:
            lock.unlink(missing_ok=True)

