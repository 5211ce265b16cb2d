"""Options shared by several commands, help texts showing the settings' defaults, and the dask client."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from pydantic import BaseModel

from tomocare.config import PredictSettings, TrainConfig

Scheduler = Annotated[
    Optional[str],
    typer.Option("--scheduler", help="Address (tcp://HOST:8786, tls://HOST:8786) or scheduler-file of a running "
                 "dask cluster (default: start a local one). tls:// takes the certificates from dask's config: "
                 "distributed.comm.tls.ca-file, .client.cert and .client.key, or the environment variables "
                 "DASK_DISTRIBUTED__COMM__TLS__CA_FILE, ..._CLIENT__CERT and ..._CLIENT__KEY."),
]
Workers = Annotated[
    Optional[int],
    typer.Option("--workers", help="Worker processes of the local cluster (default: one per core)."),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace outputs that exist.")]
SettingsFile = Annotated[
    Optional[Path],
    typer.Option("--config", help="Settings file, TOML or JSON, with [train], [predict] and [denoise] sections; "
                 "a command reads the sections it uses (see 'tomocare config --example')."),
]
VoxelSize = Annotated[float, typer.Option(help="Voxel size in Å.")]
Seed = Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")]


def with_default(text: str, model: type[BaseModel], field: str) -> str:
    """The help of an option that overrides a setting: ``text`` and the default of ``model``'s ``field``,
    e.g. ``with_default("Patch edge in voxels", TrainConfig, "patch_size")`` is ``"Patch edge in voxels [64]."``."""
    default = model.model_fields[field].get_default(call_default_factory=True)
    shown = ("yes" if default else "no") if isinstance(default, bool) else default
    return f"{text} [{shown}]."


Device = Annotated[
    Optional[str],
    typer.Option("--device", help=with_default("Device training runs on: auto (CUDA when present), cpu, cuda or "
                                               "cuda:N; the training plan line names it", TrainConfig, "device")),
]


ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Model directory written by 'tomocare train', or 'general' (shipped).")
]

Init = Annotated[
    Optional[str],
    typer.Option("--init", help="Fine-tune this model (a directory, or 'general') instead of starting from scratch."),
]

# Block-wise output (predict, baseline, denoise): None leaves the value to the settings (tomocare.config).
Block = Annotated[
    Optional[int],
    typer.Option("--block", help="Output block edge per task (a multiple of --chunks; default --chunks)."),
]
Chunks = Annotated[
    Optional[int],
    typer.Option("--chunks", help=with_default("Output chunk edge in voxels", PredictSettings, "chunks")),
]
Dtype = Annotated[
    Optional[str],
    typer.Option("--dtype", help=with_default("Output dtype: float32 or float16", PredictSettings, "dtype")),
]

Format = Annotated[
    Optional[str],
    typer.Option("--format", help=with_default(
        "Output format: ome-zarr-0.5 (zarr v3), ome-zarr-0.4 (zarr v2 as the CZ cryoET data portal and copick; "
        "256^3 chunks unless --chunks) or mrc (through a temporary zarr, then exported)", PredictSettings, "format")),
]


def open_client(scheduler: str | None, workers: int | None):
    """The dask client of ``--scheduler`` (or of a local cluster of ``--workers`` processes); a context manager."""
    from tomocare.cluster import dask_client

    return dask_client(scheduler, n_workers=workers)
