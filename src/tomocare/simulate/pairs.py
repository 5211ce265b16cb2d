"""Supervised pairs: a degraded input and its target, simulated, written or rendered on the fly.

A :class:`PairSpec` gives each parameter as a value or a range; :meth:`PairSpec.draw` makes the
concrete :class:`PairParams` of pair ``index`` from the seed. ``PairSpec()`` is the diverse
"general" spec: voxel size 4-20 Å, SNR 0.02-0.3 (log-uniform), tilt range 40-70° and one of
the box-local noise models per pair. The input is the clean volume (phantom after the missing
wedge) degraded (:mod:`.degrade`); the target is that clean volume (``target="clean"``:
denoising) or the phantom before the wedge (``"phantom"``: wedge and noise restoration).

:func:`simulate_pairs` writes pairs as MRC files; :func:`simulated_pairs` gives them as picklable
lazy arrays (:class:`SimulatedVolume`) that render any box where it is read (a dask worker).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import dask
import dask.array as da
import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, field_validator

from tomocare.config import DEFAULT_CHUNK
from tomocare.errors import TomocareError
from tomocare.io.atomic import check_output, check_output_dir, write_atomic
from tomocare.io.mrc import write_mrc
from tomocare.simulate.dataset import tomogram_seed, write_particles
from tomocare.simulate.degrade import (
    LOCAL_NOISES,
    Degradation,
    check_noise,
    degradation,
    degrade_lazy,
    poisson_pair,
    volume_mean,
)
from tomocare.simulate.fourier import wedge_halo
from tomocare.simulate.objects import Phantom, make_phantom
from tomocare.simulate.render import clean_block, render
from tomocare.simulate.tomogram import SIGNAL_HALO, estimate_signal_variance, simulate_tomogram, validate_arguments

_DRAW = 7  # random stream of the parameter draws


def _as_range(value) -> tuple[float, float]:
    if isinstance(value, str):
        parts = value.split(":")
        try:
            value = tuple(float(p) for p in parts)
        except ValueError:
            raise ValueError(f"{value!r} is not a number or a range LOW:HIGH") from None
    if isinstance(value, (int, float)):
        return (float(value), float(value))
    value = tuple(value)
    if len(value) == 1:
        value = value * 2
    if len(value) != 2 or not all(math.isfinite(v) for v in value) or value[0] > value[1]:
        shown = ":".join(f"{v:g}" for v in value) if all(isinstance(v, (int, float)) for v in value) else value
        raise ValueError(f"{shown}: give a number or a range LOW:HIGH with LOW <= HIGH")
    return (float(value[0]), float(value[1]))


Range = Annotated[tuple[float, float], BeforeValidator(_as_range)]


@dataclass(frozen=True)
class PairParams:
    """One pair's concrete parameters (hashable: workers cache what they derive from it)."""

    seed: int
    shape: tuple[int, int, int]
    voxel_size: float
    snr: float
    tilt_range: float
    noise: str
    target: str
    fraction: float


class PairSpec(BaseModel):
    """Parameters of simulated pairs, each a value or a (low, high) range drawn per pair (also "LOW:HIGH")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shape: tuple[int, int, int] = (96, 192, 192)
    voxel_size: Range = (4.0, 20.0)  # Å, uniform
    snr: Range = (0.02, 0.3)  # var(clean) / var(noise), log-uniform
    tilt_range: Range = (40.0, 70.0)  # degrees, uniform
    noise: tuple[str, ...] = LOCAL_NOISES  # one drawn per pair
    target: Literal["clean", "phantom"] = "clean"
    fraction: float = 0.1  # of voxels, salt-and-pepper

    @field_validator("voxel_size", "snr")
    @classmethod
    def _positive(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0:
            raise ValueError(f"must be positive, got {v[0]:g}")
        return v

    @field_validator("tilt_range")
    @classmethod
    def _angle(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] <= 0 or v[1] > 90:
            raise ValueError(f"must lie in (0, 90] degrees, got {v[0]:g}" + (f":{v[1]:g}" if v[1] != v[0] else ""))
        return v

    @field_validator("noise", mode="before")
    @classmethod
    def _noise(cls, v) -> tuple[str, ...]:
        v = (v,) if isinstance(v, str) else tuple(v)
        if not v:
            raise ValueError("give at least one noise model")
        for name in v:
            try:
                check_noise(name)
            except TomocareError as err:
                raise ValueError(str(err)) from None
        return v

    @field_validator("fraction")
    @classmethod
    def _fraction(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError(f"must be in (0, 1), got {v!r}")
        return v

    def draw(self, seed: int, index: int) -> PairParams:
        """Pair ``index``'s parameters, drawn from ``seed`` (its volume seed: ``tomogram_seed(seed, index)``)."""
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, _DRAW)))
        voxel_size, tilt_range = float(rng.uniform(*self.voxel_size)), float(rng.uniform(*self.tilt_range))
        snr = float(np.exp(rng.uniform(*np.log(self.snr)))) if self.snr[1] > self.snr[0] else self.snr[0]
        return PairParams(seed=tomogram_seed(seed, index), shape=self.shape, voxel_size=voxel_size, snr=snr,
                          tilt_range=tilt_range, noise=str(self.noise[rng.integers(len(self.noise))]),
                          target=self.target, fraction=self.fraction)


def pair_spec(**fields) -> PairSpec:
    """A :class:`PairSpec` of the ``fields`` given (None: the default); a bad value is one TomocareError line."""
    try:
        return PairSpec(**{k: v for k, v in fields.items() if v is not None})
    except ValidationError as err:
        first = err.errors()[0]
        where = "-".join(str(p) for p in first["loc"][:1]).replace("_", "-")
        raise TomocareError(f"--{where}: {first['msg'].removeprefix('Value error, ')}") from None


# ---------------------------------------------------------------- written pairs


def simulate_pairs(
    out_dir: str | os.PathLike, spec: PairSpec | None = None, *, n: int = 2, seed: int = 0,
    chunks: int = DEFAULT_CHUNK, overwrite: bool = False, **fields,
) -> list[dict]:
    """Write ``pair_NNN_input.mrc``, ``pair_NNN_target.mrc``, ``pair_NNN_particles.csv`` and ``pairs.csv`` (the
    parameters of each pair) into ``out_dir``; ``spec`` (or its ``fields``) as :class:`PairSpec`.

    Box-local noise is computed block by block on the current dask scheduler while written; poisson pairs
    are made whole in memory (:func:`~tomocare.simulate.degrade.poisson_pair`), and their "clean" target is
    the reconstruction of the noise-free counts. Existing files are refused (all checked before anything is
    written) unless ``overwrite``. Returns one dict per pair: name, its parameters, noise level and paths.
    """
    spec = spec or pair_spec(**fields)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TomocareError(f"--n must be a positive integer, got {n!r}")
    validate_arguments(spec.shape, seed, 1.0, 60.0, 10.0, chunks)
    out = Path(out_dir)
    check_output_dir(out)
    names = [f"pair_{i:03d}" for i in range(n)]
    kinds = ("input", "target")
    paths = [{**{k: out / f"{name}_{k}.mrc" for k in kinds}, "particles": out / f"{name}_particles.csv"}
             for name in names]
    for path in [p for entry in paths for p in entry.values()] + [out / "pairs.csv"]:
        check_output(path, overwrite=overwrite)
    written = []
    for i, (name, entry) in enumerate(zip(names, paths)):
        params = spec.draw(seed, i)
        volumes, level, phantom = _pair_volumes(params, chunks)
        for kind, volume in zip(kinds, volumes):
            write_mrc(volume, entry[kind], voxel_size=params.voxel_size, overwrite=overwrite)
        write_particles(phantom.particle_table(), entry["particles"], overwrite=overwrite)
        written.append({"name": name, **asdict(params), **level, "files": {k: str(p) for k, p in entry.items()}})
    table = io.StringIO()
    columns = ["name", "seed", "noise", "snr", "voxel_size", "tilt_range", "target", "noise_std", "dose",
               "measured_snr"]
    writer = csv.DictWriter(table, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(written)
    write_atomic(out / "pairs.csv", table.getvalue())
    return written


def _pair_volumes(params: PairParams, chunks: int) -> tuple[tuple[da.Array, da.Array], dict, Phantom]:
    """(input, target) lazy arrays of a pair, its noise level (noise_std or dose) and its phantom."""
    phantom = make_phantom(params.shape, params.voxel_size, params.seed)
    if params.noise == "poisson":
        pair = poisson_pair(params.shape, seed=params.seed, snr=params.snr, tilt_range=params.tilt_range,
                            voxel_size=params.voxel_size)
        level = {"dose": pair.dose, "measured_snr": pair.snr}
        arrays = pair.input, pair.clean if params.target == "clean" else pair.phantom
        return (da.from_array(arrays[0], chunks), da.from_array(arrays[1], chunks)), level, phantom
    sim = simulate_tomogram(params.shape, seed=params.seed, snr=params.snr, tilt_range=params.tilt_range,
                            voxel_size=params.voxel_size, chunks=chunks)
    model = degradation(params.noise, seed=params.seed, snr=params.snr, signal_var=sim.noise_std**2 * params.snr,
                        mean=volume_mean(phantom), tilt_range=params.tilt_range, fraction=params.fraction)
    wanted = sim.clean if params.target == "clean" else sim.phantom
    assert wanted is not None
    return (degrade_lazy(sim.clean, model), wanted), {"noise_std": sim.noise_std}, phantom


# ---------------------------------------------------------------- on the fly


@dataclass(frozen=True)
class Prepared:
    """What a worker derives once per pair: the phantom, the degradation and the input's mean and variance."""

    phantom: Phantom
    model: Degradation
    mean: float
    input_var: float


@functools.lru_cache(maxsize=8)
def prepare(params: PairParams) -> Prepared:
    """The phantom, degradation and input statistics of a pair (cached per process)."""
    phantom = make_phantom(params.shape, params.voxel_size, params.seed)
    signal_var = estimate_signal_variance(phantom, params.tilt_range, params.seed)
    mean = volume_mean(phantom)
    model = degradation(params.noise, seed=params.seed, snr=params.snr, signal_var=signal_var, mean=mean,
                        tilt_range=params.tilt_range, fraction=params.fraction)
    return Prepared(phantom, model, mean, signal_var * (1 + 1 / params.snr))


@functools.lru_cache(maxsize=4)
def _clean_box(params: PairParams, origin: tuple[int, ...], size: tuple[int, ...]) -> np.ndarray:
    """The clean box (cached: a patch's input and target share it)."""
    phantom = prepare(params).phantom
    margin = 2 * np.array(wedge_halo(SIGNAL_HALO))
    own = phantom.select(np.array(origin) - margin, np.array(size) + 2 * margin)
    out = clean_block(own, origin, size, SIGNAL_HALO, params.tilt_range)
    out.flags.writeable = False
    return out


@dataclass
class SimulatedVolume:
    """The ``role`` ("input" or "target") of a simulated pair as a picklable lazy array: any box is rendered
    when it is read, equal (to float rounding) to the same region of the pair :func:`simulate_pairs` writes."""

    params: PairParams
    role: Literal["input", "target"]
    shape: tuple[int, ...] = field(init=False)
    dtype: Any = field(init=False, default=np.dtype(np.float32))
    ndim: int = field(init=False, default=3)

    def __post_init__(self) -> None:
        self.shape = self.params.shape
        if self.params.noise == "poisson":
            raise TomocareError("poisson noise is not box-local: write pairs with 'tomocare simulate-pairs' and "
                                "train on them with --input/--target")

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        bounds = [k.indices(n) for k, n in zip(key, self.shape)]
        if any(not isinstance(k, slice) for k in key) or any(step != 1 for _, _, step in bounds):
            raise IndexError("SimulatedVolume takes slices with step 1")
        origin = tuple(lo for lo, _, _ in bounds)
        size = tuple(max(hi - lo, 0) for lo, hi, _ in bounds)
        if 0 in size:
            return np.zeros(size, np.float32)
        if self.role == "target" and self.params.target == "phantom":
            return render(prepare(self.params).phantom, origin, size)
        clean = _clean_box(self.params, origin, size)
        return prepare(self.params).model.apply(clean, origin) if self.role == "input" else clean.copy()


def simulated_pairs(spec: PairSpec, n: int, seed: int = 0) -> list[tuple[SimulatedVolume, SimulatedVolume]]:
    """``n`` (input, target) pairs of ``spec`` as lazy arrays rendered on the fly (box-local noise only)."""
    if "poisson" in spec.noise:
        raise TomocareError("poisson noise is not box-local: write pairs with 'tomocare simulate-pairs' and train "
                            "on them with --input/--target, or leave poisson out of --noise")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise TomocareError(f"--simulate must be a positive number of pairs, got {n!r}")
    params = [spec.draw(seed, i) for i in range(n)]
    return [(SimulatedVolume(p, "input"), SimulatedVolume(p, "target")) for p in params]


def input_statistics(pairs: list[tuple[SimulatedVolume, SimulatedVolume]]) -> tuple[float, float]:
    """Mean and standard deviation over the inputs of ``pairs`` (from each pair's measured signal variance and
    its SNR), computed on the current dask scheduler, one task per pair."""
    moments = dask.compute(*[dask.delayed(_moments)(inp.params) for inp, _ in pairs])
    means = np.array([m for m, _ in moments])
    second = np.mean([v + m * m for m, v in moments])
    return float(means.mean()), float(math.sqrt(max(second - means.mean() ** 2, 1e-30)))


def _moments(params: PairParams) -> tuple[float, float]:
    prepared = prepare(params)
    return prepared.mean, prepared.input_var
