"""One trial: its training through the engine, pruning on the validation score, scoring, and its MLflow run."""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from hcmbench.config import TrainConfig
from hcmbench.errors import HcmbenchError
from hcmbench.redact import mask_passwords
from hcmbench.sweep.coordination import best_trial, ended
from hcmbench.sweep.events import SweepDisplay, TrialEnded, TrialEpoch, TrialStarted
from hcmbench.sweep.space import SearchSpace


def make_pruner(space: SearchSpace) -> Any:
    budget = space.budget
    if budget.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=budget.startup_trials, n_warmup_steps=budget.warmup)
    if budget.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, budget.warmup), max_resource=budget.rounds or "auto")
    return optuna.pruners.NopPruner()


class PruneOnValidation:
    """Engine callback: report each round's validation score to the trial and stop when it should be pruned."""

    def __init__(self, trial: Any, sign: float, display: SweepDisplay | None) -> None:
        self.trial, self.sign, self.display = trial, sign, display

    def on_epoch_end(self, event: Any) -> None:
        if self.display is not None:
            self.display(TrialEpoch(self.trial.number, event.epoch, event.epochs, event.val_score, event.unit,
                                    event.kimg))
        self.trial.report(self.sign * event.val_score, event.epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned at {event.unit} {event.epoch}, {event.kimg:.1f} kimg "
                                     f"(validation score {event.val_score:.4g})")


class TrialScorer:
    """Scores a trial's generator against the validation split; data and feature space are loaded once."""

    def __init__(self, data_root: Path, space: SearchSpace, seed: int, device: str) -> None:
        self.data_root, self.space, self.seed, self.device = data_root, space, seed, device
        self.inputs = None

    def prepare(self) -> None:
        """Preprocess the data and train (or load) the feature space."""
        if self.inputs is None:
            self.inputs = self._load()

    def _load(self) -> Any:
        import torch

        from hcmbench.data.slices import load_slices
        from hcmbench.evaluation.features import FeatureConfig, load_feature_extractor
        from hcmbench.evaluation.report import EvaluationInputs

        config = self.space.data_config()
        slices = load_slices(self.data_root, config)
        val = slices.of_split("val")
        if len(val) <= 5:
            raise HcmbenchError(f"{self.data_root}: the validation split has {len(val)} slices; scoring a trial "
                                "needs at least 6 (use more patients)")
        extractor = None if self.space.objective.metric == "val_score" else load_feature_extractor(self.data_root, config,
                                                                                          FeatureConfig())
        return EvaluationInputs(torch.from_numpy(val.images), torch.from_numpy(slices.of_split("train").images),
                                None, extractor, reference_name="validation split")

    def __call__(self, checkpoint: Path) -> Any:
        from hcmbench.checkpoints import load_generator, resolve_device
        from hcmbench.intensity import to_unit_range
        from hcmbench.evaluation.detectability import DetectabilityConfig
        from hcmbench.evaluation.report import EvaluationConfig, evaluate_sets, timed_draw
        from hcmbench.sampling import draw

        self.prepare()  # scoring is only asked of metrics that need the feature space, loaded by prepare()
        generator = load_generator(checkpoint, device=resolve_device(self.device))
        n = self.space.objective.images
        images, ms = timed_draw(lambda: draw(generator, n, seed=self.seed, options=self.space.objective.sampling)[0], n)
        # one seed per trial: the study averages over trials, and the classifier's strength is not reduced
        detector = DetectabilityConfig(seeds=1) if "detectability" in self.space.objective.figures else None
        config = EvaluationConfig(n=n, calibration=False, kid_subsets=20, diversity_images=min(n, 100), seed=self.seed,
                                  detector=detector)
        return evaluate_sets({generator.model.name: (to_unit_range(images), ms)}, self.inputs, config)


@dataclass(frozen=True)
class Outcome:
    state: str  # COMPLETE, PRUNED, FAIL (or STOPPED: interrupted)
    value: float | None = None
    reason: str = ""
    summary: str = ""  # the scored figures, for the run's name: "fid 38.2", "detectability 0.98 · fid 150"


class Objective:
    """One trial: train, score, and track it in a nested MLflow run, ended by `end` once Optuna knows."""

    def __init__(self, model: str, space: SearchSpace, budget: dict[str, Any], seed: int, device: str, data_root: Path,
                 scorer: TrialScorer, mlflow_client: Any, experiment_id: str, parent: str, study: str, worker: str,
                 display: SweepDisplay | None) -> None:
        self.model, self.space, self.budget, self.seed, self.device = model, space, budget, seed, device
        self.data_root, self.scorer, self.client = data_root, scorer, mlflow_client
        self.experiment_id, self.parent, self.study, self.worker = experiment_id, parent, study, worker
        self.display, self.runs = display, {}

    def __call__(self, trial: Any) -> Outcome:
        from hcmbench import engine, tracking

        train_overrides, settings = self.space.suggest(trial)
        if self.display is not None:
            self.display(TrialStarted(trial.number, dict(trial.params)))
        run = self.client.create_run(self.experiment_id, run_name=tracking.trial_run_name(self.study, self.model,
                                                                                  trial.number), tags={
            "mlflow.parentRunId": self.parent, tracking.STUDY_TAG: self.study, tracking.ROLE_TAG: "trial",
            tracking.MODEL_TAG: self.model, tracking.TRIAL_TAG: str(trial.number), tracking.STATE_TAG: "RUNNING",
            "hcmbench.worker": self.worker})
        run_id = self.runs[trial.number] = run.info.run_id
        trial.set_user_attr("mlflow_run_id", run_id)
        data_config = self.space.data_config()
        train_config = TrainConfig(**{**train_overrides, **self.budget, "seed": self.seed, "device": self.device})
        for key, value in tracking.flatten_params({"model": {"name": self.model, **settings},
                                                   "train": dataclasses.asdict(train_config),
                                                   "data": {**dataclasses.asdict(data_config),
                                                            "root": str(self.data_root)}}).items():
            self.client.log_param(run_id, key, value)
        logger = tracking.RunLogger(self.client, run_id)
        sign = 1.0 if self.space.objective.direction == "minimize" else -1.0
        work = Path(tempfile.mkdtemp(prefix=f"hcmbench-trial-{trial.number}-"))
        try:
            result = engine.train(self.model, self.data_root, work / "run", data_config, train_config, settings,
                                  callbacks=[logger, PruneOnValidation(trial, sign, self.display)])
            objective = self.space.objective
            if objective.metric == "val_score":
                value = result.best_score
                summary = f"val_score {value:.3g}"
            else:
                table = self.scorer(result.best_checkpoint)
                tracking.log_table(self.client, run_id, table)
                value = objective.value(table.rows[0])
                summary = " · ".join(f"{k} {float(getattr(table.rows[0], k)):.3g}" for k in objective.figures)
            if not math.isfinite(value):
                raise HcmbenchError(f"the objective {objective.name} is {value}")
            return Outcome("COMPLETE", float(value), summary=summary)
        except optuna.TrialPruned as exc:
            logger.log_outputs(work / "run", checkpoint=False)  # a pruned trial's weights are not worth keeping
            return Outcome("PRUNED", reason=str(exc))
        except Exception as exc:
            reason = mask_passwords(f"{type(exc).__name__}: {exc}")  # an error may quote a URL with its password
            trial.set_user_attr("fail_reason", reason)
            return Outcome("FAIL", reason=reason)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def end(self, trial: Any, outcome: Outcome) -> None:
        """End the trial's MLflow run with its outcome (Optuna has been told first: a process that dies between
        the two leaves a run that the next worker ends with the trial's state) and report it. A scored trial's
        objective goes on its run and, as the study's history, on the parent run; the run's name then says
        how the trial ended: "trial 3 · fid 38.2", "trial 4 · pruned"."""
        from hcmbench import tracking

        run_id = self.runs.pop(trial.number)
        if outcome.state == "COMPLETE" and outcome.value is not None:
            best = best_trial(trial.study)[1]
            tracking.log_trial_result(self.client, self.parent, run_id, trial.number, outcome.value,
                                      outcome.value if best is None else best)
        summary = outcome.summary if outcome.state == "COMPLETE" else tracking.STATE_WORDS.get(outcome.state, "")
        tracking.end_run(self.client, run_id, outcome.state, outcome.reason or None,
                         tracking.trial_run_name(self.study, self.model, trial.number, summary))
        if self.display is not None:
            number, value, _ = best_trial(trial.study)
            self.display(TrialEnded(trial.number, outcome.state, outcome.value, value, number, outcome.reason,
                                    ended(trial.study.get_trials(deepcopy=False))))
