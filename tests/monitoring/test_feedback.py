"""Feedback: one item or a file of them; every bad item a clear 4xx with nothing written."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from shipyard.bundle.manifest import FieldSpec, Schema
from shipyard.errors import ConflictError, GoneError, NotFoundError, SchemaError, UserError
from shipyard.monitoring.feedback import import_feedback, label_spec, submit_feedback
from shipyard.monitoring.records import PredictionRecord, RecordWriter
from shipyard.monitoring.recordstore import RecordStore
from shipyard.registry.database import Database
from shipyard.routing import RecordsConfig

BACKENDS = ["sqlite", "parquet", pytest.param("postgres", marks=pytest.mark.postgres)]
NOW = datetime(2030, 1, 10, tzinfo=UTC)
SCHEMAS = {
    ("clf", "1"): Schema(
        outputs=[
            FieldSpec(name="label", dtype="int64", categories=[0, 1]),
            FieldSpec(name="probabilities", dtype="float64", shape=[2]),
        ]
    ),
    ("species", "1"): Schema(
        outputs=[
            FieldSpec(name="label", dtype="string", categories=["setosa", "virginica"]),
        ]
    ),
    ("reg", "1"): Schema(outputs=[FieldSpec(name="prediction", dtype="float64")]),
}


def schema_of(model: str, version: str) -> Schema | None:
    return SCHEMAS.get((model, version))


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_schema_url")
    else:
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    database = Database(url, timeout_s=5)
    parquet = tmp_path / "records" if request.param == "parquet" else None
    opened = RecordStore(database, parquet_dir=parquet)
    writer = RecordWriter(
        opened, RecordsConfig(), deployment="d", key=b"k" * 32, purge_every_s=None
    )
    served = [
        ("c1", "clf", 1, NOW - timedelta(hours=1)),
        ("c2", "clf", 1, NOW - timedelta(hours=1)),
        ("multi", "clf", 3, NOW - timedelta(hours=1)),
        ("s1", "species", 1, NOW - timedelta(hours=1)),
        ("r1", "reg", 1, NOW - timedelta(hours=1)),
        ("old", "clf", 1, NOW - timedelta(days=40)),
        ("nos", "unknown-model", 1, NOW - timedelta(hours=1)),
    ]
    for request_id, model, rows, at in served:
        writer.submit(
            PredictionRecord.from_batch(
                request_id=request_id,
                time=at.timestamp(),
                deployment="d",
                variant="a",
                model=model,
                version="1",
                batch=pd.DataFrame({"x": np.arange(rows)}),
                outputs={"label": np.zeros(rows, dtype=int)},
                latency_ms=1.0,
            )
        )
    writer.close()
    try:
        yield opened
    finally:
        database.close()


def give(store: RecordStore, request_id: str, **kwargs: object):  # type: ignore[no-untyped-def]
    return submit_feedback(
        store, "d", request_id, retention_days=30, schema_of=schema_of, now=NOW, **kwargs
    )  # type: ignore[arg-type]


def test_a_label_is_stored_and_joined_by_request_id(store: RecordStore) -> None:
    stored = give(store, "c1", label=1, comment="confirmed by the analyst")
    assert stored.label == 1 and stored.comment == "confirmed by the analyst"
    frame = store.feedback("d")
    assert frame.to_dict("records")[0]["label"] == 1
    assert frame.loc[0, "record_time"] == NOW - timedelta(hours=1)


def test_human_feedback_without_a_label_can_come_many_times(store: RecordStore) -> None:
    give(store, "c1", thumbs=True)
    give(store, "c1", score=4.5, comment="naïve ☕ fine")
    give(store, "c1", label=0)
    frame = store.feedback("d")
    assert list(frame["thumbs"].dropna()) == [True]
    assert frame["score"].dropna().tolist() == [4.5]
    assert frame["comment"].dropna().tolist() == ["naïve ☕ fine"]


@pytest.mark.parametrize(
    ("request_id", "kwargs", "error", "status"),
    [
        ("nope", {"label": 1}, NotFoundError, 404),
        ("old", {"label": 1}, GoneError, 410),
        ("c1", {"label": 2}, SchemaError, 422),  # not a class
        ("c1", {"label": "1"}, SchemaError, 422),  # a string for an integer output
        ("c1", {"label": True}, SchemaError, 422),  # a boolean is not an integer here
        ("c1", {"label": 1.5}, SchemaError, 422),
        ("c1", {"label": [1, 0]}, SchemaError, 422),  # two labels for one row
        ("multi", {"label": 1}, SchemaError, 422),  # three rows need three labels
        ("multi", {"label": [1, 0]}, SchemaError, 422),
        ("s1", {"label": "rose"}, SchemaError, 422),
        ("r1", {"label": float("nan")}, SchemaError, 422),
        ("r1", {"label": float("inf")}, SchemaError, 422),
        ("r1", {"label": "3.5"}, SchemaError, 422),
        ("c1", {}, UserError, 400),  # nothing in it
        ("c1", {"thumbs": "maybe"}, UserError, 400),
        ("c1", {"score": float("nan")}, UserError, 400),
        ("c1", {"score": True}, UserError, 400),
        ("c1", {"comment": "x" * 10_001}, UserError, 400),
        ("c1", {"comment": "nul\x00"}, UserError, 400),
        ("c1", {"comment": "lone \ud800"}, UserError, 400),
        ("", {"label": 1}, UserError, 400),
    ],
)
def test_bad_feedback_is_a_clear_4xx_and_writes_nothing(
    store: RecordStore, request_id: str, kwargs: dict, error: type[Exception], status: int
) -> None:
    with pytest.raises(error) as raised:
        give(store, request_id, **kwargs)
    assert raised.value.status == status  # type: ignore[attr-defined]
    assert raised.value.hint  # type: ignore[attr-defined]
    assert store.feedback("d").empty


def test_a_second_label_is_a_conflict_and_the_first_stays(store: RecordStore) -> None:
    give(store, "c1", label=1)
    with pytest.raises(ConflictError):
        give(store, "c1", label=0)
    assert store.feedback("d")["label"].tolist() == [1]


def test_racing_labels_store_exactly_one(store: RecordStore) -> None:
    outcomes: list[str] = []

    def label(value: int) -> None:
        try:
            give(store, "c2", label=value)
            outcomes.append("ok")
        except ConflictError:
            outcomes.append("conflict")

    threads = [threading.Thread(target=label, args=(i % 2,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["conflict"] * 7 + ["ok"]
    assert len(store.feedback("d")) == 1


def test_labels_are_converted_where_the_meaning_is_plain(store: RecordStore) -> None:
    assert give(store, "c1", label=1.0).label == 1  # JSON writers send 1.0 for 1
    assert give(store, "multi", label=[0, 1, 1]).label == [0, 1, 1]
    assert give(store, "s1", label=["virginica"]).label == "virginica"
    assert give(store, "r1", label=3).label == 3.0


def test_without_a_schema_any_json_scalar_is_taken(store: RecordStore) -> None:
    assert give(store, "nos", label="anything").label == "anything"


def test_label_spec_prefers_label_then_prediction() -> None:
    assert label_spec(SCHEMAS[("clf", "1")]).name == "label"  # type: ignore[union-attr]
    assert label_spec(SCHEMAS[("reg", "1")]).name == "prediction"  # type: ignore[union-attr]
    assert label_spec(Schema(outputs=[FieldSpec(name="probabilities", dtype="float64")])) is None
    assert label_spec(None) is None


def test_purge_removes_feedback_with_its_records(store: RecordStore) -> None:
    give(store, "c1", label=1)
    records, feedback = store.purge("d", NOW)
    assert (records, feedback) == (7, 1)
    assert store.feedback("d").empty and store.get("d", "c1") is None


# -- bulk import -------------------------------------------------------------------------------


ROWS = [
    {"request_id": "c1", "label": "1", "thumbs": "", "score": "", "comment": ""},
    {"request_id": "c2", "label": "", "thumbs": "up", "score": "3", "comment": "ok"},
    {"request_id": "nope", "label": "1", "thumbs": "", "score": "", "comment": ""},
    {"request_id": "old", "label": "0", "thumbs": "", "score": "", "comment": ""},
    {"request_id": "s1", "label": "rose", "thumbs": "", "score": "", "comment": ""},
    {"request_id": "multi", "label": "[1, 0, 1]", "thumbs": "", "score": "", "comment": ""},
    {"request_id": "c1", "label": "0", "thumbs": "", "score": "", "comment": ""},  # duplicate
    {"request_id": "r1", "label": "2.5", "thumbs": "", "score": "", "comment": ""},
]


def check_report(store: RecordStore, report: dict) -> None:
    assert report["rows"] == 8 and report["written"] == 4 and report["failed"] == 4
    codes = {error["row"]: error["code"] for error in report["errors"]}
    assert codes == {3: "not_found", 4: "gone", 5: "schema_violation", 7: "conflict"}
    labels = dict(zip(store.feedback("d")["request_id"], store.feedback("d")["label"]))
    assert labels["c1"] == 1 and labels["multi"] == [1, 0, 1] and labels["r1"] == 2.5


def test_import_csv_stores_good_rows_and_reports_bad_ones(
    store: RecordStore, tmp_path: Path
) -> None:
    path = tmp_path / "feedback.csv"
    pd.DataFrame(ROWS).to_csv(path, index=False)
    report = import_feedback(store, "d", path, retention_days=30, schema_of=schema_of, now=NOW)
    check_report(store, report.to_dict())


def test_import_json_lines(store: RecordStore, tmp_path: Path) -> None:
    lines = []
    for row in ROWS:
        item: dict = {"request_id": row["request_id"]}
        if row["label"]:
            item["label"] = (
                json.loads(row["label"]) if row["label"][0] in "[0123456789" else row["label"]
            )
        if row["thumbs"]:
            item["thumbs"] = True
        if row["score"]:
            item["score"] = float(row["score"])
        lines.append(json.dumps(item))
    path = tmp_path / "feedback.jsonl"
    path.write_text("\n".join(lines) + "\n\n")
    report = import_feedback(store, "d", path, retention_days=30, schema_of=schema_of, now=NOW)
    check_report(store, report.to_dict())


def test_import_parquet(store: RecordStore, tmp_path: Path) -> None:
    path = tmp_path / "feedback.parquet"
    table = pa.table(
        {
            "request_id": ["c1", "r1", "nope", "c2"],
            "label": [1.0, None, 1.0, 7.0],  # null = no label; 7 is not a class
            "score": [None, 0.5, None, None],
        }
    )
    pq.write_table(table, path)
    report = import_feedback(store, "d", path, retention_days=30, schema_of=schema_of, now=NOW)
    assert (report.written, report.failed) == (2, 2)
    assert [e["code"] for e in report.errors] == ["not_found", "schema_violation"]


def test_import_refuses_a_broken_file_as_a_whole(store: RecordStore, tmp_path: Path) -> None:
    path = tmp_path / "feedback.csv"
    path.write_bytes(b"request_id,label\nc1,1\nc2,\xff\xfe\n")
    with pytest.raises(UserError, match="Could not read"):
        import_feedback(store, "d", path, retention_days=30, schema_of=schema_of, now=NOW)
    assert store.feedback("d").empty
    for name, content in (("f.txt", b"x"), ("f.csv", b"label\n1\n")):
        (tmp_path / name).write_bytes(content)
        with pytest.raises(UserError):
            import_feedback(store, "d", tmp_path / name, retention_days=30, now=NOW)
    with pytest.raises(NotFoundError):
        import_feedback(store, "d", tmp_path / "missing.csv", retention_days=30, now=NOW)


def test_import_reports_malformed_lines_and_unknown_fields(
    store: RecordStore, tmp_path: Path
) -> None:
    path = tmp_path / "feedback.jsonl"
    path.write_text(
        '{"request_id": "c1", "label": 1}\nnot json\n[1]\n{"request_id": "c2", "lable": 1}\n'
    )
    report = import_feedback(store, "d", path, retention_days=30, schema_of=schema_of, now=NOW)
    assert (report.rows, report.written, report.failed) == (4, 1, 3)
    assert [e["row"] for e in report.errors] == [2, 3, 4]


def test_import_of_many_rows_is_quick(store: RecordStore, tmp_path: Path) -> None:
    path = tmp_path / "feedback.csv"
    pd.DataFrame({"request_id": ["c1", "c2"] * 500, "thumbs": ["up"] * 1000}).to_csv(
        path, index=False
    )
    start = time.perf_counter()
    report = import_feedback(store, "d", path, retention_days=30, schema_of=schema_of, now=NOW)
    assert report.written == 1000 and time.perf_counter() - start < 20
