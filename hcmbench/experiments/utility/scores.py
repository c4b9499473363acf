"""The classifier's figures on held-out patients: balanced accuracy and ROC AUC, per slice and per patient."""

from __future__ import annotations

import math

import numpy as np


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for the boolean `positive`, via ranks (Mann–Whitney U,
    ties counted half). NaN when only one class is present."""
    from scipy.stats import rankdata

    scores, positive = np.asarray(scores, dtype=float), np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)  # ties get their average rank
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def macro_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Binary (two columns): the AUC of the second class's probability. More classes: the mean of the
    one-vs-rest AUCs over the classes present (NaN when fewer than two are)."""
    probabilities, labels = np.asarray(probabilities), np.asarray(labels)
    if probabilities.shape[1] == 2:
        return roc_auc(probabilities[:, 1], labels == 1)
    aucs = [roc_auc(probabilities[:, c], labels == c) for c in range(probabilities.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else math.nan


def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean recall over the classes present in `labels` (so chance is 1 / classes, whatever the
    imbalance). NaN for no labels."""
    labels, predictions = np.asarray(labels), np.asarray(predictions)
    classes = np.unique(labels)
    if len(classes) == 0:
        return math.nan
    return float(np.mean([(predictions[labels == c] == c).mean() for c in classes]))


def patient_votes(probabilities: np.ndarray, patients: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per patient (sorted ids): the mean of its slices' probabilities and its predicted class, the
    majority vote of its slices' predictions with ties broken by the mean probability."""
    probabilities, patients = np.asarray(probabilities), np.asarray(patients)
    ids = np.unique(patients)
    means = np.stack([probabilities[patients == p].mean(0) for p in ids])
    predictions = []
    for p, mean in zip(ids, means):
        votes = np.bincount(probabilities[patients == p].argmax(1), minlength=probabilities.shape[1])
        predictions.append(int(np.argmax(np.where(votes == votes.max(), mean, -np.inf))))
    return ids, means, np.array(predictions)


def score(probabilities: np.ndarray, labels: np.ndarray, patients: np.ndarray) -> dict[str, float]:
    """Balanced accuracy and AUC per slice and per patient (a patient's label is its slices')."""
    ids, means, votes = patient_votes(probabilities, patients)
    patient_labels = np.array([labels[patients == p][0] for p in ids])
    return {"slice_bacc": balanced_accuracy(labels, probabilities.argmax(1)),
            "slice_auc": macro_auc(probabilities, labels),
            "patient_bacc": balanced_accuracy(patient_labels, votes),
            "patient_auc": macro_auc(means, patient_labels)}
