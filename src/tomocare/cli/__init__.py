"""The ``tomocare`` command line: parses options and calls the Python API, nothing more.

``app`` (``cli/app.py``) carries the root callback; the shared options are in ``cli/options.py``;
each command group is a module that registers its commands on ``app`` when imported here.
``main`` turns user errors into one line on stderr.
"""

from __future__ import annotations

import errno
import sys
import warnings

import click
import typer

from tomocare.cli import data, denoise, evaluate, nt2c, predict, projects, tilt, train  # noqa: F401  (registration, in help order)
from tomocare.cli.app import app
from tomocare.errors import TomocareError

__all__ = ["app", "main"]


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


# typer bundles its own copy of click (0.2x) or uses click itself (older): catch both.
_CLICKS = {click.exceptions, sys.modules[typer.BadParameter.__module__]}
_USAGE_ERRORS = tuple(m.UsageError for m in _CLICKS)
_CLICK_ERRORS = tuple(m.ClickException for m in _CLICKS)
_EXITS = tuple({getattr(m, "Exit", typer.Exit) for m in _CLICKS} | {typer.Exit})
_ABORTS = tuple({getattr(m, "Abort", typer.Abort) for m in _CLICKS} | {typer.Abort, KeyboardInterrupt})


def _usage_error(exc) -> None:
    """Two lines: the command's usage, and what is wrong with a pointer to --help."""
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        print(ctx.get_usage().replace("Usage:", "usage:", 1), file=sys.stderr)
        where = f" (see '{ctx.command_path} --help')"
    else:
        where = " (see 'tomocare --help')"
    print(f"error: {exc.format_message()}{where}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Entry point: user errors become one line on stderr (usage errors two) and exit code 2."""
    warnings.showwarning = _show_warning
    try:
        app(args=argv, standalone_mode=False, prog_name="tomocare")
    except TomocareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except _EXITS as exc:
        return getattr(exc, "exit_code", 0)
    except _USAGE_ERRORS as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # 'tomocare' or 'tomocare COMMAND' alone: the help
            print(exc.format_message())
            return 0
        _usage_error(exc)
        return 2
    except _CLICK_ERRORS as exc:
        print(f"error: {exc.format_message()}", file=sys.stderr)
        return 2
    except _ABORTS:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except OSError as err:  # a full or read-only disk, a permission, an I/O error, here or on a worker
        where = f"{err.filename}: " if err.filename else ""
        hint = "; free space and rerun the same command to resume" if err.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        print(f"error: {where}{err.strerror or err}{hint}", file=sys.stderr)
        return 2
    return 0

