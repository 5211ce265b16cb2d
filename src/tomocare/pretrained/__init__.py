"""Models shipped with tomocare, by name: ``tomocare predict --model general``, ``tomocare train --init general``.

Each is a model directory (``model.json`` + weights) inside this package; its model card is
``model.json``'s ``extra.card`` and README's section on the pretrained model. A name is
resolved before a path, so a local directory of the same name is given as a path (``./general``).
"""

from __future__ import annotations

import os
from pathlib import Path

from tomocare.errors import TomocareError

#: Names of the shipped models, and what each is.
PACKAGED = {
    "general": "3-D denoiser trained on diverse simulated tomograms (4-20 A voxels, SNR 0.02-0.3, wedges 40-70 deg, "
               "several noise models); per-volume normalisation",
}
HERE = Path(__file__).parent


def resolve(spec: str | os.PathLike) -> Path:
    """The model directory ``spec`` names: a shipped model's name, else a path as given."""
    text = os.fspath(spec)
    if text not in PACKAGED:
        return Path(text)
    path = HERE / text
    if not (path / "model.json").is_file():
        raise TomocareError(f"the shipped model {text!r} is missing from this installation ({path}); "
                            "reinstall tomocare, or train it again with python -m tomocare.pretrained.recipe")
    return path
