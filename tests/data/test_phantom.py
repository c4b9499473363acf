"""Tests of the synthetic ACDC-layout phantom (hcmbench.data.phantom)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from hcmbench.data import phantom
from hcmbench.data.acdc import GROUPS
from hcmbench.data.phantom import PhantomConfig, write_phantom
from hcmbench.errors import HcmbenchError

SEED = 7


def _info(folder: Path) -> dict[str, str]:
    lines = (folder / "Info.cfg").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines)


def _load(folder: Path, frame: int, gt: bool = False) -> nib.Nifti1Image:
    return nib.load(folder / f"{folder.name}_frame{frame:02d}{'_gt' if gt else ''}.nii.gz")


def _mask(folder: Path, frame: int) -> np.ndarray:
    return np.asarray(_load(folder, frame, gt=True).dataobj)


def _mid_areas(folder: Path, frame: int) -> tuple[float, float]:
    """Mean LV cavity and myocardium area (mm²) over the two middle slices."""
    img = _load(folder, frame, gt=True)
    m = np.asarray(img.dataobj)
    sx, sy, _ = img.header.get_zooms()
    z = m.shape[2] // 2
    mid = m[:, :, z - 1 : z + 1]
    px = float(sx * sy) / 2
    return (mid == 3).sum() * px, (mid == 2).sum() * px


def _wall_mm(folder: Path, frame: int = 1) -> float:
    """Mean wall thickness: epicardial minus endocardial equivalent radius on the mid slices."""
    lv, myo = _mid_areas(folder, frame)
    return float(np.sqrt((lv + myo) / np.pi) - np.sqrt(lv / np.pi))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[int, int]]]:
    calls: list[tuple[int, int]] = []
    out = tmp_path_factory.mktemp("ph") / "phantom"
    ret = write_phantom(out, PhantomConfig(patients_per_group=2, seed=SEED),
                        progress=lambda d, t: calls.append((d, t)))
    assert ret == out
    return out, calls


@pytest.fixture(scope="module")
def patients(written: tuple[Path, list]) -> dict[str, list[Path]]:
    by_group: dict[str, list[Path]] = {}
    for folder in sorted((written[0] / "training").iterdir()):
        by_group.setdefault(_info(folder)["Group"], []).append(folder)
    return by_group


def test_layout_info_and_progress(written: tuple[Path, list]) -> None:
    out, calls = written
    assert sorted(p.name for p in out.parent.iterdir()) == ["phantom"]  # no temp folder left
    readme = (out / "README.md").read_text()
    assert "not real" in readme.lower() and f"seed {SEED}" in readme
    folders = sorted((out / "training").iterdir())
    assert [f.name for f in folders] == [f"patient{i:03d}" for i in range(1, 11)]
    assert calls == [(i, 10) for i in range(1, 11)]
    for i, folder in enumerate(folders):
        keys = [line.split(":")[0] for line in (folder / "Info.cfg").read_text().splitlines()]
        assert keys == ["ED", "ES", "Group", "Height", "NbFrame", "Weight"]
        info = _info(folder)
        assert info["Group"] == GROUPS[i // 2]  # numbered in GROUPS order, 2 per group
        assert info["ED"] == "1" and 8 <= int(info["ES"]) <= 15
        assert 20 <= int(info["NbFrame"]) <= 35
        assert 140 <= float(info["Height"]) <= 210 and 35 <= float(info["Weight"]) <= 150
        assert info["Height"].endswith(".0") and info["Weight"].endswith(".0")
        es = int(info["ES"])
        assert sorted(f.name for f in folder.iterdir()) == sorted(
            ["Info.cfg"] + [f"{folder.name}_frame{fr:02d}{s}.nii.gz" for fr in (1, es)
                            for s in ("", "_gt")])


def test_volumes_and_headers(patients: dict[str, list[Path]]) -> None:
    shapes, spacings, maxima = set(), set(), []
    for folder in (f for fs in patients.values() for f in fs):
        for frame in (1, int(_info(folder)["ES"])):
            img, gt = _load(folder, frame), _load(folder, frame, gt=True)
            assert img.get_data_dtype() == np.int16 and gt.get_data_dtype() == np.uint8
            assert img.shape == gt.shape and len(img.shape) == 3 and 8 <= img.shape[2] <= 10
            assert 190 <= img.shape[0] <= 260 and 220 <= img.shape[1] <= 260
            sx, sy, sz = img.header.get_zooms()
            assert sx == sy and 1.3 <= sx <= 1.9 and sz == 10.0
            assert gt.header.get_zooms() == img.header.get_zooms()
            assert nib.aff2axcodes(img.affine) == ("L", "P", "S")
            np.testing.assert_allclose(img.affine, np.diag([-sx, -sy, sz, 1.0]))
            assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 0
            arr = np.asarray(img.dataobj)
            assert arr.min() >= 0
            maxima.append(int(arr.max()))
            shapes.add(img.shape)
            spacings.add(float(sx))
        ed_max, es_max = maxima[-2:]
        assert 299 <= ed_max <= 4001 and 0.8 < es_max / ed_max < 1.25  # ES shares ED's scale
    assert len(shapes) > 1 and len(spacings) > 1  # varies between patients
    assert max(maxima) > 2 * min(maxima)


def test_labels_and_mid_slices(patients: dict[str, list[Path]]) -> None:
    for folder in (f for fs in patients.values() for f in fs):
        m = _mask(folder, 1)
        assert set(np.unique(m)) <= {0, 1, 2, 3}
        z = m.shape[2] // 2
        for k in (z - 1, z):
            assert {1, 2, 3} <= set(np.unique(m[:, :, k])), (folder.name, k)
        # RV disappears toward the apex before the LV does; the LV shrinks toward the apex.
        assert (m[:, :, -1] == 1).sum() < (m[:, :, 0] == 1).sum()
        assert (m[:, :, -1] == 3).sum() < (m[:, :, 0] == 3).sum()


def test_anatomy_differs_by_group(patients: dict[str, list[Path]]) -> None:
    wall = {g: [_wall_mm(f) for f in fs] for g, fs in patients.items()}
    cavity = {g: [_mid_areas(f, 1)[0] for f in fs] for g, fs in patients.items()}
    assert min(wall["HCM"]) >= 15 and max(wall["NOR"]) <= 11
    assert min(wall["HCM"]) > max(wall["NOR"]) > max(wall["DCM"])
    assert min(cavity["DCM"]) > max(cavity["NOR"]) > max(cavity["HCM"])
    nor_diameter = [2 * np.sqrt(a / np.pi) for a in cavity["NOR"]]
    assert all(42 <= d <= 58 for d in nor_diameter)
    rv_area = {g: [(_mask(f, 1) == 1).sum() * _load(f, 1).header.get_zooms()[0] ** 2
                   for f in fs] for g, fs in patients.items()}
    assert min(rv_area["RV"]) > max(rv_area["NOR"])


def test_systole_contracts(patients: dict[str, list[Path]]) -> None:
    for group, folders in patients.items():
        for folder in folders:
            es = int(_info(folder)["ES"])
            (lv_ed, myo_ed), (lv_es, myo_es) = _mid_areas(folder, 1), _mid_areas(folder, es)
            assert lv_es < lv_ed
            assert 0.85 < myo_es / myo_ed < 1.15  # myocardium is conserved, not shrunk
            assert _wall_mm(folder, es) > _wall_mm(folder, 1)
            ef = 1 - (_mask(folder, es) == 3).sum() / (_mask(folder, 1) == 3).sum()
            if group == "HCM":
                assert ef > 0.6
            if group == "DCM":
                assert ef < 0.35


def test_same_seed_identical_other_seed_differs(tmp_path: Path, patients: dict) -> None:
    ref = patients["DCM"][0]  # patient001
    again = write_phantom(tmp_path / "a", PhantomConfig(1, seed=SEED, groups=("DCM",)))
    other = write_phantom(tmp_path / "b", PhantomConfig(1, seed=SEED + 1, groups=("DCM",)))
    same, diff = again / "training" / "patient001", other / "training" / "patient001"
    assert (same / "Info.cfg").read_text() == (ref / "Info.cfg").read_text()
    for gt in (False, True):
        a, b = np.asarray(_load(ref, 1, gt).dataobj), np.asarray(_load(same, 1, gt).dataobj)
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    a, c = np.asarray(_load(ref, 1).dataobj), np.asarray(_load(diff, 1).dataobj)
    assert a.shape != c.shape or not np.array_equal(a, c)


def test_cine_frames_match_ed_es(tmp_path: Path) -> None:
    cfg = PhantomConfig(patients_per_group=1, seed=3, groups=("HCM",), cine=True)
    folder = write_phantom(tmp_path / "c", cfg) / "training" / "patient001"
    plain = write_phantom(tmp_path / "p", PhantomConfig(1, seed=3, groups=("HCM",)))
    info = _info(folder)
    es, n = int(info["ES"]), int(info["NbFrame"])
    cine = np.asarray(nib.load(folder / "patient001_4d.nii.gz").dataobj)
    ed_vol, es_vol = (np.asarray(_load(folder, f).dataobj) for f in (1, es))
    assert cine.dtype == np.int16 and cine.shape == (*ed_vol.shape, n)
    assert np.array_equal(cine[..., 0], ed_vol) and np.array_equal(cine[..., es - 1], es_vol)
    assert np.array_equal(np.asarray(_load(plain / "training" / "patient001", es).dataobj),
                          es_vol)  # cine=True does not change the ED/ES volumes
    assert not np.array_equal(cine[..., 1], ed_vol)


def test_existing_nonempty_output_refused(tmp_path: Path) -> None:
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(HcmbenchError, match="taken"):
        write_phantom(out, PhantomConfig(patients_per_group=1, groups=("NOR",)))
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_existing_empty_output_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    write_phantom(out, PhantomConfig(patients_per_group=1, groups=("RV",)))
    assert (out / "training" / "patient001" / "Info.cfg").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def test_failure_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def boom(*args: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(*args)

    real = phantom._write_patient
    monkeypatch.setattr(phantom, "_write_patient", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        write_phantom(tmp_path / "out", PhantomConfig(patients_per_group=2, groups=("NOR",)))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"patients_per_group": 0}, "patients_per_group"),
    ({"groups": ("HCM", "XYZ")}, "XYZ"),
    ({"groups": ()}, "no groups"),
])
def test_invalid_config(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(HcmbenchError, match=match):
        write_phantom(tmp_path / "out", PhantomConfig(**kwargs))
    assert list(tmp_path.iterdir()) == []
