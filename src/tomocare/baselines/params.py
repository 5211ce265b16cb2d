"""The classical filters' parameters, their defaults and meanings (units, ranges), without importing
the filters (scipy): the filters take their defaults from here, ``tomocare baseline --help`` its table."""

from __future__ import annotations

from dataclasses import field
from typing import Any

NAD_MAX_TIME_STEP = 0.15  # the explicit scheme is stable below about 1/6 in 3-D

#: method -> parameter -> (default, meaning); None: chosen from the data.
PARAMS: dict[str, dict[str, tuple[float | None, str]]] = {
    "median": {"size": (3, "cube edge in voxels, odd")},
    "gaussian": {"sigma": (1.5, "standard deviation in voxels, at most 20")},
    "lowpass": {
        "cutoff": (0.3, "fraction of Nyquist (0.5 cycles/voxel), 0.1 to <1"),
        "order": (4, "Butterworth order: steepness, 1 to 8"),
    },
    "nad": {
        "iterations": (10, "diffusion steps, at most 200"),
        "time_step": (0.1, f"per step, at most {NAD_MAX_TIME_STEP}"),
        "contrast": (0.5, "edge threshold in units of scale"),
        "scale": (None, "data units; auto: the input's standard deviation"),
        "sigma": (1.0, "gradient smoothing in voxels, at most 5"),
        "rho": (1.0, "structure-tensor smoothing in voxels, at most 5"),
    },
}


def param(method: str, name: str) -> Any:
    """The dataclass field of a filter parameter: its default, and its meaning as metadata."""
    default, meaning = PARAMS[method][name]
    return field(default=default, metadata={"help": meaning})


def params_help() -> str:
    """Every filter's parameters as a table, one line each: ``median:   size=3   cube edge in voxels, odd``."""
    lines = []
    for method, params in PARAMS.items():
        for i, (name, (default, meaning)) in enumerate(params.items()):
            value = f"{name}={'auto' if default is None else f'{default:g}'}"
            lines.append(f"  {(method + ':') if i == 0 else '':10}{value:15}{meaning}")
    return "\n".join(lines)
