"""tomocare: out-of-core, distributed Noise2Noise denoising of cryo-electron tomograms."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("tomocare")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0"

from tomocare.errors import TomocareError

__all__ = ["TomocareError", "__version__", "open_tomogram"]


def open_tomogram(path):  # noqa: D103 - thin re-export, documented in tomocare.io.xarray_view
    from tomocare.io.xarray_view import open_tomogram as _open

    return _open(path)
