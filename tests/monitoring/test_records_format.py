"""The record writer's fast path stores what the plain path stores, on every backend.

The writer serialises inputs with orjson as served and hands rows to the store as tuples
that go to the driver directly (SQLite executemany, PostgreSQL COPY, pyarrow columns); these
tests pin that the stored values, times and error handling are those of the plain path.
"""

from __future__ import annotations

import json
import math
import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from shipyard.monitoring.records import (
    PredictionRecord,
    RecordWriter,
    _dumps,
    _dumps_inputs,
    _json,
    raw_rows,
    rows_of,
)
from shipyard.monitoring.recordstore import (
    _SQLITE_INSERT,
    CHUNK,
    RECORD_COLUMNS,
    RecordStore,
    _parquet_times,
    _sqlite_time,
    _sqlite_times,
    prediction_records,
)
from shipyard.monitoring.redact import plain
from shipyard.registry.database import Database
from shipyard.routing import RecordsConfig

KEY = b"k" * 32
BACKENDS = ["sqlite", "parquet", pytest.param("postgres", marks=pytest.mark.postgres)]


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


BATCHES = {
    "array": np.random.default_rng(0).random((3, 4)),
    "array-one-row": np.round(np.random.default_rng(2).normal(size=(1, 30)) * 100, 4),
    "array-one-empty-row": np.zeros((1, 0)),
    "array-no-rows": np.zeros((0, 3)),
    "array-no-columns": np.zeros((2, 0)),
    "array-bool": np.array([[True, False]]),
    "array-3d": np.random.default_rng(3).random((2, 2, 2)),
    "array-non-finite": np.array([[np.nan, np.inf, -0.0, 1e308]]),
    "array-1d": np.array([1.5, np.nan]),
    "array-int": np.arange(6).reshape(2, 3),
    "array-0d": np.array(3.0),
    "array-fortran": np.asfortranarray(np.random.default_rng(1).random((3, 2))),
    "array-str": np.array([["a", "b"]]),
    "array-object": np.array([[1, "x", None]], dtype=object),
    "text": ["hello", "naïve café ☕", "nul\x00byte", ""],
    "frame": pd.DataFrame({
        "i": pd.array([1, None], dtype="Int64"),
        "f": [1.5, np.nan],
        "b": [True, False],
        "s": ["a", None],
        "t": pd.to_datetime(["2024-01-01", None]),
        "shaped": [np.array([1.0, 2.0]), np.array([3.0, np.nan])],
        "c": pd.Categorical(["x", "y"]),
        3: [b"\x01", b"\x02"],
    }),
    "frame-empty": pd.DataFrame({"x": []}),
    "columns": {"x": [1, 2], "y": np.array([0.5, np.nan])},
    "row-dicts": [{"a": np.float32(1.5), "b": (1, "x")}, {"a": None, "b": datetime(2024, 1, 1)}],
    "none": None,
}


@pytest.mark.parametrize("name", list(BATCHES))
def test_fast_rows_serialise_to_the_plain_rows(name: str) -> None:
    batch = BATCHES[name]
    plain_rows = json.loads(_json(rows_of(batch)))
    assert json.loads(_dumps(raw_rows(batch))) == plain_rows
    assert json.loads(_dumps_inputs(batch)) == plain_rows


def test_float32_values_keep_their_float32_value() -> None:
    """orjson writes a float32 as the shortest text that reads back as the same float32
    (0.1, where the plain path writes its float64 widening 0.10000000149011612)."""
    batch = np.array([[0.1, 1 / 3, 3.4e38, 1e-45]], dtype=np.float32)
    stored = json.loads(_dumps(raw_rows(batch)))[0]["input"]
    assert np.array_equal(np.array(stored, dtype=np.float32), batch[0])


def test_pandas_missing_values_are_stored_as_null() -> None:
    assert plain([pd.NA, pd.NaT]) == [None, None]


def test_sqlite_times_are_sqlalchemys_text(tmp_path: Path) -> None:
    database = Database(f"sqlite:///{tmp_path / 'r.db'}", timeout_s=5)
    bind = prediction_records.c.time.type._cached_bind_processor(database.engine.dialect)
    rng = random.Random(4)
    values = [rng.uniform(-1e9, 4e9) for _ in range(5000)]
    values += [math.floor(rng.uniform(0, 2e9)) + 0.9999995 for _ in range(500)]
    values += [1.5e9 + k / 1e6 + 0.5e-6 for k in range(500)]  # halves: rounded to even
    expected = [bind(datetime.fromtimestamp(value, UTC)) for value in values]
    assert _sqlite_times(values) == expected  # a batch at once, through NumPy
    assert [_sqlite_time(value) for value in values] == expected
    assert [_sqlite_time(datetime.fromtimestamp(value, UTC)) for value in values] == expected
    assert [t.replace(tzinfo=UTC) if t.tzinfo is None else t
            for t in _parquet_times(values).to_pylist()] == [
        datetime.fromtimestamp(value, UTC) for value in values
    ]
    database.close()


def test_the_insert_names_the_record_columns_in_order() -> None:
    named = re.search(r"\(([^)]*)\) VALUES", _SQLITE_INSERT)
    assert named is not None
    assert tuple(c.strip() for c in named.group(1).split(",")) == RECORD_COLUMNS


def test_rows_as_mappings_are_still_taken(store: RecordStore) -> None:
    now = time.time()
    row = {
        "deployment": "fraud", "request_id": "m1", "time": datetime.fromtimestamp(now, UTC),
        "variant": "a", "model": "m", "version": "1", "latency_ms": 1.5, "rows": 1,
        "inputs": '[{"x":1}]', "outputs": '{"label":[0]}',
    }
    store.write([row, (*(row[c] for c in RECORD_COLUMNS[:1]), "t1", now,
                       *(row[c] for c in RECORD_COLUMNS[3:]))])
    first, second = store.get("fraud", "m1"), store.get("fraud", "t1")
    assert first is not None and second is not None
    assert first.inputs == [{"x": 1}] and second.outputs == {"label": [0]}
    assert abs(first.time - now) < 1e-5 and abs(second.time - now) < 1e-5


def test_a_row_the_database_refuses_costs_only_itself(store: RecordStore) -> None:
    """On PostgreSQL the COPY's data error reaches the writer as SQLAlchemy's, and the batch
    is written row by row."""
    w = RecordWriter(store, RecordsConfig(), deployment="fraud", key=KEY, interval_s=0.02,
                     backoff_s=0.01, purge_every_s=None)
    for i, variant in enumerate(["a", "v" * 65, "b"]):  # 65 > the column's 64 characters
        w.submit(PredictionRecord.from_batch(
            request_id=f"r{i}", time=time.time(), deployment="fraud", variant=variant,
            model="m", version="1", batch=np.ones((1, 2)), outputs={"label": [1]},
            latency_ms=1.0,
        ))
    assert w.close(10)
    ids = set(store.records("fraud", columns=["request_id"])["request_id"])
    assert {"r0", "r2"} <= ids
    if store.database.url.get_backend_name() == "postgresql" and store.parquet_dir is None:
        assert ids == {"r0", "r2"} and w.stats.failed == 1 and w.stats.written == 2


def test_unstorable_times_cost_only_their_record(store: RecordStore) -> None:
    w = RecordWriter(store, RecordsConfig(), deployment="fraud", key=KEY, interval_s=0.02,
                     purge_every_s=None)
    for request_id, at in [("nan", math.nan), ("huge", 1e300), ("old", -1e9), ("now", None)]:
        w.submit(PredictionRecord.from_batch(
            request_id=request_id, time=time.time() if at is None else at, deployment="fraud",
            variant="a", model="m", version="1", batch=np.ones((1, 2)),
            outputs={"label": [1]}, latency_ms=1.0,
        ))
    assert w.close(10)
    assert w.stats.rejected == 2 and w.stats.written == 2
    old = store.get("fraud", "old")
    assert old is not None and old.time == -1e9


def test_a_paced_write_gives_way_between_chunks_and_keeps_every_row(store: RecordStore) -> None:
    """The writer thread's pace (shipyard.cpu) is called between chunks of one transaction:
    under SCHED_BATCH a request must not wait for a whole batch of inserts."""
    now = time.time()
    rows = [("fraud", f"p{i}", now, "a", "m", "1", 1.0, 1, "[1]", '{"label":[0]}')
            for i in range(2 * CHUNK + 44)]
    paces: list[int] = []
    store.write(rows, pace=lambda: paces.append(len(paces)))
    stored = store.records("fraud", columns=["request_id"])["request_id"]
    assert sorted(stored) == sorted(f"p{i}" for i in range(len(rows)))
    if store.parquet_dir is None:  # one Parquet file is written by Arrow in one call
        assert paces == [0, 1]
