"""The evaluation report: metrics measured on held-out data, with their thresholds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np

from shipyard.bundle.manifest import Evaluation, Metric
from shipyard.errors import ManifestError

# Metrics where smaller is better; everything else is "higher is better".
LOWER_IS_BETTER = {"rmse", "mae", "log_loss", "mse"}


def classification_metrics(
    y_true: Any, labels: Any, probabilities: Any | None, classes: Sequence[Any] | None
) -> dict[str, float]:
    from sklearn import metrics

    y_true = np.asarray(y_true)
    labels = np.asarray(labels)
    found = {
        "accuracy": float(metrics.accuracy_score(y_true, labels)),
        "f1_macro": float(metrics.f1_score(y_true, labels, average="macro", zero_division=0)),
        "precision_macro": float(
            metrics.precision_score(y_true, labels, average="macro", zero_division=0)
        ),
        "recall_macro": float(
            metrics.recall_score(y_true, labels, average="macro", zero_division=0)
        ),
    }
    if probabilities is not None and classes is not None and len(set(y_true.tolist())) > 1:
        proba = np.asarray(probabilities, dtype=np.float64)
        try:
            if proba.shape[1] == 2:
                found["roc_auc"] = float(metrics.roc_auc_score(y_true == classes[1], proba[:, 1]))
            else:
                found["roc_auc"] = float(
                    metrics.roc_auc_score(y_true, proba, multi_class="ovr", labels=list(classes))
                )
            found["log_loss"] = float(metrics.log_loss(y_true, proba, labels=list(classes)))
        except ValueError:
            pass  # a class absent from y_true: AUC is undefined, the rest still stands
    return found


def regression_metrics(y_true: Any, predictions: Any) -> dict[str, float]:
    from sklearn import metrics

    y_true = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(predictions, dtype=np.float64).reshape(len(y_true), -1)[:, 0]
    return {
        "rmse": float(np.sqrt(metrics.mean_squared_error(y_true, pred))),
        "mae": float(metrics.mean_absolute_error(y_true, pred)),
        "r2": float(metrics.r2_score(y_true, pred)),
    }


def report(
    found: Mapping[str, float],
    *,
    data: str,
    rows: int,
    thresholds: Mapping[str, float] | None = None,
) -> Evaluation:
    thresholds = dict(thresholds or {})
    metric_list = [
        Metric(
            name=name,
            value=value,
            threshold=thresholds.pop(name, None),
            higher_is_better=name not in LOWER_IS_BETTER,
        )
        for name, value in found.items()
    ]
    if thresholds:
        raise ManifestError(
            f"Got thresholds for {', '.join(sorted(thresholds))}, which were not measured.",
            hint=f"Use thresholds among: {', '.join(found)}.",
            field="thresholds",
        )
    return Evaluation(data=data, rows=rows, metrics=metric_list, date=datetime.now(UTC))
