"""`hcmbench generate`: synthetic datasets (ACDC-layout NIfTI, PNG, npz) from toy checkpoints."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench.cli import main
from hcmbench.config import DataConfig
from hcmbench.data.acdc import open_dataset
from hcmbench.data.phantom import PhantomConfig, write_phantom
from hcmbench.data.slices import load_slices

SPACING = 160.0 / 32  # the toy models' fov_mm / size
QUANTUM = 0.5 / 1000 + 1e-6  # int16 0..1000 storage


def run(*args: str):
    return CliRunner().invoke(main, ["--quiet", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, str]:
    """Four toy checkpoints: unconditional on HCM; conditioned on the phase (HCM only); conditioned on the
    group (HCM, NOR); unconditional on HCM and NOR (whose images have no known group)."""
    root = tmp_path_factory.mktemp("gen")
    phantom = write_phantom(root / "acdc", PhantomConfig(patients_per_group=2, groups=("HCM", "NOR")))
    recipes = {"uncond": ("HCM",), "phase": ("HCM", "--set", "per_class=true"),
               "group": ("HCM,NOR", "--set", "per_class=true"), "mixed": ("HCM,NOR",)}
    checkpoints = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HCMBENCH_CACHE", str(root / "cache"))
        for name, (groups, *extra) in recipes.items():
            out = root / name
            result = run("train", "--model", "toy", "--data", str(phantom), "--groups", groups, "--size", "32",
                         "--epochs", "1", "--max-steps-per-epoch", "2", "--batch-size", "8", "--lr", "0.05",
                         "--out", str(out), *extra)
            assert result.exit_code == 0, result.output
            checkpoints[name] = str(out / "checkpoints" / "best.pt")
    return checkpoints


def generate(source: str, out: Path, *args: str):
    result = run("generate", source, "--out", str(out), *args)
    assert result.exit_code == 0, result.output
    return out


def reference(source: str, out: Path, *args: str) -> np.lib.npyio.NpzFile:
    """The images the same request draws, as samples.npz (format npz)."""
    return np.load(generate(source, out, "--format", "npz", *args) / "samples.npz")


def volumes(root: Path) -> list[tuple[str, str, int, int, np.ndarray, tuple[float, ...]]]:
    """(patient, group, ED, ES, stored pixels / 1000 of each frame file, spacing), via the project's reader."""
    rows = []
    for patient in open_dataset(root).patients:
        for number in sorted({patient.info.ed, patient.info.es}):
            frame = patient.load_frame(number)
            assert frame.mask is None  # no masks are written, and the reader accepts that
            rows.append((patient.id, patient.group, patient.info.ed, patient.info.es, number,
                         frame.image.data / 1000, frame.image.spacing))
    return rows


def test_nifti_is_an_acdc_dataset_that_the_reader_reads_back(models, tmp_path):
    out = generate(models["uncond"], tmp_path / "nii", "-n", "19", "--slices-per-volume", "4", "--seed", "5")
    ref = reference(models["uncond"], tmp_path / "ref", "-n", "19", "--seed", "5")["images"]
    rows = volumes(out)
    assert [r[0] for r in rows] == [f"patient{i:03d}" for i in range(1, 6)]
    assert [r[5].shape[2] for r in rows] == [4, 4, 4, 4, 3]  # the last volume holds the remainder
    assert all(r[1] == "HCM" and r[2] == r[3] == r[4] == 1 for r in rows)
    assert all(r[6] == pytest.approx((SPACING, SPACING, 10.0)) for r in rows)
    stacked = np.concatenate([np.moveaxis(r[5], -1, 0) for r in rows])  # z order = generation order
    assert stacked.shape == ref.shape and np.abs(stacked - ref).max() <= QUANTUM
    assert not list(out.rglob("*_gt.nii.gz"))
    readme = (out / "README.txt").read_text()
    for fragment in (f"source: {models['uncond']}", "seed: 5", "n: 19", "model: toy, unconditional", "INDEPENDENT",
                     "label: none", "date: 20"):
        assert fragment in readme
    info = (out / "patient005" / "Info.cfg").read_text()
    assert "Height: 170.0" in info and "Weight: 70.0" in info and "NbFrame: 1" in info
    # The project's own preprocessing takes it (every slice when told that there are no masks to choose by).
    slices = load_slices(out, DataConfig(groups=("HCM",), size=32, frames=("ED",), middle_fraction=1.0), cache=False)
    assert len(slices) == 19


def test_a_phase_conditioned_model_puts_ed_and_es_slices_in_their_frames(models, tmp_path):
    out = generate(models["phase"], tmp_path / "nii", "-n", "11", "--slices-per-volume", "4")
    ref = reference(models["phase"], tmp_path / "ref", "-n", "11")
    classes = list(ref["classes"])
    assert classes == ["ED", "ES"]
    images, phases = ref["images"], np.array(classes)[ref["labels"]]
    expected = {"ED": images[phases == "ED"], "ES": images[phases == "ES"]}  # 6 ED, 5 ES
    rows = volumes(out)
    assert [(r[0], r[2], r[3], r[4], r[5].shape[2]) for r in rows] == [
        ("patient001", 1, 2, 1, 4), ("patient001", 1, 2, 2, 4), ("patient002", 1, 2, 1, 2), ("patient002", 1, 2, 2, 1)]
    assert all(r[1] == "HCM" for r in rows)
    for phase, frame in (("ED", 1), ("ES", 2)):
        got = np.concatenate([np.moveaxis(r[5], -1, 0) for r in rows if r[4] == frame])
        assert np.abs(got - expected[phase]).max() <= QUANTUM
    with open(out / "manifest.csv") as handle:
        manifest = list(csv.DictReader(handle))
    assert [m["label"] for m in manifest if m["frame"] == "2"] == ["ES"] * 5
    assert sorted(int(m["sample"]) for m in manifest) == list(range(11))

    only_es = generate(models["phase"], tmp_path / "es", "-n", "3", "--label", "es")
    [(patient, group, ed, es, frame, pixels, _)] = volumes(only_es)
    assert (group, ed, es, frame, pixels.shape[2]) == ("HCM", 1, 1, 1, 3)
    assert "label: es" in (only_es / "README.txt").read_text()
    assert {m["label"] for m in csv.DictReader(open(only_es / "manifest.csv"))} == {"ES"}


def test_a_group_conditioned_model_names_each_patients_group(models, tmp_path):
    out = generate(models["group"], tmp_path / "nii", "-n", "6", "--slices-per-volume", "2")
    ref = reference(models["group"], tmp_path / "ref", "-n", "6")
    assert list(ref["classes"]) == ["HCM", "NOR"] and list(ref["labels"]) == [0, 0, 0, 1, 1, 1]
    rows = volumes(out)
    assert [(r[1], r[5].shape[2]) for r in rows] == [("HCM", 2), ("HCM", 1), ("NOR", 2), ("NOR", 1)]
    stacked = np.concatenate([np.moveaxis(r[5], -1, 0) for r in rows])
    assert np.abs(stacked - ref["images"]).max() <= QUANTUM
    nor = generate(models["group"], tmp_path / "nor", "-n", "3", "--label", "NOR")
    assert [p.group for p in open_dataset(nor).patients] == ["NOR"]


def test_png_and_npz_formats(models, tmp_path):
    png = generate(models["group"], tmp_path / "png", "-n", "5", "--format", "PNG", "--seed", "2")
    assert sorted(p.name for p in png.iterdir()) == ["README.txt"] + [f"sample_{i:05d}.png" for i in range(5)] + [
        "samples.npz"]
    stored = np.load(png / "samples.npz")
    assert stored["images"].dtype == np.float32 and stored["images"].shape == (5, 32, 32)
    assert 0 <= stored["images"].min() and stored["images"].max() <= 1
    assert list(stored["labels"]) == [0, 0, 0, 1, 1] and list(stored["classes"]) == ["HCM", "NOR"]
    for i in (0, 4):
        tile = np.asarray(Image.open(png / f"sample_{i:05d}.png"), dtype=np.float32) / 255
        assert np.abs(tile - stored["images"][i]).max() <= 1 / 255 + 1e-6

    npz = generate(models["group"], tmp_path / "npz", "-n", "5", "--format", "npz", "--seed", "2")
    assert sorted(p.name for p in npz.iterdir()) == ["README.txt", "samples.npz"]
    alone = np.load(npz / "samples.npz")
    assert sorted(alone.files) == sorted(stored.files)
    for key in stored.files:
        assert alone[key].dtype == stored[key].dtype and np.array_equal(alone[key], stored[key])
    unlabelled = np.load(generate(models["mixed"], tmp_path / "mixed", "-n", "3", "--format", "npz") / "samples.npz")
    assert list(unlabelled["labels"]) == [-1, -1, -1]


def test_the_same_seed_gives_identical_files(models, tmp_path):
    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
                if p.is_file() and p.name != "README.txt"}  # README.txt carries the date

    args = ("-n", "6", "--slices-per-volume", "3", "--seed", "3")
    first = files(generate(models["uncond"], tmp_path / "a", *args))
    second = files(generate(models["uncond"], tmp_path / "b", *args))
    assert len(first) == 5 and first == second  # manifest.csv and 2 × (Info.cfg, volume)
    other = files(generate(models["uncond"], tmp_path / "c", "-n", "6", "--slices-per-volume", "3", "--seed", "4"))
    assert other["patient001/patient001_frame01.nii.gz"] != first["patient001/patient001_frame01.nii.gz"]


def test_a_non_empty_out_folder_is_refused_and_left_alone(models, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run("generate", models["uncond"], "-n", "2", "--out", str(out))
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: output folder {out} already exists and is not empty"]
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no temporary sibling left behind


@pytest.mark.parametrize(("model", "args", "fragment"), [
    ("uncond", ("--format", "jpeg"), "unknown format 'jpeg': choose from nifti, png, npz"),
    ("uncond", ("--label", "HCM"), "unconditional: --label does not apply"),
    ("group", ("--label", "MINF"), "unknown label 'MINF': this model knows HCM, NOR"),
    ("mixed", (), "groups HCM, NOR without being conditioned on the group"),
    ("uncond", ("-n", "1000", "--slices-per-volume", "1"), "need 1000 patients, but ACDC numbering stops at 999"),
    (None, (), "no such checkpoint file"),
])
def test_bad_requests_exit_2_with_one_line_and_write_nothing(models, tmp_path, model, args, fragment):
    source = models[model] if model else str(tmp_path / "missing.pt")
    result = run("generate", source, "--out", str(tmp_path / "out"), *args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.output
    assert list(tmp_path.iterdir()) == []
