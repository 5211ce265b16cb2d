"""Degradations and supervised pairs of the simulator: SNR, box-locality, seeds, files, CLI, on the fly."""

from __future__ import annotations

import json
import pickle

import dask
import numpy as np
import pytest

from tomocare.cli import main
from tomocare.io.mrc import open_mrc
from tomocare.simulate.degrade import poisson_pair
from tomocare.simulate.pairs import PairSpec, SimulatedVolume, pair_spec, prepare, simulate_pairs, simulated_pairs

SHAPE = (32, 48, 48)


def read_mrc(path) -> np.ndarray:
    return np.asarray(open_mrc(path)[(slice(None),) * 3])


def _spec(noise: str, **kw) -> PairSpec:
    return pair_spec(shape=SHAPE, noise=noise, snr=kw.pop("snr", 0.1), voxel_size=10, tilt_range=60, **kw)


@pytest.mark.parametrize("noise", ["gaussian", "wbp", "salt-and-pepper"])
def test_snr_box_locality_and_seeds(noise):
    inp, tgt = simulated_pairs(_spec(noise, snr=0.2), 1, seed=3)[0]
    whole, clean = inp[:, :, :], tgt[:, :, :]
    assert clean.var() / (whole - clean).var() == pytest.approx(0.2, rel=0.1)
    region = (slice(5, 29), slice(7, 40), slice(0, 31))
    np.testing.assert_allclose(inp[region], whole[region], atol=1e-5)
    np.testing.assert_allclose(tgt[region], clean[region], atol=1e-5)
    again, other = simulated_pairs(_spec(noise, snr=0.2), 1, seed=3)[0][0], simulated_pairs(_spec(noise), 1, 4)[0][0]
    assert np.array_equal(again[region], inp[region]) and not np.allclose(other[region], inp[region])


def test_salt_and_pepper_fraction_and_levels():
    inp, tgt = simulated_pairs(_spec("salt-and-pepper", fraction=0.05), 1, seed=1)[0]
    a, b = inp[:, :, :], tgt[:, :, :]
    changed = a != b
    assert changed.mean() == pytest.approx(0.05, abs=0.005)
    model = prepare(inp.params).model
    assert set(np.unique(a[changed])) <= {np.float32(model.low), np.float32(model.high)}  # type: ignore[attr-defined]


def test_ranges_are_drawn_per_pair_from_the_seed():
    spec = PairSpec(shape=SHAPE)  # the general spec
    params = [spec.draw(0, i) for i in range(20)]
    assert params == [spec.draw(0, i) for i in range(20)]
    assert all(4 <= p.voxel_size <= 20 and 0.02 <= p.snr <= 0.3 and 40 <= p.tilt_range <= 70 for p in params)
    assert {p.noise for p in params} == {"gaussian", "wbp", "salt-and-pepper"}


def test_poisson_pair_is_finite_at_the_requested_snr():
    pair = poisson_pair(SHAPE, seed=2, snr=0.1, tilt_range=50, voxel_size=10)
    assert pair.input.shape == pair.clean.shape == pair.phantom.shape == SHAPE
    assert np.isfinite(pair.input).all() and pair.dose > 0
    assert pair.snr == pytest.approx(0.1, rel=0.15)
    with pytest.raises(Exception, match="not box-local"):
        simulated_pairs(_spec("poisson"), 1)


def test_written_pairs_match_the_on_the_fly_volumes(tmp_path):
    spec = pair_spec(shape=SHAPE, noise=("wbp", "poisson"), target="phantom")
    with dask.config.set(scheduler="synchronous"):
        written = simulate_pairs(tmp_path, spec, n=3, seed=7, chunks=16)
    assert sorted(p.name for p in tmp_path.iterdir())[-1] == "pairs.csv"
    for entry in written:
        data = {k: read_mrc(entry["files"][k]) for k in ("input", "target")}
        assert all(v.shape == SHAPE and np.isfinite(v).all() for v in data.values())
    local = [e for e in written if e["noise"] == "wbp"]
    assert local and any(e["noise"] == "poisson" for e in written)  # seed 7 draws both
    index = int(local[0]["name"][-3:])
    params = spec.draw(7, index)  # simulated_pairs refuses a spec with poisson: the volumes themselves
    inp, tgt = pickle.loads(pickle.dumps((SimulatedVolume(params, "input"), SimulatedVolume(params, "target"))))
    region = (slice(3, 19), slice(20, 44), slice(9, 41))
    np.testing.assert_allclose(inp[region], read_mrc(local[0]["files"]["input"])[region], atol=1e-5)
    np.testing.assert_allclose(tgt[region], read_mrc(local[0]["files"]["target"])[region], atol=1e-5)
    with pytest.raises(Exception, match="output exists"):
        simulate_pairs(tmp_path, spec, n=1, seed=7)


def test_simulate_pairs_command(tmp_path, capsys):
    out = tmp_path / "d"
    args = ["simulate-pairs", str(out), "--n", "1", "--shape", *map(str, SHAPE), "--noise", "gaussian",
            "--snr", "0.05:0.2", "--voxel-size", "8", "--tilt-range", "45:60", "--workers", "1"]
    assert main(args) == 0
    assert capsys.readouterr().out.startswith("pair_000: gaussian, snr ")
    assert sorted(p.name for p in out.iterdir()) == ["pair_000_input.mrc", "pair_000_particles.csv",
                                                     "pair_000_target.mrc", "pairs.csv"]
    for bad, expected in [(["--snr", "0.3:0.1"], "--snr: 0.3:0.1"), (["--noise", "speckle"], "noise 'speckle'"),
                          (["--tilt-range", "95"], "--tilt-range: must lie in (0, 90]"), ([], "output exists")]:
        assert main([*args, *bad]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and expected in err[0], err


def test_train_on_pairs_simulated_on_the_fly(tmp_path, client, capsys):
    out = tmp_path / "m"
    args = ["train", "--simulate", "2", "--shape", *map(str, SHAPE), "--noise", "wbp", "--noise", "gaussian",
            "--voxel-size", "12", "--patch-size", "16", "--n-patches", "8", "--batch-size", "4", "--max-steps", "2",
            "--depth", "2", "--channels", "4", "-o", str(out), "--scheduler", client.scheduler.address]
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads((out / "train_config.json").read_text())
    assert summary["config"]["mode"] == "supervised" and summary["voxel_size"] == 12
    assert "simulated pair 0" in summary["trained_on"][0] and (out / "weights.safetensors").exists()
    assert main(["train", "--snr", "0.1", "-o", str(tmp_path / "x")]) == 2
    assert "go with --simulate" in capsys.readouterr().err
