"""Even/odd pairs found by each naming convention; unmatched halves reported."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tomocare import TomocareError
from tomocare.io.discover import check_voxel_sizes, discover_pairs


def _touch(directory, *names):
    for name in names:
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_conventions(tmp_path):
    _touch(
        tmp_path,
        "TS_01_even.mrc", "TS_01_odd.mrc",          # NAME_even / NAME_odd
        "TS_02_EVN.mrc", "TS_02_ODD.mrc",           # AreTomo3
        "rec_TS_03_half1.rec", "rec_TS_03_half2.rec",  # RELION 5
        "TS_04.even.map", "TS_04.odd.map",
        "even/TS_05.mrc", "odd/TS_05.mrc",          # Warp folders
        "TS_01_clean.mrc", "notes.txt",             # ignored: not halves
    )
    found = discover_pairs(tmp_path)
    got = {p.name: (p.even.name, p.odd.name) for p in found.pairs}
    assert got == {
        "TS_01": ("TS_01_even.mrc", "TS_01_odd.mrc"),
        "TS_02": ("TS_02_EVN.mrc", "TS_02_ODD.mrc"),
        "rec_TS_03": ("rec_TS_03_half1.rec", "rec_TS_03_half2.rec"),
        "TS_04": ("TS_04.even.map", "TS_04.odd.map"),
        "TS_05": ("TS_05.mrc", "TS_05.mrc"),
    }
    assert found.unmatched == []


def test_unmatched_halves_are_listed(tmp_path):
    _touch(tmp_path, "a_even.mrc", "a_odd.mrc", "b_even.mrc", "c_odd.mrc", "even/d.mrc", "odd/e.mrc")
    found = discover_pairs(tmp_path)
    assert [p.name for p in found.pairs] == ["a"]
    assert sorted(p.name for p in found.unmatched) == ["b_even.mrc", "c_odd.mrc", "d.mrc", "e.mrc"]


def test_no_pairs_is_an_error(tmp_path):
    _touch(tmp_path, "b_even.mrc")
    with pytest.raises(TomocareError, match="no even/odd pairs.*b_even.mrc"):
        discover_pairs(tmp_path)
    with pytest.raises(TomocareError, match="not a directory"):
        discover_pairs(tmp_path / "missing")


def test_voxel_sizes_agree_or_are_refused_and_zero_means_unknown():
    def pairs(*sizes):
        return [SimpleNamespace(name=f"t{i}", even=SimpleNamespace(voxel_size=(s, s, s))) for i, s in enumerate(sizes)]

    assert check_voxel_sizes(pairs(10.0, 10.05)) == 10.0
    assert check_voxel_sizes(pairs(0.0, 0.0)) == 0.0  # headers that do not say: unknown, not an error
    for mixed in ((10.0, 13.0), (0.0, 10.0), (10.0, 0.0)):
        with pytest.raises(TomocareError, match="different voxel sizes"):
            check_voxel_sizes(pairs(*mixed))
    assert check_voxel_sizes(pairs(10.0, 13.0), allow_mixed=True) == 10.0
