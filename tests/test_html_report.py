"""The one-page report: valid HTML that opens from disk, every picture embedded and decodable."""

from __future__ import annotations

import base64
import io
from html.parser import HTMLParser
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tomocare.evaluate.report import write_summary  # noqa: E402

VOID = {"meta", "img", "br", "hr", "link", "input"}


class _Checker(HTMLParser):
    """Collects images and checks that every opened element is closed in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []
        self.errors: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack.pop() != tag:
            self.errors.append(f"unbalanced </{tag}>")

    def handle_data(self, data):
        self.text.append(data)


def _picture(path: Path, seed: int) -> None:
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.imshow(np.random.default_rng(seed).normal(size=(16, 16)))
    fig.savefig(path, dpi=40)
    plt.close(fig)


def test_report_is_one_valid_page_with_every_picture_embedded(tmp_path):
    rows = [{"name": "tomo_a", "status": "done", "fsc143_raw_A": 40.5, "fsc143_denoised_consistency_A": None,
             "psnr_raw_db": 25.1, "psnr_denoised_db": 38.2, "stop_reason": "time budget spent"},
            {"name": "tomo_<b>", "status": "failed", "error": "x.mrc: truncated <data> & more"}]
    for i, name in enumerate(["tomo_a_slices", "tomo_a_fsc", "training_loss"]):
        _picture(tmp_path / f"{name}.png", i)
    write_summary(rows, tmp_path, settings={"train": {"time_limit": 600}})

    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert not checker.errors and checker.stack == [], (checker.errors, checker.stack)
    assert len(checker.images) == 3  # two pictures of tomo_a and the training curve; none for the failed one
    for src in checker.images:
        assert src.startswith("data:image/png;base64,")  # nothing to fetch: the page works offline
        picture = mpimg.imread(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), format="png")
        assert picture.ndim == 3 and picture.shape[0] > 10
    text = "".join(checker.text)
    assert "tomo_<b>" in text and "truncated <data> & more" in text  # escaped in the source, shown as written
    assert "<b>" not in page.replace("&lt;b&gt;", "")
    assert "Nyquist" in text and "38.20" in text and '"time_limit": 600' in text
    assert "not resolution" in text  # the FSC of the denoised halves is labelled for what it is
    assert not list(tmp_path.glob(".*partial"))
