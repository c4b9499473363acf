"""The evaluation table: calibration rows, memorisation, files, and `hcmbench evaluate` / `figure` end to end."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench.cli import main
from hcmbench.config import DataConfig
from hcmbench.data.slices import load_slices
from hcmbench.evaluation.detectability import DetectabilityConfig
from hcmbench.evaluation.features import FeatureConfig, load_feature_extractor
from hcmbench.evaluation.report import EvaluationConfig, EvaluationInputs, evaluate_sets

TINY_FEATURES = FeatureConfig(dim=16, epochs=2, width=4, batch_size=32)
DATA = DataConfig(groups=("HCM",), size=32)
QUICK = DetectabilityConfig(seeds=1, steps=60, min_steps=20)  # detectability is tested in test_detectability and test_validity


@pytest.fixture(scope="module")
def inputs(split_phantom, tmp_path_factory):
    cache = tmp_path_factory.mktemp("featcache")
    slices = load_slices(split_phantom, DATA, cache=False)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HCMBENCH_CACHE", str(cache))
        extractor = load_feature_extractor(split_phantom, DATA, TINY_FEATURES)
    as_tensor = lambda split: torch.from_numpy(slices.of_split(split).images)  # noqa: E731
    return EvaluationInputs(as_tensor("test"), as_tensor("train"), as_tensor("val"), extractor)


def rows_by_name(table):
    return {row.name: row for row in table.rows}


def test_a_generator_that_returns_training_images_is_flagged_as_memorising(inputs):
    config = EvaluationConfig(n=20, kid_subsets=5, diversity_images=20, detector=QUICK)
    copies = inputs.train[torch.arange(20) % len(inputs.train)]
    table = evaluate_sets({"copier": (copies, 0.5)}, inputs, config)
    rows = rows_by_name(table)
    assert rows["copier"].memorization == 1.0 and rows["copier"].train_ssim == pytest.approx(1.0, abs=1e-5)
    assert rows["uniform noise"].memorization == 0.0
    # one unseen patient, 16 slices: 3 flagged at the 95th percentile of another unseen patient's (about 5 %
    # expected; more than a quarter would say that new patients look like copies)
    assert rows["real val (new patients)"].memorization <= 0.25
    assert 0 < table.context["memorization_threshold"] < 1


@pytest.mark.parametrize("percentile", [95.0, 80.0])
def test_unseen_real_images_are_flagged_at_100_minus_the_percentile_and_copies_at_100(inputs, percentile):
    """By definition τ is the percentile of the reference images' nearest SSIM to a training slice, so the
    reference images themselves are flagged at 100 − percentile % (to one image), copies at 100 %."""
    n = len(inputs.reference)
    config = EvaluationConfig(n=n, kid_subsets=2, diversity_images=10, detector=None, calibration=False,
                              memorization_percentile=percentile)
    table = evaluate_sets({"unseen": (inputs.reference, 0.0), "copies": (inputs.train, 0.0)}, inputs, config)
    rows = rows_by_name(table)
    assert abs(rows["unseen"].memorization - (100 - percentile) / 100) <= 1 / n
    assert rows["unseen"].memorization > 0 and rows["copies"].memorization == 1.0


def test_calibration_rows_bracket_the_real_ceiling(inputs):
    table = evaluate_sets({}, inputs, EvaluationConfig(n=20, kid_subsets=5, diversity_images=20, detector=QUICK))
    rows = rows_by_name(table)
    assert [r.kind for r in table.rows] == ["calibration"] * 5
    assert np.isnan(rows["real train (ceiling)"].detectability)  # the classifier's own real class
    assert rows["uniform noise"].detectability > 0.9 and 0 <= rows["real val (new patients)"].detectability <= 1
    ceiling, noise = rows["real train (ceiling)"], rows["uniform noise"]
    assert noise.ssim < ceiling.ssim - 0.3 and noise.cc < ceiling.cc and noise.mse > ceiling.mse
    assert noise.fid > ceiling.fid and noise.precision <= ceiling.precision
    mean_image = rows["mean train image"]
    assert mean_image.n == 20 and mean_image.diversity == 1.0 and mean_image.ssim_std == 0.0
    assert rows["blurred train (σ 2 px)"].ssim < ceiling.ssim
    assert np.isnan(ceiling.memorization)  # the training split is the training data itself


def test_table_files_carry_every_row_and_the_notes(inputs, tmp_path):
    table = evaluate_sets({"toy": (inputs.val, 1.25)}, inputs, EvaluationConfig(n=10, kid_subsets=3,
                                                                               diversity_images=10, detector=QUICK))
    md, csv_path = table.write(tmp_path / "eval")
    text = md.read_text()
    assert "| toy |" in text and "| uniform noise |" in text and "ceiling" in text and "Memorised" in text
    assert "detectability ↓" in text and "Detectability: balanced accuracy" in text
    records = list(csv.DictReader(io.StringIO(csv_path.read_text())))
    assert [r["name"] for r in records][0] == "toy" and len(records) == 6
    assert float(records[0]["sample_ms"]) == 1.25 and records[1]["sample_ms"] == ""
    assert set(table.model_metrics()) >= {"eval/ssim", "eval/fid", "eval/memorization", "eval/sample_ms",
                                          "eval/detectability"}
    assert 0 <= float(records[0]["detectability"]) <= 1 and records[1]["detectability"] == ""  # none for train


def test_data_range_255_is_labelled_and_inflates_ssim(inputs):
    config = EvaluationConfig(n=10, kid_subsets=3, diversity_images=10, data_range=255, detector=None)
    table = evaluate_sets({}, inputs, config)
    assert rows_by_name(table)["uniform noise"].ssim > 0.9
    assert "as in the study" in table.to_markdown() and "SSIM (range 255)" in table.to_markdown()
    assert all(np.isnan(r.detectability) for r in table.rows) and "Detectability:" not in table.to_markdown()


# -- the commands ----------------------------------------------------------------------------------


def run(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def toy_checkpoint(split_phantom, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "toy"
    result = run("--quiet", "train", "--model", "toy", "--data", str(split_phantom), "--groups", "HCM", "--size", "32",
                 "--epochs", "2", "--batch-size", "8", "--lr", "0.05", "--out", str(out))
    assert result.exit_code == 0, result.output
    return out / "checkpoints" / "best.pt"


@pytest.fixture
def tiny_features(monkeypatch):
    """`hcmbench evaluate` with the tiny feature network, so the test does not train the default one."""
    import hcmbench.evaluation.features as features

    monkeypatch.setattr(features, "FeatureConfig", lambda: TINY_FEATURES)


def test_evaluate_prints_the_table_and_writes_it_beside_the_run(toy_checkpoint, tiny_features):
    result = run("evaluate", str(toy_checkpoint), "-n", "12")  # every default, detectability's 3 seeds included
    assert result.exit_code == 0, result.output
    assert "toy" in result.output and "uniform noise" in result.output and "ceiling" in result.output
    assert "detect" in result.output
    folder = toy_checkpoint.parent.parent / "eval"
    records = list(csv.DictReader(io.StringIO((folder / "table.csv").read_text())))
    assert records[0]["name"] == "toy" and records[0]["n"] == "12" and float(records[0]["sample_ms"]) > 0


def test_evaluate_reads_a_run_from_mlflow(toy_checkpoint, tiny_features, tmp_path, monkeypatch):
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.create_experiment("t", artifact_location=str(tmp_path / "artifacts"))
    with mlflow.start_run(experiment_id=experiment) as active:
        mlflow.log_artifact(str(toy_checkpoint), "checkpoints")
    result = run("--quiet", "evaluate", active.info.run_id, "-n", "6", "--no-calibration", "--detect-seeds", "1",
                 "--out", str(tmp_path / "e"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "e" / "table.md").read_text().count("| toy |") == 1
    missing = run("evaluate", "0" * 32, "--out", str(tmp_path / "f"))
    assert missing.exit_code == 2 and missing.output.startswith("error: ") and len(missing.output.splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["no/such/file.pt"], "no such checkpoint file"),
    (["{ckpt}", "-n", "1"], "Invalid value for '-n'"),
    (["{ckpt}", "--ssim-data-range", "0"], "Invalid value for '--ssim-data-range'"),
    (["{ckpt}", "--detect-seeds", "-1"], "Invalid value for '--detect-seeds'"),
])
def test_evaluate_refuses_bad_input(toy_checkpoint, args, message):
    result = run("evaluate", *[a.format(ckpt=toy_checkpoint) for a in args])
    assert result.exit_code == 2 and message in result.output


def test_figure_writes_samples_and_loss_curves(toy_checkpoint, tmp_path):
    result = run("figure", str(toy_checkpoint), str(toy_checkpoint), "--out", str(tmp_path / "fig"))
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "fig").iterdir())
    assert names == ["losses_toy_1.png", "losses_toy_2.png", "samples.png"]
    bad = run("figure", str(toy_checkpoint), "--name", "a", "--name", "b", "--out", str(tmp_path / "g"))
    assert bad.exit_code == 2 and "2 names for 1 checkpoints" in bad.output


def test_evaluate_one_group_of_a_model_trained_on_several(split_phantom, tmp_path, tiny_features, monkeypatch):
    import hcmbench.sampling as sampling
    from hcmbench.data.slices import load_slices
    from hcmbench.checkpoints import data_config_of, read_checkpoint

    def train_toy(name, *extra):
        out = tmp_path / name
        result = run("--quiet", "train", "--model", "toy", "--data", str(split_phantom), "--groups", "HCM,NOR",
                     "--size", "32", "--epochs", "1", "--batch-size", "8", "--out", str(out), *extra)
        assert result.exit_code == 0, result.output
        return out / "checkpoints" / "best.pt"

    asked = []
    real_draw = sampling.draw
    monkeypatch.setattr(sampling, "draw", lambda generator, n, label=None, *a, **k: (
        asked.append(label), real_draw(generator, n, label, *a, **k))[1])
    conditional = train_toy("by_group", "--set", "per_class=true")
    result = run("--quiet", "evaluate", str(conditional), "-n", "8", "--group", "hcm", "--detect-seeds", "0",
                 "--out", str(tmp_path / "e"))
    assert result.exit_code == 0, result.output
    assert asked == ["HCM"]  # the model was asked for HCM only, by its name in the data
    table = (tmp_path / "e" / "table.md").read_text()
    slices = load_slices(split_phantom, data_config_of(read_checkpoint(conditional)))
    hcm = (slices.group == "HCM")
    # every real row holds HCM slices only: the reference and the training ceiling count them
    assert f"({int((hcm & (slices.split == 'test')).sum())} images)" in table and "(groups HCM)" in table
    assert f"training split: {int((hcm & (slices.split == 'train')).sum())} images" in table
    mixed = train_toy("mixed")
    refused = run("evaluate", str(mixed), "--group", "HCM", "--out", str(tmp_path / "f"))
    assert refused.exit_code == 2 and "without group labels: it cannot be asked for HCM" in refused.output
    other = run("evaluate", str(conditional), "--group", "DCM", "--out", str(tmp_path / "g"))
    assert other.exit_code == 2 and "these generators were trained on HCM, NOR" in other.output
