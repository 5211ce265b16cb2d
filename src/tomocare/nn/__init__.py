"""Networks: the strictly local U-Net, its architecture and halo arithmetic, and where it runs.

Names are imported on first use: ``UNetConfig`` (no torch) serves settings and model files.
"""

from importlib import import_module

_EXPORTS = {"UNet": "unet", "UNetConfig": "architecture"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
