"""`hcmbench study`: every model at one budget, one table, Figure 4, MLflow, and the results section."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

import tests.toy_model  # noqa: F401  (registers "toy", which has a "cpu" preset)
from hcmbench.checkpoints import read_checkpoint
from hcmbench.cli import main
from hcmbench.errors import HcmbenchError
from hcmbench.evaluation.features import FeatureConfig
from hcmbench.experiments.study import BEGIN, END, StudyConfig, run_study, write_results_section
from hcmbench.tracking import tracking_uri


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh project folder as the working directory (the default stores land in it), and a tiny
    feature space so that scoring takes seconds."""
    import hcmbench.evaluation.features as features

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(features, "FeatureConfig", lambda: FeatureConfig(dim=8, epochs=1, width=4))
    return tmp_path


QUICK = StudyConfig(models=("toy",), minutes=0.01, n=12, detect_seeds=0, size=32)


def test_a_study_trains_at_the_budget_scores_draws_and_tracks(split_phantom, workdir, monkeypatch):
    from tests.toy_model import ToyModel

    asked = []  # a model that takes sampler options gets the study's, for the table and for Figure 4
    monkeypatch.setattr(ToyModel, "sample_options", ("sampler", "steps"))
    plain = ToyModel.sample
    monkeypatch.setattr(ToyModel, "sample", lambda self, n, labels=None, rng=None, **options:
                        asked.append(options) or plain(self, n, labels, rng))
    config = StudyConfig(**{**QUICK.__dict__, "detect_seeds": 1, "sampler": "ddim", "steps": 7})
    result = run_study(split_phantom, workdir / "study", config)
    want = {"sampler": "ddim", "steps": 7}  # the training previews take the model's own ({} for the toy)
    assert sum(options == want for options in asked) >= 2 and all(options in ({}, want) for options in asked)
    names = [row.name for row in result.table.rows]
    assert names[0] == "toy" and "real val (new patients)" in names
    assert 0 <= result.table.rows[0].detectability <= 1
    assert (workdir / "study" / "table.md").read_text().count("toy") >= 1
    samples = workdir / "study" / "figures" / "samples.png"
    assert samples in result.figures and 0 < samples.stat().st_size < 300_000
    assert (workdir / "study" / "figures" / "losses_toy.png").exists()
    # the preset's kimg budget gave way to the study's minutes (the params below): the run ended when its
    # 0.6 s were spent, or earlier by early stopping on a fast machine, never on 50 kimg
    state = read_checkpoint(workdir / "study" / "toy" / "checkpoints" / "last.pt")
    assert result.train_seconds["toy"] >= 0.6 or state["stopped_early"]
    assert state["images_seen"] < 50_000
    client = MlflowClient(tracking_uri())
    experiment = client.get_experiment_by_name("hcmbench-study")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"toy", "table"}
    toy = runs["toy"]
    assert toy.info.status == "FINISHED" and toy.data.params["model.preset"] == "cpu"
    assert toy.data.params["train.minutes"] == "0.01" and toy.data.params["train.kimg"] == "None"
    assert client.get_metric_history(toy.info.run_id, "kimg")
    assert "eval/fid/toy" in runs["table"].data.metrics


def test_a_finished_study_is_not_trained_again(split_phantom, workdir):
    first = run_study(split_phantom, workdir / "study", QUICK)
    last = workdir / "study" / "toy" / "checkpoints" / "last.pt"
    written = last.stat().st_mtime_ns
    again = run_study(split_phantom, workdir / "study", QUICK)
    assert last.stat().st_mtime_ns == written
    assert again.run_ids == first.run_ids  # the same MLflow run, ended again


def test_the_results_section_replaces_its_markers_only(workdir):
    figure = workdir / "f.png"
    figure.write_bytes(b"png")
    doc = workdir / "docs" / "results.md"
    doc.parent.mkdir()
    doc.write_text(f"# Results\n\nbefore\n\n{BEGIN}\nold table\n{END}\n\nafter\n")
    write_results_section(doc, f"{BEGIN}\nnew table\n{END}", figure, workdir / "docs" / "figures" / "s.png")
    text = doc.read_text()
    assert "new table" in text and "old table" not in text and text.startswith("# Results\n\nbefore")
    assert text.rstrip().endswith("after") and (workdir / "docs" / "figures" / "s.png").read_bytes() == b"png"
    figure.write_bytes(b"x" * 300_001)
    with pytest.raises(HcmbenchError, match="over the 300 kB"):
        write_results_section(doc, "x", figure, workdir / "s2.png")
    assert "new table" in doc.read_text()


def test_study_command_writes_the_results_section_and_refuses_bad_input(split_phantom, workdir):
    doc = workdir / "docs" / "results.md"
    doc.parent.mkdir()
    doc.write_text("# Results\n")
    result = CliRunner().invoke(main, ["study", "--data", str(split_phantom), "--models", "toy", "--minutes", "0.01",
                                       "-n", "12", "--detect-seeds", "0", "--out", "study", "--results", str(doc),
                                       "--sampler", "ddim", "--steps", "9", "--precision", "bf16"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = doc.read_text()
    assert BEGIN in text and f"Produced by `hcmbench study --data {split_phantom} --minutes 0.01 --models toy" in text
    assert "--sampler ddim --steps 9 --precision bf16 --seed 0`" in text
    assert "the DDPM sampled with ddim over 9 steps in bf16" in text
    assert "![A real test slice" in text and (workdir / "docs" / "figures" / "study_samples.png").exists()
    bad = CliRunner().invoke(main, ["study", "--models", "toy,nope", "--out", "x"])
    assert bad.exit_code == 2 and "unknown model 'nope'" in bad.output
    no_preset = CliRunner().invoke(main, ["study", "--models", "toy", "--preset", "gpu", "--out", "x"])
    assert no_preset.exit_code == 2 and "toy has no preset 'gpu'" in no_preset.output
    assert not (workdir / "x").exists()
