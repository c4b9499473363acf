"""`hcmbench utility` end to end: a generator from an MLflow run, the files, the MLflow run (the summary gain
with its interval, every row's figures), the utility column that `hcmbench compare` then shows for that run,
and the design options' one-line refusals."""

from __future__ import annotations


import pytest
from click.testing import CliRunner

import tests.toy_model  # noqa: F401  (registers "toy")
from hcmbench import engine, tracking
from hcmbench.cli import main
from hcmbench.config import DataConfig, TrainConfig
from hcmbench.data.phantom import PhantomConfig, write_phantom
from hcmbench.evaluation.report import EvaluationRow, EvaluationTable, display_rows
from hcmbench.evaluation.report import notes as report_notes


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
                                       "--folds", "2", "--bootstrap", "500", "--summary-at", "hcm,2,1",
                                       "--size", "32", "--epochs", "2", "--out", "out"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["utility.csv", "utility.md", "utility.png"]
    markdown = (tmp_path / "out" / "utility.md").read_text()
    assert "real+aug+toy" in markdown and "real+toy" in markdown and "real+oracle" in markdown
    assert "2-fold cross-validation" in markdown and "detects a difference in patient balanced accuracy" in markdown
    assert "logged as MLflow run" in result.output and "95 % intervals" in result.output

    client = tracking.client()
    experiment = client.get_experiment_by_name("hcmbench-utility")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.data.tags["hcmbench.source.toy"] == run_id and logged.data.tags["hcmbench.source_run.toy"] == run_id
    params, metrics = logged.data.params, logged.data.metrics
    assert params["utility.patients_per_group"] == "2,all" and params["utility.summary_at"] == "hcm,2,1"
    assert params["utility.folds"] == "2" and params["data.folds"] == "2"
    assert {a.path for a in client.list_artifacts(logged.info.run_id, "utility")} == {
        "utility/utility.md", "utility/utility.csv", "utility/utility.png"}
    # the summary gain: the paired difference of real+toy against real at hcm, 2 patients per group, ratio 1
    gain = metrics["utility/gain/toy"]
    assert metrics["utility/gain/toy/ci_low"] <= gain <= metrics["utility/gain/toy/ci_high"]
    assert 0 < metrics["utility/gain/toy/p_value"] <= 1
    assert gain == metrics["utility/hcm/k2/real_toy/x1/delta_patient_bacc"]
    assert (metrics["utility/hcm/k2/real/patient_bacc/ci_low"] <= metrics["utility/hcm/k2/real/patient_bacc"]
            <= metrics["utility/hcm/k2/real/patient_bacc/ci_high"])
    assert "utility/hcm/kall/real_aug_toy/x1/delta_slice_auc/p_value" in metrics

    gains = tracking.utility_gains({"toy": run_id, "other": "0" * 32})
    assert set(gains) == {"toy"} and gains["toy"].value == gain
    assert (gains["toy"].low, gains["toy"].high) == (metrics["utility/gain/toy/ci_low"],
                                                     metrics["utility/gain/toy/ci_high"])

    # compare's table grows a utility column for the runs that have the figure, and only then
    figures = dict(n=10, ssim=0.5, ssim_std=0.1, cc=0.5, cc_std=0.1, mse=0.01, mse_std=0.0, train_ssim=0.5,
                   memorization=0.0, fid=1.0, kid=0.0, kid_std=0.0, precision=1.0, recall=1.0, density=1.0,
                   coverage=1.0, diversity=0.2)
    table = EvaluationTable([EvaluationRow("toy", "model", **figures), EvaluationRow("other", "model", **figures),
                             EvaluationRow("real train (ceiling)", "calibration", **figures)])
    header, _ = display_rows(table)
    assert not any("utility" in h for h in header)
    with_gain = table.with_utility(gains)
    header, body = display_rows(with_gain)
    column = header.index("utility (Δ patient bal. acc. [95 % CI])")
    signed = lambda v: f"{v:+.2f}".replace("-", "−")  # noqa: E731
    plain = lambda v: f"{v:.2f}".replace("-", "−")  # noqa: E731
    assert [cells[column] for cells in body] == [
        f"{signed(gain)} [{plain(gains['toy'].low)}, {plain(gains['toy'].high)}]", "", ""]
    assert any("paired difference" in note and "declared" in note for note in report_notes(with_gain))

    # an external test set sharing patients with --data is refused in one line, before any training
    refused = CliRunner().invoke(main, ["utility", "--model-uri", run_id, "--data", str(phantom), "--test-data",
                                        str(phantom), "--tasks", "hcm", "--patients-per-group", "1", "--size", "32",
                                        "--out", "out2"])
    assert refused.exit_code == 2 and "shares 25 patient id(s)" in refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not (tmp_path / "out2").exists()


@pytest.mark.parametrize("args, message", [
    (["--summary-at", "hcm,7,1"], "summary_at hcm,7,1 is not in the grid"),
    (["--summary-at", "hcm,5"], "TASK,PATIENTS,RATIO"),
    (["--folds", "1"], "1 is not in the range x>=2"),
    (["--test-data", "/no/such/folder"], "does not exist"),
])
def test_bad_design_options_are_one_line_errors(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["utility", "--model-uri", "x", *args])
    assert result.exit_code == 2 and message in result.output, result.output
    assert len([line for line in result.output.splitlines() if "rror" in line]) == 1


def test_utility_command_refuses_bad_lists_in_one_line():
    result = CliRunner().invoke(main, ["utility", "--model-uri", "x", "--synthetic-ratio", "1,many"])
    assert result.exit_code == 2 and "'many' is not a number" in result.output


def test_evaluate_takes_the_test_data_spelling():
    from hcmbench.cli.evaluate import evaluate

    (option,) = [p for p in evaluate.params if p.name == "reference_root"]
    assert option.opts == ["--test-data", "--reference"] and "never seen by the generator or the classifier" in option.help


def test_source_run_id_reads_run_ids_and_run_uris(tmp_path):
    assert tracking.source_run_id("a" * 32) == "a" * 32
    assert tracking.source_run_id(f"runs:/{'b' * 32}/checkpoints/best.pt") == "b" * 32
    assert tracking.source_run_id(str(tmp_path / "best.pt")) is None
