"""The record writer: cheap submit, batched writes, drained on close, retried, never fatal.

Runs on SQLite, on Parquet files and on the real PostgreSQL.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from shipyard.monitoring.monitor import scrubbed
from shipyard.monitoring.records import (
    ROWS_PER_CHUNK,
    Answered,
    PredictionRecord,
    RecordWriter,
    writer_factory,
)
from shipyard.monitoring.recordstore import RecordStore
from shipyard.registry.database import Database
from shipyard.routing import MonitoringConfig, RecordsConfig
from shipyard.settings import Settings

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


def record(
    request_id: str, *, at: float | None = None, rows: int = 2, deployment: str = "fraud"
) -> PredictionRecord:
    batch = pd.DataFrame({"amount": np.arange(rows, dtype=float), "email": ["a@b.example"] * rows})
    return PredictionRecord.from_batch(
        request_id=request_id,
        time=time.time() if at is None else at,
        deployment=deployment,
        variant="champion",
        model="fraud",
        version="1.0",
        batch=batch,
        outputs={"label": np.arange(rows) % 2},
        latency_ms=2.5,
    )


def writer(store: RecordStore, **config: object) -> RecordWriter:
    return RecordWriter(
        store,
        RecordsConfig(**config),
        deployment="fraud",
        key=KEY,  # type: ignore[arg-type]
        interval_s=0.02,
        backoff_s=0.01,
        purge_every_s=None,
        seed=1,
    )


def test_close_drains_every_record_submitted_before_it(store: RecordStore) -> None:
    w = writer(store)
    for i in range(2500):
        w.submit(record(f"r{i}", rows=1))
    assert w.close()
    frame = store.records("fraud")
    assert len(frame) == 2500 and frame["request_id"].is_unique
    assert w.stats.written == 2500 and w.stats.failed == 0 and w.pending == 0


def test_flush_makes_records_readable_and_redacted(store: RecordStore) -> None:
    w = writer(store, redact={"email": "hash"})
    w.submit(record("r1"))
    assert w.flush(5)
    frame = store.records("fraud")
    assert list(frame["row"]) == [0, 1]
    assert list(frame["input.amount"]) == [0.0, 1.0]
    assert frame["input.email"].str.startswith("h:").all()
    assert "a@b.example" not in frame.to_json()
    assert list(frame["output.label"]) == [0, 1]
    got = store.get("fraud", "r1")
    assert got is not None and got.rows == 2 and got.version == "1.0"
    assert got.inputs[0]["email"].startswith("h:")
    w.close()


def test_submits_after_close_are_dropped_and_counted(store: RecordStore) -> None:
    w = writer(store)
    w.close()
    w.submit(record("late"))
    assert w.stats.dropped == 1 and store.get("fraud", "late") is None
    assert w.close()  # a second close is a no-op


def test_sampling_keeps_about_the_configured_share(store: RecordStore) -> None:
    w = writer(store, sample=0.25)
    for i in range(4000):
        w.submit(record(f"r{i}", rows=1))
    w.close()
    kept = w.stats.written
    assert kept + w.stats.sampled_out == 4000
    assert 850 < kept < 1150  # 1000 expected; about 4.9 standard deviations either side


def test_sample_zero_records_nothing(store: RecordStore) -> None:
    w = writer(store, sample=0)
    w.submit(record("r1"))
    w.close()
    assert store.records("fraud").empty and w.stats.sampled_out == 1


def test_a_full_queue_drops_instead_of_growing(store: RecordStore) -> None:
    w = RecordWriter(
        store,
        RecordsConfig(),
        deployment="fraud",
        key=KEY,
        interval_s=60,
        max_pending=10,
        purge_every_s=None,
    )
    for i in range(15):
        w.submit(record(f"r{i}"))
    assert w.stats.dropped == 5
    w.close()
    assert w.stats.written == 10


def test_a_reused_request_id_keeps_the_first_record(store: RecordStore) -> None:
    w = writer(store)
    w.submit(record("same", rows=1))
    w.submit(record("same", rows=3))
    w.flush(5)
    w.submit(record("same", rows=5))
    w.close()
    got = store.get("fraud", "same")
    assert got is not None
    if store.parquet_dir is None:  # the database refuses the copy; Parquet keeps both files
        assert got.rows == 1 and len(store.records("fraud")) == 1


def test_nasty_inputs_round_trip(store: RecordStore) -> None:
    batch = pd.DataFrame(
        {
            "text": ["naïve café ☕", "nul\x00byte", "lone \ud800 surrogate", ""],
            "x": [np.nan, np.inf, -0.0, 1e308],
            "flag": [True, False, True, False],
        }
    )
    w = writer(store)
    w.submit(
        PredictionRecord.from_batch(
            request_id="nasty",
            time=time.time(),
            deployment="fraud",
            variant="a",
            model="m",
            version="1",
            batch=batch,
            outputs={"prediction": np.array([np.nan, 1.0, 2.0, 3.0])},
            latency_ms=float("nan"),
        )
    )
    w.close()
    assert w.stats.written == 1, w.stats
    frame = store.records("fraud")
    assert list(frame["input.text"])[:2] == ["naïve café ☕", "nul\x00byte"]
    assert frame["input.x"].isna().tolist() == [True, True, False, False]  # NaN, inf -> null
    assert frame["output.prediction"].isna().tolist() == [True, False, False, False]
    assert frame["latency_ms"].isna().all()


def test_records_of_other_layouts_are_stored_by_field_name(store: RecordStore) -> None:
    w = writer(store)
    base = {
        "time": time.time(),
        "deployment": "fraud",
        "variant": "a",
        "model": "m",
        "version": "1",
        "latency_ms": 1.0,
    }
    w.submit(
        PredictionRecord.from_batch(
            request_id="array", batch=np.ones((2, 3)), outputs={"prediction": [1, 2]}, **base
        )
    )  # type: ignore[arg-type]
    w.submit(
        PredictionRecord.from_batch(
            request_id="text", batch=["hello", "world"], outputs={"label": ["a", "b"]}, **base
        )
    )  # type: ignore[arg-type]
    w.submit(
        PredictionRecord.from_batch(
            request_id="columns", batch={"x": [1, 2]}, outputs={"label": [0, 1]}, **base
        )
    )  # type: ignore[arg-type]
    w.submit(
        PredictionRecord.from_batch(
            request_id="empty", batch=pd.DataFrame({"x": []}), outputs={"label": []}, **base
        )
    )  # type: ignore[arg-type]
    w.close()
    assert w.stats.written == 4
    assert store.get("fraud", "array").inputs == [{"input": [1.0] * 3}] * 2  # type: ignore[union-attr]
    assert store.get("fraud", "text").inputs == [{"text": "hello"}, {"text": "world"}]  # type: ignore[union-attr]
    assert store.get("fraud", "columns").inputs == [{"x": 1}, {"x": 2}]  # type: ignore[union-attr]
    assert store.get("fraud", "empty").rows == 0  # type: ignore[union-attr]


def test_a_record_that_cannot_be_stored_costs_only_itself(store: RecordStore) -> None:
    w = writer(store)
    w.submit(record("x" * 129))  # request id over the column's limit
    w.submit(record("bad-name", deployment="Not A Name/.."))
    w.submit(record("good"))
    w.close()
    assert w.stats.rejected == 2 and w.stats.written == 1
    assert store.get("fraud", "good") is not None


def test_a_locked_database_is_retried_until_it_frees(tmp_path: Path) -> None:
    path = tmp_path / "registry.db"
    database = Database(f"sqlite:///{path}", timeout_s=0.05)
    store = RecordStore(database)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    w = RecordWriter(
        store,
        RecordsConfig(),
        deployment="fraud",
        key=KEY,
        interval_s=0.01,
        retries=8,
        backoff_s=0.05,
        purge_every_s=None,
    )
    w.submit(record("r1"))
    deadline = time.monotonic() + 5
    while w.stats.retries < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    blocker.execute("COMMIT")
    blocker.close()
    assert w.close(10)
    assert w.stats.retries >= 2 and w.stats.written == 1 and w.stats.failed == 0
    assert store.get("fraud", "r1") is not None
    database.close()


def test_a_database_that_stays_down_is_logged_never_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "registry.db"
    database = Database(f"sqlite:///{path}", timeout_s=0.02)
    store = RecordStore(database)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    w = RecordWriter(
        store,
        RecordsConfig(),
        deployment="fraud",
        key=KEY,
        interval_s=0.01,
        retries=2,
        backoff_s=0.01,
        purge_every_s=None,
    )
    with caplog.at_level(logging.ERROR, logger="shipyard.monitoring.records"):
        w.submit(record("r1"))
        assert w.flush(10)
        w.submit(record("r2"))  # the writer lives on after a failure
        blocker.execute("COMMIT")
        assert w.close(10)
    blocker.close()
    assert w.stats.failed == 1 and w.stats.written == 1
    assert "gave up on 1 records after 3 attempts" in caplog.text
    assert "a@b.example" not in caplog.text  # no input value reaches a log line
    assert store.get("fraud", "r2") is not None
    database.close()


def test_purge_deletes_records_past_retention(store: RecordStore) -> None:
    w = writer(store, retention_days=1)
    now = time.time()
    w.submit(record("old", at=now - 3 * 86400))
    w.flush(5)  # a file of its own for Parquet: the purge deletes it whole
    w.submit(record("older-still", at=now - 2 * 86400))
    w.submit(record("new", at=now))  # shares a file with an old one: the file is rewritten
    w.flush(5)
    records, _ = w.purge()
    w.close()
    assert records == 2
    assert list(store.records("fraud")["request_id"].unique()) == ["new"]
    if store.parquet_dir is not None:
        files = list((store.parquet_dir / "fraud").iterdir())
        assert len(files) == 1 and not files[0].name.startswith(".")


def test_records_filters_by_time_and_picks_columns(store: RecordStore) -> None:
    w = writer(store)
    base = 1_800_000_000.0
    for i in range(5):
        w.submit(record(f"r{i}", at=base + i, rows=1))
    w.close()
    since = pd.Timestamp(base + 1, unit="s", tz="UTC").to_pydatetime()
    until = pd.Timestamp(base + 3, unit="s", tz="UTC").to_pydatetime()
    frame = store.records(
        "fraud", since, until, columns=["request_id", "input.amount", "input.gone"]
    )
    assert list(frame.columns) == ["request_id", "input.amount", "input.gone"]
    assert list(frame["request_id"]) == ["r1", "r2"]
    assert frame["input.gone"].isna().all()
    empty = store.records("other")
    assert empty.empty and "time" in empty.columns and "request_id" in empty.columns


def test_parquet_files_are_never_half_written_when_the_process_is_killed(tmp_path: Path) -> None:
    """A writer process killed with SIGKILL mid-stream leaves only whole, readable files."""
    script = textwrap.dedent(f"""
        import time, numpy as np, pandas as pd
        from pathlib import Path
        from shipyard.monitoring.records import PredictionRecord, RecordWriter
        from shipyard.monitoring.recordstore import RecordStore
        from shipyard.registry.database import Database
        from shipyard.routing import RecordsConfig
        store = RecordStore(Database("sqlite:///{tmp_path}/r.db", timeout_s=5),
                            parquet_dir=Path("{tmp_path}/records"))
        w = RecordWriter(store, RecordsConfig(), deployment="fraud", key=b"k" * 32,
                         interval_s=0.001, batch_size=50, purge_every_s=None)
        batch = pd.DataFrame({{"x": np.random.rand(20), "s": ["text" * 20] * 20}})
        i = 0
        print("ready", flush=True)
        while True:
            w.submit(PredictionRecord.from_batch(request_id=f"r{{i}}", time=time.time(),
                deployment="fraud", variant="a", model="m", version="1", batch=batch,
                outputs={{"label": np.zeros(20)}}, latency_ms=1.0))
            i += 1
            if i % 10 == 0:
                time.sleep(0.001)
    """)
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
    folder = tmp_path / "records" / "fraud"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(list(folder.glob("*.parquet"))) < 20:
        time.sleep(0.05)
    process.kill()
    process.wait()
    files = [p for p in folder.iterdir() if not p.name.startswith(".")]
    assert len(files) >= 20
    for path in files:
        assert pq.read_table(path).num_rows > 0  # every visible file is whole
    database = Database(f"sqlite:///{tmp_path}/r.db", timeout_s=5)
    frame = RecordStore(database, parquet_dir=tmp_path / "records").records(
        "fraud", columns=["request_id"]
    )
    assert frame["request_id"].nunique() >= 20
    database.close()


def test_concurrent_submitters_lose_nothing(store: RecordStore) -> None:
    w = writer(store)

    def submit(offset: int) -> None:
        for i in range(500):
            w.submit(record(f"t{offset}-{i}", rows=1))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    w.close()
    assert len(store.records("fraud", columns=["request_id"])) == 2000


def test_writer_factory_records_to_the_registry_database(settings: Settings) -> None:
    make = writer_factory(settings)
    assert make("fraud", MonitoringConfig(records=RecordsConfig(sample=0))) is None
    w = make("fraud", MonitoringConfig())
    assert w is not None
    w.submit(record("r1"))
    w.close()
    database = Database(settings.resolved_database_url, timeout_s=5)
    assert RecordStore(database).get("fraud", "r1") is not None
    database.close()
    assert (settings.home / "records" / "redact.key").is_file()


def test_writer_factory_writes_parquet_under_home(settings: Settings) -> None:
    w = writer_factory(settings)("fraud", MonitoringConfig(records=RecordsConfig(store="parquet")))
    assert w is not None
    w.submit(record("r1"))
    w.close()
    assert len(list((settings.home / "records" / "fraud").glob("*.parquet"))) == 1


def test_writer_factory_turns_recording_off_when_the_database_is_unreachable(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    broken = settings.model_copy(
        update={"database_url": "postgresql+psycopg://nobody:secret@127.0.0.1:1/none"}
    )
    with caplog.at_level(logging.ERROR, logger="shipyard.monitoring.records"):
        assert writer_factory(broken)("fraud", MonitoringConfig()) is None
    assert "records of fraud are off" in caplog.text and "secret" not in caplog.text


def test_reconfigure_applies_the_new_policy_to_later_records(store: RecordStore) -> None:
    w = writer(store)
    w.submit(record("before", rows=1))
    w.flush(5)
    w.reconfigure(RecordsConfig(redact={"email": "drop"}))
    w.submit(record("after", rows=1))
    w.close()
    assert store.get("fraud", "before").inputs[0]["email"] == "a@b.example"  # type: ignore[union-attr]
    assert "email" not in store.get("fraud", "after").inputs[0]  # type: ignore[union-attr]


def _answered(count: int, **extra: object) -> list[SimpleNamespace]:
    return [SimpleNamespace(request_id=f"a{k}", time=time.time(), latency_ms=1.5,
                            batch=np.full((1, 2), float(k)), outputs={"label": np.array([k])},
                            answered_by=None, **extra) for k in range(count)]


def test_what_a_variant_answered_becomes_records_on_the_writer_thread(store: RecordStore) -> None:
    """The monitor's flush hands over a variant's requests in one go (`submit_answered`)."""
    items = _answered(6)
    items[3].answered_by = ("fallback", "0.9")  # a fallback answered this one
    items[5].outputs = None  # failed: no record
    w = writer(store)
    w.submit_answered(Answered.of("fraud", "champion", "fraud", "1.0", items,
                               scrub=lambda value: value, scrub_inputs=False))
    assert w.pending in (0, 6)  # queued as one, counted as its items (or already written)
    assert w.close(10)
    assert w.stats.written == 5 and w.pending == 0
    frame = store.records("fraud", columns=["request_id", "variant", "version", "input.input",
                                            "output.label", "latency_ms"])
    assert list(frame["request_id"]) == [f"a{k}" for k in range(5)]
    assert list(frame["variant"]) == ["champion"] * 3 + ["fallback", "champion"]
    assert list(frame["version"]) == ["1.0"] * 3 + ["0.9", "1.0"]
    assert list(frame["output.label"]) == [0, 1, 2, 3, 4]
    assert frame["input.input"].tolist()[2] == [2.0, 2.0]
    assert set(frame["latency_ms"]) == {1.5}


def test_answered_requests_are_scrubbed_sampled_and_bounded(store: RecordStore) -> None:
    items = _answered(4)
    for item in items:
        item.batch = ["mail me at a@b.example"]
    seen: list[object] = []

    def scrub(value: object) -> object:
        seen.append(value)
        return ["<scrubbed>"] if isinstance(value, list) else value

    w = writer(store)
    w.submit_answered(Answered.of("fraud", "champion", "fraud", "1.0", items, scrub=scrub,
                               scrub_inputs=True))
    assert w.flush(10)
    stored = store.get("fraud", "a0")
    assert stored is not None and stored.inputs == [{"text": "<scrubbed>"}]
    assert len(seen) == 8  # each item's batch and outputs
    w.close(10)
    w.submit_answered(Answered.of("fraud", "champion", "fraud", "1.0", _answered(3),
                               scrub=scrub, scrub_inputs=False))
    assert w.stats.dropped == 3  # after close: dropped and counted

    full = RecordWriter(store, RecordsConfig(), deployment="fraud", key=KEY, max_pending=3,
                        interval_s=60, purge_every_s=None)
    full.submit_answered(Answered.of("fraud", "c", "m", "1", _answered(4), scrub=scrub,
                                  scrub_inputs=False))
    full.submit_answered(Answered.of("fraud", "c", "m", "1", _answered(4), scrub=scrub,
                                  scrub_inputs=False))
    assert full.stats.dropped == 4 and full.pending == 4  # past the bound: the second goes
    assert full.close(10) and full.stats.written == 4

    half = writer(store, sample=0.5)
    many = _answered(400)
    for item in many:
        item.request_id = "h" + item.request_id
    half.submit_answered(Answered.of("fraud", "c", "m", "1", many, scrub=scrub,
                                  scrub_inputs=False))
    assert half.close(10)
    assert half.stats.sampled_out + half.stats.written == 400
    assert 120 < half.stats.written < 280


def test_an_answered_request_that_cannot_be_scrubbed_costs_only_itself(
    store: RecordStore,
) -> None:
    def scrub(value: object) -> object:
        if isinstance(value, dict) and value["label"][0] == 1:
            raise ValueError("unscrubbable")
        return value

    w = writer(store)
    w.submit_answered(Answered.of("fraud", "champion", "fraud", "1.0", _answered(3), scrub=scrub,
                               scrub_inputs=False))
    assert w.close(10)
    assert w.stats.rejected == 1 and w.stats.written == 2 and w.pending == 0
    assert set(store.records("fraud", columns=["request_id"])["request_id"]) == {"a0", "a2"}


def test_odd_answered_requests_cost_only_themselves_in_a_chunk_of_good_ones(
    store: RecordStore,
) -> None:
    """Records of a hand-off are made a chunk at a time, each check over the whole chunk; an
    odd request sends its chunk the slow way, which loses it alone."""
    items = _answered(ROWS_PER_CHUNK + 10)
    odd = ROWS_PER_CHUNK + 3  # in the second chunk
    items[odd].request_id = "x" * 129  # over the column's limit
    items[odd + 1].time = 1e300  # no datetime holds it
    items[odd + 2].time = "soon"  # not a time at all
    items[5].latency_ms = float("nan")  # not odd: stored as null, in the fast path
    items[6].latency_ms = float("inf")
    w = writer(store)
    w.submit_answered(Answered.of("fraud", "champion", "fraud", "1.0", items,
                               scrub=lambda value: value, scrub_inputs=False))
    assert w.close(10)
    assert w.stats.rejected == 3 and w.stats.written == len(items) - 3 and w.pending == 0
    frame = store.records("fraud", columns=["request_id", "latency_ms", "input.input"])
    expected = [f"a{k}" for k in range(len(items)) if k not in (odd, odd + 1, odd + 2)]
    assert list(frame["request_id"]) == expected
    latencies = dict(zip(frame["request_id"], frame["latency_ms"], strict=True))
    assert np.isnan(latencies["a5"]) and np.isnan(latencies["a6"])
    assert latencies["a7"] == 1.5
    inputs = dict(zip(frame["request_id"], frame["input.input"], strict=True))
    assert inputs[f"a{odd + 5}"] == [float(odd + 5)] * 2


def test_an_answered_hand_off_for_an_invalid_deployment_name_is_rejected(
    store: RecordStore,
) -> None:
    w = writer(store)
    w.submit_answered(Answered.of("Not A Name/..", "champion", "m", "1.0", _answered(3),
                               scrub=lambda value: value, scrub_inputs=False))
    assert w.close(10)
    assert w.stats.rejected == 3 and w.stats.written == 0


def test_a_scrubbed_frame_is_stored_as_the_frame_would_be(store: RecordStore) -> None:
    """The monitor's scrub hands a frame with PII over as its rows: stored exactly as the
    frame would be, but for the redacted text."""
    frame = pd.DataFrame({"x": [1.5, float("nan")], "n": np.array([3, 4], dtype=np.int64),
                          "note": ["write to jane.doe@example.com", "plain"], "flag": [True, False],
                          "at": pd.to_datetime(["2026-01-01", "2026-01-02"])})
    items = [SimpleNamespace(request_id=rid, time=1.7e9 + k, latency_ms=1.0, batch=batch,
                             outputs={"label": np.array([0, 1])}, answered_by=None)
             for k, (rid, batch) in enumerate((("a", frame), ("b", frame.assign(note="ok"))))]
    writer = RecordWriter(store, RecordsConfig(), deployment="d", key=KEY, purge_every_s=None)
    writer.submit_answered(Answered.of("d", "v", "m", "1", items, scrubbed, True))
    assert writer.close(10) and writer.stats.written == 2
    scrubbed_rows = store.get("d", "a").inputs  # type: ignore[union-attr]
    plain_rows = store.get("d", "b").inputs  # type: ignore[union-attr]
    assert scrubbed_rows[0]["note"] == "write to [EMAIL]" and plain_rows[0]["note"] == "ok"
    for row in (*scrubbed_rows, *plain_rows):
        row.pop("note")
    assert scrubbed_rows == plain_rows
    assert scrubbed_rows[1]["x"] is None and scrubbed_rows[0]["n"] == 3


def test_a_failed_request_amid_a_hand_off_leaves_the_others_columns_aligned(
    store: RecordStore,
) -> None:
    """A hand-off is columns; the writer takes each chunk by position, with a gap where a
    request failed: every record keeps its own id, time, inputs and outputs."""
    items = _answered(6)
    items[2].outputs = None
    for k, item in enumerate(items):
        item.time = 1.7e9 + k
    w = writer(store)
    w.submit_answered(Answered.of("fraud", "champion", "fraud", "1.0", items,
                                  scrub=lambda value: value, scrub_inputs=False))
    assert w.close(10) and w.stats.written == 5
    frame = store.records("fraud", columns=["request_id", "time", "input.input",
                                            "output.label"])
    assert list(frame["request_id"]) == ["a0", "a1", "a3", "a4", "a5"]
    assert [row[0] for row in frame["input.input"]] == [0.0, 1.0, 3.0, 4.0, 5.0]
    assert list(frame["output.label"]) == [0, 1, 3, 4, 5]
    seconds = [t.timestamp() for t in pd.to_datetime(frame["time"], utc=True)]
    assert seconds == pytest.approx([1.7e9 + k for k in (0, 1, 3, 4, 5)])
