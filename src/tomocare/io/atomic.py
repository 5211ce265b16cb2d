"""Outputs appear complete or not at all: write under a temporary name, move into place."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from tomocare.errors import TomocareError


def check_output(path: Path, *, overwrite: bool) -> None:
    """Refuse an existing output unless ``overwrite``; the parent directory must exist."""
    if path.exists() and not overwrite:
        raise TomocareError(f"{path}: output exists (use --overwrite to replace it)")
    if not path.parent.exists():
        raise TomocareError(f"{path.parent}: output directory does not exist")


def temporary_sibling(path: Path) -> Path:
    """The temporary name used while ``path`` is being written (same directory, so rename is atomic)."""
    return path.with_name(f".{path.name}.partial")


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def commit(tmp: Path, path: Path) -> None:
    """Move a finished temporary output into place, replacing an old one only at the end."""
    old = path.with_name(f".{path.name}.old")
    if path.exists():
        remove(old)
        os.replace(path, old)
    os.replace(tmp, path)
    remove(old)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success move it to ``path``, on failure remove it."""
    path = Path(path)
    check_output(path, overwrite=overwrite)
    tmp = temporary_sibling(path)
    remove(tmp)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    commit(tmp, path)
