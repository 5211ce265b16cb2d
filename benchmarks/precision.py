"""What bf16 prediction costs in quality: PSNR of the same trained models predicting in fp32 and in
the precision ``auto`` chooses on this machine (bf16 on CPUs with AVX-512 BF16 or AMX, and CUDA).

    python benchmarks/precision.py [--workdir /tmp/tomocare-bench-quality]

Uses what ``benchmarks/quality.py`` left in its work directory: per held-out seed and SNR, the
simulated halves, the clean volume and the model ``tomocare denoise`` trained with its defaults.
Each model predicts the even and odd halves (averaged, as the engine does) on the whole volume in
memory (``Model.predict_whole``, which tiled prediction equals), once per precision; PSNR against
the clean volume after the least-squares scale-and-offset fit the quality benchmark uses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from _measure import save

from tomocare.evaluate.reference import compare_to_reference
from tomocare.io.volume import open_volume
from tomocare.model import Model
from tomocare.nn.device import resolve_precision

QUALITY_WORKDIR = Path("/tmp/tomocare-bench-quality")


def precision_gap(workdir: Path = QUALITY_WORKDIR) -> list[dict]:
    """Per quality run with a trained model: PSNR in fp32 and in the automatic precision."""
    chosen = resolve_precision("auto", torch.device("cpu"))
    rows = []
    for run in sorted(workdir.glob("seed*_snr*")):
        model_dir, data = run / "denoised" / "model", run / "data"
        if not (model_dir / "model.json").exists() or not (data / "tomo_000_clean.mrc").exists():
            continue
        halves, clean = [_load(data / f"tomo_000_{h}.mrc") for h in ("even", "odd")], _load(data / "tomo_000_clean.mrc")
        model = Model.read(model_dir)
        net = model.network()
        psnr = {p: compare_to_reference(model.predict_whole(halves, net=net, precision=p), clean).whole["psnr_db"]
                for p in ("fp32", chosen)}
        rows.append({"run": run.name, "chosen": chosen, "fp32_psnr_db": psnr["fp32"],
                     "chosen_psnr_db": psnr[chosen], "difference_db": psnr[chosen] - psnr["fp32"]})
    return rows


def _load(path: Path) -> np.ndarray:
    return np.asarray(open_volume(path).array[...], dtype=np.float32)


def report(rows: list[dict]) -> str:
    if not rows:
        return "no trained models found: run benchmarks/quality.py first"
    lines = [f"{r['run']}: fp32 {r['fp32_psnr_db']:.3f} dB, {r['chosen']} {r['chosen_psnr_db']:.3f} dB, "
             f"difference {r['difference_db']:+.3f} dB" for r in rows]
    diffs = [r["difference_db"] for r in rows]
    lines.append(f"{rows[0]['chosen']} - fp32 over {len(rows)} models: median {np.median(diffs):+.3f} dB, "
                 f"largest |difference| {max(abs(d) for d in diffs):.3f} dB")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=QUALITY_WORKDIR, help="benchmarks/quality.py's --workdir")
    args = parser.parse_args()
    rows = precision_gap(args.workdir)
    print(report(rows))
    save({"rows": rows}, "precision")


if __name__ == "__main__":
    main()
