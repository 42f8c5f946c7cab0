"""The record writer's fast path stores what the plain path stores, on every backend.

The writer serialises inputs with orjson as served and hands rows to the store as tuples
that go to the driver directly (SQLite executemany, PostgreSQL COPY, pyarrow columns); these
tests pin that the stored values, times and error handling are those of the plain path.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import func, select
from sqlalchemy import inspect as sqlalchemy_inspect

from shipyard.monitoring.records import (
    ROWS_PER_CHUNK,
    Answered,
    PredictionRecord,
    RecordWriter,
    _dumps,
    _dumps_inputs,
    _json,
    raw_rows,
    rows_of,
)
from shipyard.monitoring.recordstore import (
    BLOCK,
    RECORD_COLUMNS,
    RecordStore,
    _parquet_times,
    _times_us,
    packable,
    prediction_blocks,
    prediction_index,
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


def test_record_times_keep_their_microsecond() -> None:
    """Stored times are whole microseconds since the epoch, rounded as fromtimestamp rounds a
    float (half to even): a batch goes through NumPy, a datetime is taken exactly."""
    rng = random.Random(4)
    values = [rng.uniform(-1e9, 4e9) for _ in range(5000)]
    values += [math.floor(rng.uniform(0, 2e9)) + 0.9999995 for _ in range(500)]
    values += [1.5e9 + k / 1e6 + 0.5e-6 for k in range(500)]  # halves: rounded to even
    expected = [datetime.fromtimestamp(value, UTC) for value in values]
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert [epoch + timedelta(microseconds=m) for m in _times_us(values)] == expected
    assert _times_us(expected) == _times_us(values)
    assert _times_us([datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)]) == [
        253_402_300_799_999_999]
    with pytest.raises(ValueError, match="years 1 to 9999"):
        _times_us([1e300])
    with pytest.raises(ValueError, match="timezone-aware"):
        _times_us([datetime(2024, 1, 1)])
    assert [t.replace(tzinfo=UTC) if t.tzinfo is None else t
            for t in _parquet_times(values).to_pylist()] == expected


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
    """The writer thread's pace (shipyard.cpu) is called between blocks of one transaction:
    under SCHED_BATCH a request must not wait for a whole batch of inserts."""
    now = time.time()
    rows = [("fraud", f"p{i}", now, "a", "m", "1", 1.0, 1, "[1]", '{"label":[0]}')
            for i in range(2 * BLOCK + 44)]
    paces: list[int] = []
    store.write(rows, pace=lambda: paces.append(len(paces)))
    stored = store.records("fraud", columns=["request_id"])["request_id"]
    assert sorted(stored) == sorted(f"p{i}" for i in range(len(rows)))
    if store.parquet_dir is None:  # one Parquet file is written by Arrow in one call
        assert paces == [0, 1]

# -- blocks: the database keeps records BLOCK at a time, each request id in an index ----------
# Records of one variant and version go to `prediction_blocks` up to BLOCK at a time, each
# request id to `prediction_index`; served arrays of a packed type are stored as their bytes.
# A record must read back as the plain path writes it whatever the layout; a reused request
# id keeps its first record within a block and across blocks; a purge cuts a block that
# straddles the cut-off; a feedback lookup is never served a stale block.

DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=DATABASES)
def db_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RecordStore]:
    if request.param == "postgres":
        url = request.getfixturevalue("postgres_schema_url")
    else:
        url = f"sqlite:///{tmp_path / 'registry.db'}"
    database = Database(url, timeout_s=5)
    try:
        yield RecordStore(database)
    finally:
        database.close()


def _record(request_id: str, batch: object, at: float | None = None,
            variant: str = "a") -> PredictionRecord:
    return PredictionRecord.from_batch(
        request_id=request_id, time=time.time() if at is None else at, deployment="fraud",
        variant=variant, model="m", version="1", batch=batch, outputs={"label": [1]},
        latency_ms=1.0,
    )


def _write(store: RecordStore, records: list[PredictionRecord]) -> RecordWriter:
    writer = RecordWriter(store, RecordsConfig(), deployment="fraud", key=KEY,
                          interval_s=0.02, purge_every_s=None)
    for record in records:
        writer.submit(record)
    assert writer.close(20)
    return writer


def _counts(store: RecordStore) -> tuple[int, int, int]:
    """(blocks, records the blocks hold, index entries) of deployment fraud."""
    b, i = prediction_blocks, prediction_index
    with store.database.read() as conn:
        blocks, held = conn.execute(
            select(func.count(), func.coalesce(func.sum(b.c.count), 0))
            .where(b.c.deployment == "fraud")).one()
        indexed = conn.execute(select(func.count()).select_from(i)
                               .where(i.c.deployment == "fraud")).scalar_one()
    return blocks, held, indexed


def test_every_layout_reads_back_as_the_plain_path_writes_it(db_store: RecordStore) -> None:
    """Packed arrays and JSON text side by side, in one block and in blocks of their own."""
    names = list(BATCHES)
    alone = [_record(f"alone-{name}", BATCHES[name]) for name in names]
    mixed = [_record(f"mixed-{name}", BATCHES[name], variant="b") for name in names]
    _write(db_store, alone[:1])  # a block of one packed array
    _write(db_store, mixed + alone[1:])
    for prefix in ("alone", "mixed"):
        for name in names:
            stored = db_store.get("fraud", f"{prefix}-{name}")
            assert stored is not None, (prefix, name)
            assert stored.inputs == json.loads(_json(rows_of(BATCHES[name]))), (prefix, name)


@pytest.mark.parametrize("dtype", ["float64", "int64", "int32", "bool"])
def test_a_block_of_packed_arrays_reads_back_exactly(db_store: RecordStore, dtype: str) -> None:
    rng = np.random.default_rng(7)
    batches = [(rng.normal(size=(int(n), 3)) * 1e6).astype(dtype)
               for n in rng.integers(0, 4, size=40)]
    if dtype == "float64":
        batches[3] = np.array([[np.nan, np.inf, -0.0], [-np.inf, 1e-308, 5e-324]])
    assert all(packable(batch) for batch in batches)
    _write(db_store, [_record(f"r{k}", batch) for k, batch in enumerate(batches)])
    frame = db_store.records("fraud", columns=["request_id", "row", "input.input"])
    assert len(frame) == sum(len(batch) for batch in batches)
    for k, batch in enumerate(batches):
        stored = db_store.get("fraud", f"r{k}")
        assert stored is not None and stored.rows == len(batch)
        assert stored.inputs == json.loads(_json(rows_of(batch)))
    assert _counts(db_store) == (1, len(batches), len(batches))


def test_a_reused_request_id_keeps_its_first_record_in_a_block_and_across_blocks(
    db_store: RecordStore,
) -> None:
    now = time.time()
    first = [_record(f"r{k}", np.full((1, 2), k, dtype=float), now + k) for k in range(5)]
    _write(db_store, first)
    again = [
        _record("r1", np.full((1, 2), 100.0), now + 10),  # stored in an earlier block
        _record("new", np.full((1, 2), 200.0), now + 11),
        _record("new", np.full((1, 2), 300.0), now + 12),  # twice in this block
        _record("r3", np.full((1, 2), 400.0), now + 13),
    ]
    _write(db_store, again)
    frame = db_store.records("fraud", columns=["request_id", "input.input"])
    assert sorted(frame["request_id"]) == ["new", "r0", "r1", "r2", "r3", "r4"]
    values = dict(zip(frame["request_id"], frame["input.input"], strict=True))
    assert values["r1"] == [1.0, 1.0] and values["r3"] == [3.0, 3.0]
    assert values["new"] == [200.0, 200.0]
    assert _counts(db_store) == (2, 6, 6)
    _write(db_store, [_record("r0", np.zeros((1, 2)))])  # nothing new: no block is left behind
    assert _counts(db_store) == (2, 6, 6)


def test_purge_cuts_a_block_that_straddles_the_cut_off(db_store: RecordStore) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    n = BLOCK + 10  # two blocks, the first one straddling the cut-off
    _write(db_store, [_record(f"r{k}", np.full((1, 2), float(k)), start + k) for k in range(n)])
    assert _counts(db_store) == (2, n, n)
    cut = datetime.fromtimestamp(start + 100, UTC)
    records, feedback = db_store.purge("fraud", cut)
    assert (records, feedback) == (100, 0)
    assert _counts(db_store) == (2, n - 100, n - 100)
    assert db_store.get("fraud", "r99") is None
    kept = db_store.get("fraud", "r100")
    assert kept is not None and kept.inputs == [{"input": [100.0, 100.0]}]
    frame = db_store.records("fraud", columns=["request_id", "time"])
    assert len(frame) == n - 100 and frame["time"].min() == cut
    with db_store.database.read() as conn:  # the purged inputs are gone from the database too
        bodies = [json.loads(body) for (body,) in conn.execute(
            select(prediction_blocks.c.body).order_by(prediction_blocks.c.id))]
    assert all(item is None for item in bodies[0]["inputs"][:100])
    assert db_store.purge("fraud", cut) == (0, 0)
    assert db_store.purge("fraud", cut + timedelta(days=1)) == (n - 100, 0)
    assert _counts(db_store) == (0, 0, 0)


def test_a_lookup_is_never_served_a_purged_block(db_store: RecordStore) -> None:
    """`get` keeps decoded blocks: a purge, and a block written after it, must not leak."""
    old = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    _write(db_store, [_record("gone", np.ones((1, 2)), old)])
    assert db_store.get("fraud", "gone") is not None  # its block is now kept, decoded
    db_store.purge("fraud", datetime.fromtimestamp(old + 1, UTC))
    assert db_store.get("fraud", "gone") is None
    _write(db_store, [_record("fresh", np.full((1, 2), 2.0))])
    fresh = db_store.get("fraud", "fresh")
    assert fresh is not None and fresh.inputs == [{"input": [2.0, 2.0]}]


def test_records_of_several_variants_go_to_blocks_of_their_own(db_store: RecordStore) -> None:
    now = time.time()
    records = [_record(f"r{k}", np.ones((1, 2)), now + k, variant="ab"[k % 2])
               for k in range(10)]
    _write(db_store, records)
    frame = db_store.records("fraud", columns=["request_id", "variant"])
    assert list(frame["request_id"]) == [f"r{k}" for k in range(10)]  # in time order
    assert list(frame["variant"]) == ["a", "b"] * 5
    assert _counts(db_store) == (2, 10, 10)


def test_a_hand_off_made_a_chunk_at_a_time_is_stored_in_full_blocks(db_store: RecordStore) -> None:
    """The writer makes an Answered's records ROWS_PER_CHUNK at a time, as blocks of columns;
    the store joins neighbouring ones of a variant into blocks of up to BLOCK records, and a
    fallback's records into blocks of their own."""
    n = 3 * BLOCK + ROWS_PER_CHUNK + 5
    now = time.time()
    fell_back = {7, BLOCK + 1}
    answered = Answered(
        "fraud", "a", "m", "1", [f"h{k}" for k in range(n)], np.arange(n) * 1e-3 + now,
        np.full(n, 2.0), [np.full((1, 2), float(k)) for k in range(n)],
        [{"label": np.array([k % 3]), "p": np.array([[0.25, 0.75]])} for k in range(n)],
        [("fallback", "0") if k in fell_back else None for k in range(n)],
        lambda value: value, False)
    writer = RecordWriter(db_store, RecordsConfig(), deployment="fraud", key=KEY,
                          interval_s=0.02, purge_every_s=None)
    writer.submit_answered(answered)
    assert writer.close(20) and writer.stats.written == n
    blocks, held, indexed = _counts(db_store)
    assert held == indexed == n
    assert blocks == math.ceil((n - len(fell_back)) / BLOCK) + 1
    frame = db_store.records("fraud", columns=["request_id", "variant", "version",
                                               "input.input", "output.label", "output.p"])
    assert list(frame["request_id"]) == [f"h{k}" for k in range(n)]
    assert [k for k, v in enumerate(frame["variant"]) if v == "fallback"] == sorted(fell_back)
    assert frame["input.input"].tolist()[BLOCK + 2] == [float(BLOCK + 2)] * 2
    assert list(frame["output.label"]) == [k % 3 for k in range(n)]
    assert frame["output.p"].tolist()[-1] == [0.25, 0.75]


def test_a_block_the_database_refuses_is_written_again_record_by_record(
    db_store: RecordStore,
) -> None:
    """A variant name too long for PostgreSQL's column fails the whole transaction; written
    again one record at a time, only that record is lost (SQLite stores any length)."""
    items = [f"r{k}" for k in range(10)]
    answered = Answered(
        "fraud", "a", "m", "1", items, [time.time()] * 10, [1.0] * 10,
        [np.ones((1, 2))] * 10, [{"label": np.array([1])}] * 10,
        [("f" * 65, "0") if k == 4 else None for k in range(10)], lambda value: value, False)
    writer = RecordWriter(db_store, RecordsConfig(), deployment="fraud", key=KEY,
                          interval_s=0.02, backoff_s=0.001, purge_every_s=None)
    writer.submit_answered(answered)
    assert writer.close(20)
    stored = set(db_store.records("fraud", columns=["request_id"])["request_id"])
    if db_store.database.is_sqlite:
        assert writer.stats.written == 10 and stored == set(items)
    else:
        assert (writer.stats.written, writer.stats.failed) == (9, 1)
        assert stored == set(items) - {"r4"}


def test_records_of_the_row_per_record_table_move_into_blocks(db_store: RecordStore) -> None:
    """A home written by an earlier shipyard (one row per record) keeps its records."""
    from shipyard.monitoring.recordstore import _LEGACY

    engine = db_store.engine
    _LEGACY.create(engine)
    at = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
    rows = [{"deployment": "fraud", "request_id": f"old{k}", "time": at + timedelta(seconds=k),
             "variant": "a", "model": "m", "version": "1", "latency_ms": None if k else 2.5,
             "rows": 1, "inputs": f'[{{"x":{k}}}]', "outputs": '{"label":[1]}'}
            for k in range(BLOCK + 3)]
    with engine.begin() as conn:
        conn.execute(_LEGACY.insert(), rows)
    moved = RecordStore(db_store.database)  # opening the store moves them, once
    assert not sqlalchemy_inspect(engine).has_table("prediction_records")
    first = moved.get("fraud", "old0")
    assert first is not None and first.at == at and first.latency_ms == 2.5
    assert first.inputs == [{"x": 0}] and first.outputs == {"label": [1]}
    frame = moved.records("fraud", columns=["request_id", "input.x"])
    assert list(frame["request_id"]) == [f"old{k}" for k in range(BLOCK + 3)]
    assert list(frame["input.x"]) == list(range(BLOCK + 3))
    assert _counts(moved) == (2, BLOCK + 3, BLOCK + 3)
    RecordStore(db_store.database)  # nothing left to move
    assert _counts(moved) == (2, BLOCK + 3, BLOCK + 3)
