"""Classical denoising baselines (median, Gaussian, Butterworth low-pass, NAD), tile by tile."""

from tomocare.baselines.filters import FILTERS, NAD, Filter, Gaussian, Lowpass, Median, make_filter

__all__ = ["FILTERS", "NAD", "Filter", "Gaussian", "Lowpass", "Median", "make_filter"]
