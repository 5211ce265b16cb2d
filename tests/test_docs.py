"""The documents that describe the code keep up with it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_architecture_names_every_module():
    """docs/architecture.md's module table names every module of src/tomocare: as a file
    (``cli/app.py``, ``model.py``) or, for a package described as a whole, as ``package/``; and
    names nothing that is gone."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    table = "\n".join(line for line in text.splitlines() if line.startswith("| `"))
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", table))
    package = ROOT / "src" / "tomocare"
    missing = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.endswith("/__init__.py"):  # a sub-package's own file: the package's modules are named
            continue
        folder = relative.split("/")[0] + "/" if "/" in relative else None
        if relative not in named and folder not in named:
            missing.append(relative)
    assert not missing, f"docs/architecture.md does not name: {missing}"
    for name in named:
        assert (package / name).exists(), f"docs/architecture.md names {name}, which does not exist"
