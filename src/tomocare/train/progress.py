"""Training progress and history, kept importable here: they live in :mod:`tomocare.progress`.

This module *is* that one (``sys.modules`` names it twice), so ``LOG_INTERVAL`` set on either
name is the one both the training bar and the block progress of prediction read.
"""

from __future__ import annotations

import sys

from tomocare import progress as _progress
from tomocare.progress import LOG_INTERVAL, ProgressBar, progress_log, write_history

__all__ = ["LOG_INTERVAL", "ProgressBar", "progress_log", "write_history"]

sys.modules[__name__] = _progress
