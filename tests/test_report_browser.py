"""The report of a 20-tomogram dataset in a real browser: ``tomocare denoise --per-tomogram`` (the largest report:
orthoslices, FSC curves and training curves for each tomogram) on simulated data, then ``report/index.html`` opened
from disk in headless Chromium (Debian's package, driven by Playwright): every picture decodes, nothing errors,
nothing is fetched but the page itself.

Slow (13 minutes on a busy 2-core machine): ``pip install -c constraints.txt -e '.[test,browser]'`` then
``python -m pytest -m slow tests/test_report_browser.py``. Chromium is Debian's ``/usr/bin/chromium``; the session
fixture installs it with apt-get when it is missing and the test runs as root, else the test is skipped.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from tomocare.cli import main
from tomocare.simulate import simulate_dataset

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]  # 13 min here (2 busy cores)

CHROMIUM = Path("/usr/bin/chromium")
# headless, and nothing of its own on the network: on a closed network background connections fail and log errors
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
N_TOMOGRAMS = 20
N_DISTINCT = 4  # simulated tomograms; the 20 of the dataset are links to them (simulating is the slow part)
# 512 pixels a side: the orthoslices picture is as large as real tomograms make it (its figure is 1120 pixels
# wide whatever the volume, and noise fills every pixel from ~500 up); thin in z to keep the run short.
SHAPE = (16, 512, 512)
MAX_BYTES = 25_000_000  # measured 17.2 MB (README, "Report")
TRAIN = ("[train]\npatch_size = 16\ndepth = 1\nbase_channels = 2\nn_patches = 8\nn_val_patches = 2\nbatch_size = 4\n"
         "max_steps = 4\nsteps_per_epoch = 2\n[denoise]\nmrc = false\n")


def _apt_install_chromium() -> str | None:
    """Install Debian's chromium; return why it could not be, or None."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return (f"no {CHROMIUM}, and the test installs Debian's chromium only as root with apt-get "
                "(apt-get install --no-install-recommends chromium)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:]
            return f"{' '.join(cmd)} failed ({done.returncode}): {' '.join(last)}"
    return None if CHROMIUM.exists() else f"apt-get installed chromium, but {CHROMIUM} is not there"


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed with apt-get when missing (as root); Playwright to drive it."""
    pytest.importorskip("playwright.sync_api",
                        reason="needs the browser extra: pip install -c constraints.txt -e '.[test,browser]'")
    if not CHROMIUM.exists():
        why = _apt_install_chromium()
        if why is not None:
            pytest.skip(why)
    return CHROMIUM


@pytest.fixture(scope="module")
def report(tmp_path_factory, client) -> Path:
    """``report/index.html`` of ``tomocare denoise --per-tomogram`` on a simulated 20-tomogram dataset."""
    base = tmp_path_factory.mktemp("browser")
    simulate_dataset(base / "distinct", n_tomograms=N_DISTINCT, shape=SHAPE, snr=0.5, seed=7, chunks=64)
    dataset = base / "dataset"
    dataset.mkdir()
    for i in range(N_TOMOGRAMS):
        for kind in ("even", "odd", "clean"):
            source = base / "distinct" / f"tomo_{i % N_DISTINCT:03d}_{kind}.mrc"
            (dataset / f"tomo_{i:03d}_{kind}.mrc").symlink_to(source)
    (base / "train.toml").write_text(TRAIN)
    out = base / "out"
    assert main(["denoise", str(dataset), "--out", str(out), "--config", str(base / "train.toml"), "--per-tomogram",
                 "--scheduler", client.scheduler.address]) == 0
    return out / "report" / "index.html"


def test_report_size_is_stated(report):
    pictures = sorted(report.parent.glob("*.png"))
    assert len(pictures) == 3 * N_TOMOGRAMS  # orthoslices, FSC and training curves of each tomogram
    slices = [p.stat().st_size for p in pictures if p.name.endswith("_slices.png")]
    png = sum(p.stat().st_size for p in pictures)
    embedded = sum(4 * -(-p.stat().st_size // 3) for p in pictures)  # base64
    size = report.stat().st_size
    print(f"\nreport of {N_TOMOGRAMS} tomograms {'x'.join(map(str, SHAPE))}: index.html {size / 1e6:.1f} MB "
          f"({size / N_TOMOGRAMS / 1e6:.2f} MB a tomogram); {len(pictures)} PNG {png / 1e6:.1f} MB, "
          f"orthoslices {min(slices) / 1e6:.2f}-{max(slices) / 1e6:.2f} MB each")
    assert min(slices) > 400_000  # full-size pictures, as real tomograms give, not a small volume's
    assert embedded < size < embedded + 100_000  # the pictures are the page: it grows by them, linearly
    assert size < MAX_BYTES


def test_report_opens_from_disk_in_chromium(report, chromium):
    from playwright.sync_api import sync_playwright

    url = report.resolve().as_uri()
    problems: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:  # a fresh user-data-dir
        browser = p.chromium.launch_persistent_context(profile, executable_path=str(chromium), headless=True,
                                                       args=FLAGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url[:100]} {r.failure}"))
            page.on("request", lambda r: requests.append(r.url))
            response = page.goto(url, wait_until="load")
            assert response is not None and response.ok
            images = page.evaluate("""async () => Promise.all(Array.from(document.images, async (img) => {
                let error = null;
                try { await img.decode(); } catch (e) { error = String(e); }
                return {alt: img.alt, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
                        scheme: img.src.split(':')[0], error: error};
            }))""")
            title = page.title()
        finally:
            browser.close()
    assert title == "tomocare denoising report"
    assert len(images) == 3 * N_TOMOGRAMS
    bad = [i for i in images if not (i["complete"] and i["width"] > 0 and i["height"] > 0) or i["error"]]
    assert not bad, bad
    assert {i["scheme"] for i in images} == {"data"}  # embedded
    assert not problems, problems
    assert [r for r in requests if not r.startswith("data:")] == [url]  # the page, and nothing else fetched
