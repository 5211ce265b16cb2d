"""The ``tomocare`` typer app and its root callback (logging, ``--version``); commands register on ``app``."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from tomocare import __version__

app = typer.Typer(
    name="tomocare",
    help="Out-of-core, distributed Noise2Noise denoising of cryo-electron tomograms.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # help texts are plain: '[train]' and '[fp32]' are printed, not read as markup
)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (a test's capture, a redirected log)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log more.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    progress = logging.getLogger("tomocare.progress")  # plans, progress lines, why training stopped: always shown
    if not progress.handlers:
        stderr = _StderrHandler()
        stderr.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        progress.addHandler(stderr)
        progress.setLevel(logging.INFO)
        progress.propagate = False
    if not verbose:  # dask logs every worker start and stop, and shutdown races, below ERROR
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda r: not r.name.startswith(("distributed", "tornado")) or r.levelno >= logging.ERROR)
    if version:
        typer.echo(f"tomocare {__version__}")
        raise typer.Exit()
