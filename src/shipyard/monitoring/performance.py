"""Model performance from labels: per model version, and per slice of an input field.

Records and labels join on the request id (one label per served row). Classifiers (a
`label` output, or a `prediction` output the schema calls categorical) get accuracy and
macro precision, recall and F1, plus ROC AUC when a `probabilities` output exists; regressors
(a numeric `prediction` output) get RMSE and MAE. All from `sklearn.metrics`.

Slices: a numeric field is cut into `bins` quantile bins computed over all labelled rows (so
every version is cut at the same edges); a field with few distinct values, or a text field,
is split by value (the 20 most common, the rest as `__other__`); a missing value is
`__missing__`. Every cell carries `n`, its labelled rows. A figure that cannot be computed
is None with a reason: no labelled rows; ROC AUC with a single class among the labels, or
without probabilities.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
import pandas as pd

from shipyard.bundle.manifest import Schema
from shipyard.monitoring.feedback import label_spec
from shipyard.monitoring.recordstore import RecordStore

Kind = Literal["classification", "regression"]
SchemaLookup = Callable[[str, str], Schema | None]
MAX_VALUES = 20
OTHER, MISSING = "__other__", "__missing__"
CLASSIFICATION = ("accuracy", "precision_macro", "recall_macro", "f1_macro", "roc_auc")
REGRESSION = ("rmse", "mae")


@dataclass
class Cell:
    """The figures of one model version on one slice value (slice None: all rows)."""

    model: str
    version: str
    slice: str | None
    value: str | None
    n: int
    metrics: dict[str, float | None] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)


@dataclass
class PerformanceReport:
    deployment: str
    kind: Kind | None
    labelled: int
    cells: list[Cell] = field(default_factory=list)
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def performance(
    store: RecordStore,
    deployment: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    slices: Sequence[str] = (),
    bins: int = 4,
    schema_of: SchemaLookup | None = None,
) -> PerformanceReport:
    """Performance of the predictions made in [since, until) that have a label."""
    labels = store.feedback(deployment, since, until)
    labels = labels[labels["label"].notna()][["request_id", "label"]]
    # Only the labelled records: a month of traffic with a few labels must not be read whole.
    records = (store.records(deployment, since, until, request_ids=labels["request_id"].tolist())
               if len(labels) else pd.DataFrame())
    return measure(records, labels, deployment=deployment, slices=slices, bins=bins,
                   schema_of=schema_of)


def measure(
    records: pd.DataFrame,
    labels: pd.DataFrame,
    *,
    deployment: str = "",
    slices: Sequence[str] = (),
    bins: int = 4,
    schema_of: SchemaLookup | None = None,
) -> PerformanceReport:
    """The report from a `records()` frame and a frame of (request_id, label)."""
    if records.empty or labels.empty:
        return PerformanceReport(deployment, None, 0, reason="no labelled predictions")
    joined = records.merge(labels.drop_duplicates("request_id"), on="request_id")
    joined["y"] = [
        (label[row] if row < len(label) else None) if isinstance(label, list) and rows > 1
        else label
        for label, row, rows in zip(joined["label"], joined["row"], joined["rows"], strict=True)
    ]
    joined = joined[joined["y"].notna()]
    if joined.empty:
        return PerformanceReport(deployment, None, 0, reason="no labelled predictions")
    first = joined.iloc[0]
    kind, predicted = _kind(joined, schema_of(first["model"], first["version"])
                            if schema_of is not None else None)
    if kind is None or predicted is None:
        return PerformanceReport(deployment, None, len(joined),
                                 reason="the records have neither a label nor a prediction output")
    classes = _classes(joined, predicted, schema_of)
    report = PerformanceReport(deployment, kind, len(joined))
    groups = {name: _slice(joined, name, bins) for name in slices}
    for (model, version), rows in joined.groupby(["model", "version"], sort=True):
        report.cells.append(_cell(str(model), str(version), None, None, rows, kind, predicted,
                                  classes))
        for name, values in groups.items():
            if values is None:
                cell = Cell(str(model), str(version), name, None, 0)
                cell.reasons["all"] = f"the records have no input field {name!r} (dropped?)"
                report.cells.append(cell)
                continue
            for value, part in rows.groupby(values.loc[rows.index], sort=True):
                report.cells.append(_cell(str(model), str(version), name, str(value), part,
                                          kind, predicted, classes))
    return report


def _kind(frame: pd.DataFrame, schema: Schema | None) -> tuple[Kind | None, str | None]:
    if "output.label" in frame.columns:
        return "classification", "output.label"
    if "output.prediction" not in frame.columns:
        return None, None
    spec = label_spec(schema)
    if spec is not None and (spec.categories is not None
                             or spec.dtype in ("string", "category", "bool")):
        return "classification", "output.prediction"
    return "regression", "output.prediction"


def _classes(frame: pd.DataFrame, predicted: str, schema_of: SchemaLookup | None) -> list[Any]:
    """The class order of the probability columns: the schema's, else the sorted values."""
    if schema_of is not None:
        first = frame.iloc[0]
        spec = label_spec(schema_of(first["model"], first["version"]))
        if spec is not None and spec.categories:
            return list(spec.categories)
    values = set(frame["y"].tolist()) | set(frame[predicted].dropna().tolist())
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=str)


def _slice(frame: pd.DataFrame, name: str, bins: int) -> pd.Series | None:
    column = f"input.{name}"
    if column not in frame.columns:
        return None
    values = frame[column]
    numeric = pd.to_numeric(values, errors="coerce") if values.dtype != bool else None
    plain_numbers = numeric is not None and numeric.notna().sum() == values.notna().sum()
    if plain_numbers and numeric is not None and numeric.nunique() > bins:
        cut = pd.qcut(numeric, q=bins, duplicates="drop")
        named = cut.astype(str).where(cut.notna(), MISSING)
        return named.astype(str)
    shown = values.map(lambda v: MISSING if v is None or (isinstance(v, float) and math.isnan(v))
                       else str(v))
    top = shown.value_counts().index[:MAX_VALUES]
    return shown.where(shown.isin(top), OTHER)


def _cell(model: str, version: str, name: str | None, value: str | None, rows: pd.DataFrame,
          kind: Kind, predicted: str, classes: list[Any]) -> Cell:
    cell = Cell(model, version, name, value, len(rows))
    names = CLASSIFICATION if kind == "classification" else REGRESSION
    if rows.empty:
        for metric in names:
            cell.metrics[metric] = None
            cell.reasons[metric] = "no labelled predictions"
        return cell
    if kind == "classification":
        _classification(cell, rows, predicted, classes)
    else:
        _regression(cell, rows, predicted)
    return cell


def _classification(cell: Cell, rows: pd.DataFrame, predicted: str, classes: list[Any]) -> None:
    from sklearn import metrics

    truth, guess = _comparable(rows["y"].tolist(), rows[predicted].tolist())
    found = sorted(set(truth) | set(guess), key=str)
    cell.metrics["accuracy"] = float(metrics.accuracy_score(truth, guess))
    for metric, function in (("precision_macro", metrics.precision_score),
                             ("recall_macro", metrics.recall_score),
                             ("f1_macro", metrics.f1_score)):
        cell.metrics[metric] = float(function(truth, guess, labels=found, average="macro",
                                              zero_division=0))
    cell.metrics["roc_auc"], reason = _auc(rows, truth, classes)
    if reason:
        cell.reasons["roc_auc"] = reason


def _comparable(truth: list[Any], guess: list[Any]) -> tuple[list[Any], list[Any]]:
    """Labels and predictions of one type; as text when they differ (1 vs "1")."""
    truth, guess = [_integral(v) for v in truth], [_integral(v) for v in guess]
    if {type(v) for v in truth} | {type(v) for v in guess} <= {int} or all(
        isinstance(v, str) for v in truth + guess
    ):
        return truth, guess
    return [str(v) for v in truth], [str(v) for v in guess]


def _integral(value: Any) -> Any:
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _auc(rows: pd.DataFrame, truth: list[Any], classes: list[Any]) -> tuple[float | None, str]:
    from sklearn import metrics

    if "output.probabilities" not in rows.columns:
        return None, "the model gives no probabilities"
    if len(set(truth)) < 2:
        return None, "needs at least two classes among the labels; got one"
    known = [str(c) for c in classes]
    keep = [i for i, (t, p) in enumerate(zip(truth, rows["output.probabilities"], strict=True))
            if str(t) in known and isinstance(p, list) and len(p) == len(known)
            and all(isinstance(x, int | float) for x in p)]
    if len(keep) < len(truth):
        return None, "probabilities missing, or labels outside the model's classes"
    proba = np.array([rows["output.probabilities"].iloc[i] for i in keep], dtype=np.float64)
    texts = np.array([str(truth[i]) for i in keep])
    try:
        if len(known) == 2:
            return float(metrics.roc_auc_score(texts == known[1], proba[:, 1])), ""
        return float(metrics.roc_auc_score(texts, proba, multi_class="ovr", labels=known)), ""
    except ValueError as exc:
        return None, f"undefined here ({str(exc)[:120]})"


def _regression(cell: Cell, rows: pd.DataFrame, predicted: str) -> None:
    from sklearn import metrics

    truth = pd.to_numeric(rows["y"], errors="coerce").to_numpy(dtype=np.float64)
    guess = pd.to_numeric(rows[predicted], errors="coerce").to_numpy(dtype=np.float64)
    usable = np.isfinite(truth) & np.isfinite(guess)
    if not usable.any():
        for metric in REGRESSION:
            cell.metrics[metric] = None
            cell.reasons[metric] = "no numeric label and prediction pairs"
        return
    if not usable.all():
        cell.reasons["n"] = f"{int((~usable).sum())} rows without a numeric prediction skipped"
    cell.metrics["rmse"] = float(np.sqrt(metrics.mean_squared_error(truth[usable], guess[usable])))
    cell.metrics["mae"] = float(metrics.mean_absolute_error(truth[usable], guess[usable]))


def cell_figures(cell: Mapping[str, Any]) -> dict[str, float | None]:
    """A report cell (its JSON form) as figures a rule can name: `labelled`, `accuracy`...
    overall, and `labelled.FIELD=VALUE`, `accuracy.FIELD=VALUE`... per slice."""
    where = "" if cell["slice"] is None else f".{cell['slice']}={cell['value']}"
    figures: dict[str, float | None] = {f"labelled{where}": float(cell["n"])}
    for metric, value in cell["metrics"].items():
        figures[f"{metric}{where}"] = value
    return figures
