"""Classical denoising baselines (median, Gaussian, Butterworth low-pass, NAD), tile by tile.

The filters (and scipy) are imported on first use, so ``tomocare.baselines.params`` (the
parameters' defaults, for the command line's help) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tomocare.baselines.filters import FILTERS, NAD, Filter, Gaussian, Lowpass, Median, make_filter

__all__ = ["FILTERS", "NAD", "Filter", "Gaussian", "Lowpass", "Median", "make_filter"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tomocare.baselines import filters

        return getattr(filters, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
