"""Training: the patch sampler on dask workers, the training plan, and the Noise2Noise loop.

Names are imported on first use, so a dask worker unpickling a sampler task imports
``tomocare.train.sampler`` without importing torch.
"""

from importlib import import_module

_EXPORTS = {
    "TrainConfig": "config",
    "train": "loop",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
