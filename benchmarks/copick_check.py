"""copick's own API reads what tomocare writes into a copick project, and tomocare reads what copick writes.

    python benchmarks/copick_check.py [--venv /tmp/copick-venv] [--workdir /tmp/tomocare-copick]

copick pins zarr<3, so it runs in a separate virtual environment (created with ``python -m venv`` and
``pip install copick`` when missing: needs the package index). Steps:

1. tomocare builds a project: a simulated even/odd pair converted to OME-Zarr 0.4 as tomogram types
   ``wbp-even``/``wbp-odd`` of run ``TS_001`` at 10 Å in the static root (the data portal's layout);
2. ``tomocare copick-predict`` (an untrained network: the check is the format, not the denoising) writes
   type ``denoised`` to the overlay root;
3. in the copick venv: ``copick.from_file`` opens the project, lists runs, voxel spacings and types, reads
   ``denoised`` (every level) with ``CopickTomogram.numpy``, reads ``wbp-even`` and writes it, times 2
   plus 1, as a type ``copick-written`` with ``from_numpy``;
4. tomocare opens ``copick-written`` and compares it with what copick wrote.

Prints copick's answers and the comparisons as JSON; exit 1 if a check fails.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tomocare.cli import main
from tomocare.cluster import dask_client
from tomocare.io.convert import convert_to_zarr
from tomocare.io.volume import open_volume
from tomocare.model import save_model
from tomocare.nn.unet import UNet
from tomocare.simulate import simulate_dataset

VOXEL = 10.0
SHAPE = (48, 96, 96)

COPICK_SCRIPT = """
import json, sys
import numpy as np
import copick, zarr
config, expected, written = sys.argv[1:4]
root = copick.from_file(config)
run = root.get_run("TS_001")
vs = run.get_voxel_spacing(10.0)
(tomo,) = vs.get_tomograms("denoised")
levels = [tomo.numpy(zarr_group=str(i)) for i in range(3)]
reference = np.load(expected)
group = zarr.open(tomo.zarr(), mode="r")
(even,) = vs.get_tomograms("wbp-even")
source = even.numpy() * 2 + 1
new = vs.new_tomogram("copick-written", exist_ok=True)
new.from_numpy(source)
print(json.dumps({
    "copick": copick.__version__, "zarr": zarr.__version__,
    "runs": [r.name for r in root.runs],
    "voxel_spacings": [v.voxel_size for v in run.voxel_spacings],
    "tomo_types": sorted(t.tomo_type for t in vs.tomograms),
    "level_shapes": [list(a.shape) for a in levels],
    "dtype": str(levels[0].dtype),
    "max_abs_difference_to_tomocare": float(np.abs(levels[0] - reference).max()),
    "multiscales_version": group.attrs["multiscales"][0]["version"],
    "scales": [d["coordinateTransformations"][0]["scale"] for d in group.attrs["multiscales"][0]["datasets"]],
    "axes": group.attrs["multiscales"][0]["axes"],
}))
np.save(written, source)
"""


def ensure_venv(venv: Path) -> Path:
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "copick"], check=True)
    return python


def build_project(work: Path) -> tuple[Path, Path]:
    """The project (config path) and the model; the halves in the static root, an empty overlay."""
    if work.exists():
        shutil.rmtree(work)
    data = work / "data"
    simulate_dataset(data, n_tomograms=1, shape=SHAPE, snr=0.5, seed=1, voxel_size=VOXEL)
    spacing = work / "static" / "ExperimentRuns" / "TS_001" / "VoxelSpacing10.000"
    for half in ("even", "odd"):
        convert_to_zarr(data / f"tomo_000_{half}.mrc", spacing / f"wbp-{half}.zarr", output_format="ome-zarr-0.4")
    (work / "overlay").mkdir()
    config = work / "copick_config.json"
    config.write_text(json.dumps({"name": "tomocare-check", "config_type": "filesystem", "pickable_objects": [],
                                  "overlay_root": f"local://{work / 'overlay'}",
                                  "overlay_fs_args": {"auto_mkdir": True},
                                  "static_root": f"local://{work / 'static'}"}, indent=2))
    torch.manual_seed(0)
    model = work / "model"
    save_model(model, UNet(depth=1, base_channels=4), mean=0.0, std=1.0, voxel_size=VOXEL, patch_size=16,
               trained_on=["check"])
    return config, model


def run(venv: Path, work: Path) -> dict:
    python = ensure_venv(venv)
    with dask_client(n_workers=2):
        config, model = build_project(work)
        argv = ["copick-predict", str(config), "-m", str(model), "--voxel-size", "10", "--even-type", "wbp-even",
                "--odd-type", "wbp-odd", "--out-type", "denoised"]
        print("tomocare", " ".join(argv), flush=True)
        if main(argv) != 0:
            raise SystemExit(1)
    out = work / "overlay" / "ExperimentRuns" / "TS_001" / "VoxelSpacing10.000" / "denoised.zarr"
    expected, written = work / "expected.npy", work / "written.npy"
    np.save(expected, np.asarray(open_volume(out).array[...]))
    answer = subprocess.run([str(python), "-c", COPICK_SCRIPT, str(config), str(expected), str(written)],
                            capture_output=True, text=True)
    if answer.returncode:
        raise SystemExit(f"copick failed:\n{answer.stderr}")
    report = json.loads(answer.stdout.strip().splitlines()[-1])
    back = open_volume(out.with_name("copick-written.zarr"))
    report["tomocare_reads_copick_written"] = {
        "shape": list(back.shape), "voxel_size": list(back.voxel_size),
        "max_abs_difference": float(np.abs(np.asarray(back.array[...]) - np.load(written)).max()),
    }
    return report


def main_() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", type=Path, default=Path("/tmp/copick-venv"))
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/tomocare-copick"))
    args = parser.parse_args()
    report = run(args.venv, args.workdir)
    print(json.dumps(report))
    ok = (report["tomo_types"] == ["copick-written", "denoised", "wbp-even", "wbp-odd"]
          and report["max_abs_difference_to_tomocare"] == 0.0
          and report["level_shapes"] == [list(SHAPE), [s // 2 for s in SHAPE], [s // 4 for s in SHAPE]]
          and report["multiscales_version"] == "0.4"
          and report["tomocare_reads_copick_written"]["voxel_size"] == [VOXEL] * 3
          and report["tomocare_reads_copick_written"]["max_abs_difference"] < 1e-5)
    print("copick check:", "OK" if ok else "FAILED")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main_()
