"""The end-to-end job over a dataset: discover → train one model → predict each tomogram → report.

Resumable: ``OUT_DIR/state.json`` records each finished tomogram (its outputs are committed
atomically before it is recorded) and the trained model; a rerun skips what is done, resumes an
interrupted training from its checkpoint and an interrupted prediction from its finished blocks.
A tomogram that fails (corrupt file, mismatched halves) is reported and skipped; the others run.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distributed import Client

from tomocare import __version__
from tomocare.cluster import release_memory
from tomocare.config import Settings
from tomocare.errors import TomocareError
from tomocare.io import relion
from tomocare.io.atomic import refuse_inputs, write_atomic
from tomocare.io.discover import Discovery, VolumePair, check_voxel_sizes, discover_pairs, open_pair
from tomocare.io.stats import normalisation

if TYPE_CHECKING:
    from tomocare.predict.engine import TaskMemory

log = logging.getLogger(__name__)
STATE = "state.json"


@dataclass
class DenoiseOptions:
    model: Path | None = None  # reuse this model instead of training
    settings: Settings = field(default_factory=Settings)  # [train], [predict], [denoise]
    retrain: bool = False  # train anew even if a finished model exists (its tomograms are redone)


class State:
    """The run's record on disk, rewritten atomically after every change."""

    def __init__(self, path: Path):
        self.path = path
        self.data: dict[str, Any] = (json.loads(path.read_text()) if path.exists()
                                     else {"version": __version__, "tomograms": {}})

    def tomogram(self, name: str) -> dict:
        return self.data["tomograms"].get(name, {})

    def set(self, name: str, **entry) -> None:
        self.data["tomograms"][name] = entry
        self.save()

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=2) + "\n")


def _open_all(found: Discovery, dataset: Path, state: State) -> tuple[list[VolumePair], list[dict]]:
    if found.unmatched:
        log.warning("%s: %s", dataset, found.describe_unmatched())
    good, failed = [], []
    for pair in found.pairs:
        try:
            good.append(open_pair(pair))
        except TomocareError as err:
            failed.append({"name": pair.name, "status": "failed", "error": str(err)})
            state.set(pair.name, status="failed", error=str(err))
    return good, failed


def _settings_changed(model_dir: Path, config) -> list[str]:
    """Training settings given now that differ from those the existing model was trained with."""
    path = model_dir / "train_config.json"
    try:
        saved = json.loads(path.read_text())["config"]
    except (OSError, ValueError, KeyError):
        return []
    machine = {"device", "threads", "prefetch", "progress"}  # how, not what, is trained
    return sorted(k for k in config.model_fields_set - machine if saved.get(k) != getattr(config, k))


def _train_model(pairs: list[VolumePair], model_dir: Path, options: DenoiseOptions, voxel_size: float,
                 client: Client) -> Path:
    from tomocare.train.loop import train

    config = options.settings.train
    changed = _settings_changed(model_dir, config) if model_dir.exists() else []
    if changed and not options.retrain:
        raise TomocareError(
            f"{model_dir}: trained with other settings ({', '.join(changed)}); rerun with --retrain to train "
            "a new model (the denoised tomograms are then redone), or leave the settings as they were"
        )
    finished = (model_dir / "model.json").exists() and not (model_dir / "checkpoint.pt").exists()
    if changed or (options.retrain and finished):  # an interrupted retraining resumes instead
        shutil.rmtree(model_dir, ignore_errors=True)
    elif finished:
        return model_dir  # finished in an earlier run
    train_on = options.settings.denoise.train_on
    subset = pairs[:train_on] if train_on else pairs
    mean, std = normalisation(v for p in subset for v in (p.even, p.odd)) or (None, None)
    resume = (model_dir / "checkpoint.pt").exists()
    train(
        [(p.even.array, p.odd.array) for p in subset], model_dir, config=options.settings.train, client=client,
        mean=mean, std=std, voxel_size=voxel_size,
        names=[p.name for p in subset], resume=resume,
    )
    (model_dir / "checkpoint.pt").unlink(missing_ok=True)  # marks training finished
    release_memory(client)
    return model_dir


def denoise_dataset(dataset: str | os.PathLike, out_dir: str | os.PathLike, *, options: DenoiseOptions,
                    client: Client) -> list[dict]:
    """Denoise every tomogram of ``dataset`` into ``out_dir``; return one summary row per tomogram."""
    from tomocare.evaluate.report import write_summary
    from tomocare.predict.engine import task_memory

    dataset, out_dir = Path(dataset), Path(out_dir)
    found = discover_pairs(dataset)
    refuse_inputs(out_dir, [p for pair in found.pairs for p in (pair.even, pair.odd)])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report").mkdir(exist_ok=True)
    state = State(out_dir / STATE)
    pairs, rows = _open_all(found, dataset, state)
    if not pairs:
        raise TomocareError(f"{dataset}: no readable even/odd pairs ({'; '.join(r['error'] for r in rows)})")
    found.check_voxel_sizes(pairs)
    settings = options.settings
    voxel_size = check_voxel_sizes(pairs, allow_mixed=settings.denoise.allow_mixed)
    run_config = {"version": __version__, "dataset": str(dataset),
                  "model": str(options.model) if options.model else None, **settings.model_dump()}
    write_atomic(out_dir / "config.json", json.dumps(run_config, indent=2) + "\n")
    memory = task_memory(client) if settings.predict.block is None else None  # blocks as large as it allows
    shared_model = None
    if options.model is None and not settings.denoise.per_tomogram:
        shared_model = _train_model(pairs, out_dir / "model", options, voxel_size, client)
        _copy_loss(shared_model, out_dir / "report" / "training_loss.png")

    for pair in pairs:
        done = state.tomogram(pair.name)
        model_dir = options.model or shared_model
        if is_done(done, pair.name, out_dir, model_dir, settings):
            log.info("%s: done in an earlier run, skipped", pair.name)
            rows.append(done | {"name": pair.name})
            continue
        entry = denoise_pair(pair, out_dir, model_dir, options, client, memory=memory, state=state,
                             finished=sum(1 for r in rows if r.get("status") == "done"))
        rows.append(entry | {"name": pair.name})

    if relion.is_star(dataset):  # the tomogram set again, now naming the denoised tomograms
        done = {r["name"]: out_dir / f"{r['name']}_denoised.mrc" for r in rows if r.get("status") == "done"}
        if not (settings.denoise.mrc or settings.predict.format == "mrc"):
            log.warning("%s: no MRC outputs (mrc = false), so no tomograms.star for RELION", out_dir)
        else:
            log.info("RELION tomogram set: %s", relion.write_denoised(dataset, out_dir / "tomograms.star", done))

    write_summary(rows, out_dir / "report", settings=run_config)
    return rows


def output_path(name: str, out_dir: Path, settings: Settings) -> tuple[Path, Path]:
    """(the output a tomogram's entry names, the store its blocks are written to): ``NAME.zarr`` for
    OME-Zarr, or ``NAME_denoised.mrc`` through a hidden zarr for ``--format mrc``."""
    from tomocare.predict.engine import block_store

    mrc_out = out_dir / f"{name}_denoised.mrc"
    if settings.predict.format == "mrc":
        return mrc_out, block_store(mrc_out, "mrc")
    return out_dir / f"{name}.zarr", out_dir / f"{name}.zarr"


def is_done(done: dict, name: str, out_dir: Path, model_dir: Path | None, settings: Settings) -> bool:
    """Whether a state entry says the tomogram was denoised, by this model and these prediction
    settings, and its output is there."""
    output, _ = output_path(name, out_dir, settings)
    predicted_with = settings.predict.model_dump()
    predicted_before = {"format": "ome-zarr-0.5", **done.get("predict", predicted_with)}  # runs before --format
    return (done.get("status") == "done" and output.exists() and done.get("model") in (None, _model_id(model_dir))
            and predicted_before == predicted_with)


def denoise_pair(pair: VolumePair, out_dir: Path, model_dir: Path | None, options: DenoiseOptions, client: Client,
                 *, memory: TaskMemory | None, state: State, finished: int) -> dict:
    """Predict one tomogram (training its own model first with ``model_dir`` None, --per-tomogram),
    write its report figures and record it in ``state``; return its entry. A failure of this tomogram
    is its entry; a full disk raises (``finished``: tomograms done before, for the message)."""
    from tomocare.evaluate.report import tomogram_report
    from tomocare.io.atomic import remove
    from tomocare.io.convert import export_mrc
    from tomocare.model import Model
    from tomocare.predict.engine import plan_run, run_blocks
    from tomocare.predict.network import NetworkOperator

    settings = options.settings
    output, zarr_out = output_path(pair.name, out_dir, settings)
    mrc_out = out_dir / f"{pair.name}_denoised.mrc"
    as_mrc = settings.predict.format == "mrc"
    try:
        if model_dir is None:  # --per-tomogram
            model_dir = _train_model([pair], out_dir / "models" / pair.name, options, pair.even.voxel_size[-1],
                                     client)
            _copy_loss(model_dir, out_dir / "report" / f"{pair.name}_training_loss.png")
        operator = NetworkOperator.from_settings(Model.read(model_dir), settings.predict)
        planned = plan_run(operator, [pair.even.path, pair.odd.path], zarr_out, settings.predict, memory=memory)
        run_blocks(planned, client, overwrite=True, progress=settings.train.progress)
        if settings.denoise.mrc or as_mrc:
            export_mrc(zarr_out, mrc_out, overwrite=True)
        if as_mrc:
            remove(zarr_out)
        entry = {"status": "done", "output": str(output), "model": _model_id(model_dir),
                 "predict": settings.predict.model_dump(),
                 **tomogram_report(pair, output, model_dir, out_dir / "report")}
    except (TomocareError, OSError, ValueError) as err:
        log.debug("%s", traceback.format_exc())
        entry = {"status": "failed", "error": " ".join(str(err).split())}
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            state.set(pair.name, **entry)
            raise TomocareError(
                f"{out_dir}: no space left on device while writing {pair.name}; the {finished} tomograms "
                "finished before are intact — free space and rerun the same command to resume"
            ) from None
    state.set(pair.name, **entry)
    return entry


def _model_id(model_dir: Path | None) -> str | None:
    """The checksum of a model's weights (from model.json): which model denoised a tomogram."""
    if model_dir is None:
        return None
    from tomocare.model import Model

    try:
        return Model.read(model_dir).weights_sha256
    except TomocareError:
        return None


def _copy_loss(model_dir: Path, target: Path) -> None:
    if (model_dir / "loss.png").exists():
        shutil.copyfile(model_dir / "loss.png", target)
