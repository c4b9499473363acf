"""`hcmbench utility` end to end: a generator from an MLflow run, the files, the MLflow run, and the
utility column that `hcmbench compare` then shows for that run."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench import engine, tracking
from hcmbench.cli import main
from hcmbench.config import DataConfig, TrainConfig
from hcmbench.data.phantom import PhantomConfig, write_phantom
from hcmbench.evaluation.report import EvaluationRow, EvaluationTable, display_rows


@pytest.fixture
def generator_run(tmp_path, monkeypatch):
    """A toy generator trained on the HCM patients of a five-group phantom, logged as an MLflow run."""
    phantom = write_phantom(tmp_path / "acdc", PhantomConfig(patients_per_group=5, seed=0))
    trained = engine.train("toy", phantom, tmp_path / "run", DataConfig(groups=("HCM",), size=32),
                           TrainConfig(epochs=1, batch_size=8, sample_every=0), {})
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    client = tracking.client()
    run = client.create_run(tracking.ensure_experiment(client, "toy"))
    client.log_artifact(run.info.run_id, str(trained.best_checkpoint), "checkpoints")
    client.set_terminated(run.info.run_id, "FINISHED")
    return phantom, run.info.run_id


def test_utility_command_writes_the_table_logs_it_and_feeds_compare(generator_run, tmp_path):
    phantom, run_id = generator_run
    result = CliRunner().invoke(main, ["utility", "--model-uri", run_id, "--data", str(phantom), "--tasks", "hcm",
                                       "--patients-per-group", "2,all", "--synthetic-ratio", "1", "--seeds", "1",
                                       "--size", "32", "--epochs", "2", "--out", "out"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["utility.csv", "utility.md", "utility.png"]
    markdown = (tmp_path / "out" / "utility.md").read_text()
    assert "real+aug+toy" in markdown and "real+toy" in markdown
    assert "logged as MLflow run" in result.output

    client = tracking.client()
    experiment = client.get_experiment_by_name("hcmbench-utility")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.data.tags["hcmbench.source.toy"] == run_id and logged.data.tags["hcmbench.source_run.toy"] == run_id
    assert logged.data.params["utility.patients_per_group"] == "2,all"
    assert {a.path for a in client.list_artifacts(logged.info.run_id, "utility")} == {
        "utility/utility.md", "utility/utility.csv", "utility/utility.png"}

    gains = tracking.utility_gains({"toy": run_id, "other": "0" * 32})
    assert set(gains) == {"toy"} and gains["toy"] == logged.data.metrics["utility/gain/toy"]
    assert math.isfinite(gains["toy"])

    # compare's table grows a utility column for the runs that have the figure, and only then
    figures = dict(n=10, ssim=0.5, ssim_std=0.1, cc=0.5, cc_std=0.1, mse=0.01, mse_std=0.0, train_ssim=0.5,
                   memorization=0.0, fid=1.0, kid=0.0, kid_std=0.0, precision=1.0, recall=1.0, density=1.0,
                   coverage=1.0, diversity=0.2)
    table = EvaluationTable([EvaluationRow("toy", "model", **figures), EvaluationRow("other", "model", **figures),
                             EvaluationRow("real train (ceiling)", "calibration", **figures)])
    header, _ = display_rows(table)
    assert not any("utility" in h for h in header)
    header, body = display_rows(table.with_utility(gains))
    column = header.index("utility (Δ balanced acc.)")
    assert [cells[column] for cells in body] == [f"{gains['toy']:+.3f}", "", ""]


def test_utility_command_refuses_bad_lists_in_one_line():
    result = CliRunner().invoke(main, ["utility", "--model-uri", "x", "--synthetic-ratio", "1,many"])
    assert result.exit_code == 2 and "'many' is not a number" in result.output


def test_source_run_id_reads_run_ids_and_run_uris(tmp_path):
    assert tracking.source_run_id("a" * 32) == "a" * 32
    assert tracking.source_run_id(f"runs:/{'b' * 32}/checkpoints/best.pt") == "b" * 32
    assert tracking.source_run_id(str(tmp_path / "best.pt")) is None
