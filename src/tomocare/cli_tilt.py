"""Commands of the ``tomocare`` line for tilt (registered on the app of ``tomocare.cli``)."""

from __future__ import annotations

from tomocare.cli import app  # noqa: F401
