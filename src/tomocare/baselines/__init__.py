"""Classical denoising baselines (median, Gaussian, Butterworth low-pass, NAD), tile by tile."""

from tomocare.baselines.filters import DEFAULTS, Filter, make_filter, reference

__all__ = ["DEFAULTS", "Filter", "make_filter", "reference"]
