"""Performance per model version and slice, from real models, records and labels."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn import metrics
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from shipyard.bundle.manifest import FieldSpec, Schema
from shipyard.monitoring.feedback import submit_feedback
from shipyard.monitoring.performance import measure, performance
from shipyard.monitoring.records import PredictionRecord, RecordWriter
from shipyard.monitoring.recordstore import RecordStore
from shipyard.registry.database import Database
from shipyard.routing import RecordsConfig

BACKENDS = ["sqlite", "parquet", pytest.param("postgres", marks=pytest.mark.postgres)]
NOW = datetime(2030, 1, 10, tzinfo=UTC)
CLASSIFIER = Schema(
    outputs=[
        FieldSpec(name="label", dtype="int64", categories=[0, 1]),
        FieldSpec(name="probabilities", dtype="float64", shape=[2]),
    ]
)
REGRESSOR = Schema(outputs=[FieldSpec(name="prediction", dtype="float64")])


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_schema_url")
    else:
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    database = Database(url, timeout_s=5)
    parquet = tmp_path / "records" if request.param == "parquet" else None
    try:
        yield RecordStore(database, parquet_dir=parquet)
    finally:
        database.close()


def serve(
    store: RecordStore,
    model: object,
    frame: pd.DataFrame,
    y: np.ndarray,
    version: str,
    *,
    name: str,
    rows_per_request: int = 3,
    label_every: int = 1,
) -> None:
    """Record predictions of `model` on `frame` and label them, as a server and users would."""
    writer = RecordWriter(
        store,
        RecordsConfig(redact={"patient": "hash"}),
        deployment="d",
        key=b"k" * 32,
        purge_every_s=None,
    )
    requests = []
    for number, start in enumerate(range(0, len(frame), rows_per_request)):
        batch = frame.iloc[start : start + rows_per_request]
        features = batch.drop(columns=["patient"])
        if name == "cancer":
            outputs = {
                "label": model.predict(features),
                "probabilities": model.predict_proba(features),
            }
        else:
            outputs = {"prediction": model.predict(features)}  # type: ignore[attr-defined]
        request_id = f"{version}-{number}"
        writer.submit(
            PredictionRecord.from_batch(
                request_id=request_id,
                time=(NOW - timedelta(minutes=5)).timestamp(),
                deployment="d",
                variant="a",
                model=name,
                version=version,
                batch=batch,
                outputs=outputs,
                latency_ms=1.0,
            )
        )
        requests.append((request_id, y[start : start + rows_per_request]))
    writer.close()
    schema = CLASSIFIER if name == "cancer" else REGRESSOR
    for number, (request_id, truth) in enumerate(requests):
        if number % label_every == 0:
            submit_feedback(
                store,
                "d",
                request_id,
                label=truth.tolist(),
                retention_days=30,
                schema_of=lambda m, v: schema,
                now=NOW,
            )


@pytest.fixture(scope="module")
def cancer() -> tuple[pd.DataFrame, np.ndarray, object, object]:
    data = load_breast_cancer(as_frame=True)
    frame = data.data[["mean radius", "mean texture", "worst area"]].copy()
    y = data.target.to_numpy()
    good = make_pipeline(StandardScaler(), LogisticRegression()).fit(frame[:300], y[:300])
    weak = make_pipeline(StandardScaler(), LogisticRegression()).fit(
        frame[["mean texture"]][:300].assign(**{"mean radius": 0.0, "worst area": 0.0})[
            frame.columns
        ],
        y[:300],
    )
    test = frame[300:].reset_index(drop=True)
    test["patient"] = [f"patient-{i}@example.com" for i in range(len(test))]
    test["site"] = np.where(np.arange(len(test)) % 3 == 0, "lisbon", "porto")
    return test, y[300:], good, weak


def test_classifier_figures_match_sklearn_per_version(store: RecordStore, cancer) -> None:  # type: ignore[no-untyped-def]
    frame, y, good, weak = cancer
    features = frame.drop(columns=["patient"])
    serve(store, _Drop(good), frame, y, "1.0", name="cancer")
    serve(store, _Drop(weak), frame, y, "2.0", name="cancer")
    report = performance(
        store,
        "d",
        slices=["mean radius", "site", "patient", "missing"],
        schema_of=lambda m, v: CLASSIFIER,
    )
    assert report.kind == "classification" and report.labelled == 2 * len(y)
    overall = {c.version: c for c in report.cells if c.slice is None}
    for version, model in (("1.0", good), ("2.0", weak)):
        cell = overall[version]
        predicted = model.predict(features.drop(columns=["site"]))
        assert cell.n == len(y)
        assert cell.metrics["accuracy"] == pytest.approx(metrics.accuracy_score(y, predicted))
        assert cell.metrics["f1_macro"] == pytest.approx(
            metrics.f1_score(y, predicted, average="macro")
        )
        assert cell.metrics["roc_auc"] == pytest.approx(
            metrics.roc_auc_score(y, model.predict_proba(features.drop(columns=["site"]))[:, 1])
        )
    assert overall["1.0"].metrics["accuracy"] > overall["2.0"].metrics["accuracy"]  # type: ignore[operator]
    radius = [c for c in report.cells if c.slice == "mean radius" and c.version == "1.0"]
    assert len(radius) == 4 and sum(c.n for c in radius) == len(y)  # quartile bins
    sites = {c.value: c.n for c in report.cells if c.slice == "site" and c.version == "1.0"}
    assert sites == {"lisbon": 90, "porto": 179}
    hashed = [c for c in report.cells if c.slice == "patient" and c.version == "1.0"]
    assert len(hashed) == 21 and "__other__" in {c.value for c in hashed}  # top 20 + the rest
    assert all(c.value is None or not c.value.startswith("patient-") for c in hashed)
    missing = [c for c in report.cells if c.slice == "missing"]
    assert missing and all("no input field" in c.reasons["all"] for c in missing)
    assert report.to_json()["cells"][0]["version"] == "1.0"


class _Drop:
    """The model behind a server: takes the frame without the columns it was not trained on."""

    def __init__(self, model: object) -> None:
        self.model = model

    def _x(self, frame: pd.DataFrame) -> pd.DataFrame:
        return frame.drop(columns=[c for c in ("site",) if c in frame.columns])

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict(self._x(frame))  # type: ignore[attr-defined]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(self._x(frame))  # type: ignore[attr-defined]


def test_regressor_figures_match_sklearn(store: RecordStore) -> None:
    data = load_diabetes(as_frame=True)
    frame, y = data.data[["age", "bmi", "bp"]], data.target.to_numpy()
    model = LinearRegression().fit(frame[:300], y[:300])
    test = frame[300:].reset_index(drop=True).assign(patient="x")
    serve(
        store, _Drop(model), test, y[300:], "1", name="diabetes", rows_per_request=1, label_every=2
    )
    report = performance(store, "d", slices=["bmi"], schema_of=lambda m, v: REGRESSOR)
    cell = next(c for c in report.cells if c.slice is None)
    labelled = np.arange(len(test)) % 2 == 0
    predicted = model.predict(test.drop(columns=["patient"]))[labelled]
    assert report.kind == "regression" and cell.n == labelled.sum()
    assert cell.metrics["rmse"] == pytest.approx(
        np.sqrt(metrics.mean_squared_error(y[300:][labelled], predicted))
    )
    assert cell.metrics["mae"] == pytest.approx(
        metrics.mean_absolute_error(y[300:][labelled], predicted)
    )


def test_no_labels_is_a_reason_not_a_crash(store: RecordStore) -> None:
    report = performance(store, "d")
    assert report.kind is None and report.reason == "no labelled predictions"
    assert report.to_json()["cells"] == []


def records_frame(
    truth: list, predicted: list, proba: list | None = None, inputs: list | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = len(truth)
    frame = pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "model": "m",
            "version": "1",
            "rows": 1,
            "row": 0,
            "output.label": predicted,
        }
    )
    if proba is not None:
        frame["output.probabilities"] = proba
    if inputs is not None:
        frame["input.x"] = inputs
    return frame, pd.DataFrame({"request_id": frame["request_id"], "label": truth})


def test_one_class_leaves_auc_undefined_with_a_reason() -> None:
    records, labels = records_frame([1, 1, 1], [1, 0, 1], [[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    cell = measure(records, labels).cells[0]
    assert cell.metrics["accuracy"] == pytest.approx(2 / 3)
    assert cell.metrics["roc_auc"] is None and "one" in cell.reasons["roc_auc"]


def test_nasty_slice_values_stay_defined() -> None:
    inputs = [np.nan, 1.0, 1.0, 1.0, "naïve", None]
    records, labels = records_frame(
        ["a", "b", "a", "b", "a", "b"], ["a", "a", "a", "b", "b", "b"], inputs=inputs
    )
    report = measure(records, labels, slices=["x"])
    values = {c.value: c.n for c in report.cells if c.slice == "x"}
    assert values == {"__missing__": 2, "1.0": 3, "naïve": 1}
    assert all(c.metrics["roc_auc"] is None for c in report.cells)


def test_constant_numeric_slice_is_one_cell() -> None:
    records, labels = records_frame([0, 1, 0, 1, 1], [0, 1, 1, 1, 0], inputs=[5.0] * 5)
    cells = [c for c in measure(records, labels, slices=["x"]).cells if c.slice == "x"]
    assert [(c.value, c.n) for c in cells] == [("5.0", 5)]


def test_labels_and_predictions_of_different_types_are_compared_as_text() -> None:
    records, labels = records_frame(["1", "0", 1.0], [1, 0, 1])
    assert measure(records, labels).cells[0].metrics["accuracy"] == 1.0


def test_performance_reads_only_labelled_records_and_agrees_with_reading_all(
    store: RecordStore, cancer, monkeypatch: pytest.MonkeyPatch  # type: ignore[no-untyped-def]
) -> None:
    """A month of traffic with a few labels must not be read whole every few seconds: the
    labelled records are fetched by request id (in chunks), with the same report."""
    import shipyard.monitoring.recordstore as recordstore

    monkeypatch.setattr(recordstore, "IDS_PER_QUERY", 4)  # several chunks on a small set
    frame, y, good, _ = cancer
    serve(store, _Drop(good), frame, y, "1", name="cancer", label_every=7)
    labels = store.feedback("d")
    wanted = labels["request_id"].tolist()
    picked = store.records("d", request_ids=[*wanted, "no-such-request"])
    everything = store.records("d")
    assert set(picked["request_id"]) == set(wanted)
    assert len(set(everything["request_id"])) > 5 * len(wanted)
    assert picked["time"].is_monotonic_increasing
    assert store.records("d", request_ids=[]).empty
    fast = performance(store, "d", schema_of=lambda m, v: CLASSIFIER).to_json()
    slow = measure(everything, labels[labels["label"].notna()][["request_id", "label"]],
                   deployment="d", schema_of=lambda m, v: CLASSIFIER).to_json()
    assert fast == slow and fast["cells"]
