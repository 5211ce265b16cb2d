"""The report as one self-contained page, ``report/index.html``: the summary table, each
tomogram's orthoslices and FSC curves, the training curves and the settings, pictures embedded
(base64), so the file opens from disk and can be sent on its own.

Pictures are read and written one at a time, so memory stays that of the largest picture.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from tomocare.evaluate.fsc import resolution_text
from tomocare.io.atomic import atomic_path

COLUMNS = {  # summary key -> heading
    "name": "tomogram",
    "status": "status",
    "fsc143_raw_A": "resolution, FSC 0.143 of the raw halves (Å)",
    "fsc143_denoised_consistency_A": "FSC 0.143 of the denoised halves (consistency, Å)",
    "psnr_raw_db": "PSNR raw (dB)",
    "psnr_denoised_db": "PSNR denoised (dB)",
    "stop_reason": "training stopped",
    "error": "error",
}
STYLE = """body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3}img{max-width:100%;height:auto;display:block;margin:.5em 0}
.failed{color:#a00}pre{background:#f7f7f7;padding:1em;overflow-x:auto;font-size:85%}"""


def summary_cell(key: str, value: object) -> str:
    """A cell of the summary table (here and in summary.md): floats to 2 decimals; no FSC crossing
    (None) reads ``Nyquist``."""
    if value is None and key.startswith("fsc143"):
        return resolution_text(None)  # the curve stays above 0.143 up to Nyquist
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _cell(key: str, value: object) -> str:
    return "" if value is None and not key.startswith("fsc143") else html.escape(summary_cell(key, value))


def _image(path: Path, alt: str) -> str:
    """An <img> with the PNG at ``path`` embedded, or nothing when there is no such picture."""
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">\n'


def _table(rows: Sequence[dict]) -> str:
    keys = [k for k in COLUMNS if any(k in r for r in rows)]
    head = "".join(f"<th>{html.escape(COLUMNS[k])}</th>" for k in keys)
    body = "".join(
        f'<tr class="{html.escape(str(r.get("status", "")))}">'
        + "".join(f"<td>{_cell(k, r.get(k))}</td>" for k in keys)
        + "</tr>\n" for r in rows
    )
    return f"<table>\n<tr>{head}</tr>\n{body}</table>\n"


def _parts(rows: Sequence[dict], report_dir: Path, settings: dict | None, notes: Sequence[str]) -> Iterable[str]:
    yield ('<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
           "<title>tomocare denoising report</title>\n"
           f"<style>{STYLE}</style>\n</head>\n<body>\n<h1>tomocare denoising report</h1>\n")
    yield "<h2>Summary</h2>\n" + _table(rows)
    yield "".join(f"<p>{html.escape(note)}</p>\n" for note in notes)
    shared_loss = report_dir / "training_loss.png"
    if shared_loss.is_file():
        yield "<h2>Training</h2>\n" + _image(shared_loss, "training and validation loss")
    for row in rows:
        name = str(row.get("name", ""))
        yield f'<h2 id="{html.escape(name)}">{html.escape(name)}</h2>\n'
        if row.get("status") == "failed":
            yield f'<p class="failed">failed: {html.escape(str(row.get("error", "")))}</p>\n'
        for suffix, alt in (("slices", "central orthoslices, raw and denoised"), ("fsc", "FSC curves"),
                            ("training_loss", "training and validation loss")):
            yield _image(report_dir / f"{name}_{suffix}.png", f"{name}: {alt}")
    if settings is not None:
        yield "<h2>Settings</h2>\n<pre>" + html.escape(json.dumps(settings, indent=2)) + "</pre>\n"
    yield "</body>\n</html>\n"


def write_html_report(rows: Sequence[dict], report_dir: Path, *, settings: dict | None = None,
                      notes: Sequence[str] = ()) -> Path:
    """Write ``report_dir/index.html`` (replacing an older one in one step); return its path."""
    path = Path(report_dir) / "index.html"
    with atomic_path(path, overwrite=True) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for part in _parts(rows, Path(report_dir), settings, notes):
            f.write(part)
    return path
