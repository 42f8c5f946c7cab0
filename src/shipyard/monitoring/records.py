"""Prediction records: what each served prediction was, kept off the hot path.

`RecordWriter.submit` costs about a microsecond: a sampling draw and a deque append. A daemon
thread takes what has gathered every `interval_s`, turns the served batches into JSON rows,
redacts them (`redact.py`: redaction happens there and only there, so no path can store an
input unredacted) and writes them in batches to a `RecordStore`: the registry's database (one
executemany per batch) or one Parquet file per flush. Feedback lives in the database in
either case (`feedback.py`); the tables have a `MetaData` of their own, outside the registry's
migrations, created with checkfirst. `flush()` and `close()`
drain everything submitted before them. A failing write is retried with backoff, then logged
and counted, never raised: monitoring must not take the server down.
"""

from __future__ import annotations

import json
import logging
import os
import random
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    insert,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from shipyard.bundle.manifest import NAME_PATTERN
from shipyard.bundle.schema import ARRAY_FIELD, TEXT_FIELD
from shipyard.monitoring.redact import Redactor, load_key, plain
from shipyard.registry.database import BEGIN_MODE, Database
from shipyard.registry.tables import NAMING, UTCDateTime
from shipyard.routing import MonitoringConfig, RecordsConfig
from shipyard.settings import Settings

log = logging.getLogger("shipyard.monitoring.records")

MAX_REQUEST_ID = 128
INTERVAL_S = 0.5
BATCH_SIZE = 1000
MAX_PENDING = 100_000
RETRIES = 3
BACKOFF_S = 0.2
PURGE_EVERY_S = 3600.0


@dataclass(slots=True)
class PredictionRecord:
    """One served prediction. `inputs` is the batch as served (the writer redacts it).

    `time` is seconds since the epoch (UTC), as `time.time()` gives it: the cheapest clock
    on the hot path; `at` is the same instant as a datetime. `outputs` maps each output name
    to one value per row. `inputs` may be a DataFrame, a 2-D array (stored under the field
    `input`), a list of strings (field `text`), a list of row dicts or a dict of columns.
    """

    request_id: str
    time: float
    deployment: str
    variant: str
    model: str
    version: str
    inputs: Any
    outputs: Mapping[str, Any]
    latency_ms: float
    rows: int

    @classmethod
    def from_batch(
        cls,
        *,
        request_id: str,
        time: float,
        deployment: str,
        variant: str,
        model: str,
        version: str,
        batch: Any,
        outputs: Mapping[str, Any],
        latency_ms: float,
    ) -> PredictionRecord:
        """A record of one served batch; `rows` is counted, nothing is converted here."""
        return cls(request_id, time, deployment, variant, model, version, batch, outputs,
                   latency_ms, count_rows(batch))

    @property
    def at(self) -> datetime:
        return datetime.fromtimestamp(self.time, UTC)


def count_rows(batch: Any) -> int:
    if batch is None:
        return 0
    if isinstance(batch, Mapping):
        first = next(iter(batch.values()), None)
        return 0 if first is None else len(first)
    try:
        return len(batch)
    except TypeError:
        return 1


def rows_of(batch: Any) -> list[dict[str, Any]]:
    """The batch as JSON-able row dicts keyed by input field name."""
    if batch is None:
        return []
    if isinstance(batch, pd.DataFrame):
        return [plain(row) for row in batch.to_dict("records")]
    if isinstance(batch, np.ndarray):
        values = plain(batch)
        return [{ARRAY_FIELD: row} for row in (values if batch.ndim else [values])]
    if isinstance(batch, Mapping):
        columns = {str(name): plain(values) for name, values in batch.items()}
        count = max((len(v) for v in columns.values() if isinstance(v, list)), default=0)
        return [
            {name: (v[i] if isinstance(v, list) and i < len(v) else None)
             for name, v in columns.items()}
            for i in range(count)
        ]
    if isinstance(batch, list | tuple):
        if all(isinstance(item, str) for item in batch):
            return [{TEXT_FIELD: item} for item in batch]
        if all(isinstance(item, Mapping) for item in batch):
            return [plain(item) for item in batch]
        return [{ARRAY_FIELD: plain(item)} for item in batch]
    return [{ARRAY_FIELD: plain(batch)}]


def _json(value: Any) -> str:
    # ASCII-only: a lone surrogate or a NUL in a caller's string is escaped, never a write
    # that PostgreSQL refuses.
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


class RecordSink(Protocol):
    """Where the writer puts stored rows (`RecordStore` below)."""

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None: ...

    def purge(self, deployment: str, before: datetime) -> tuple[int, int]: ...


@dataclass
class WriterStats:
    """Counters for the API and tests; written by one thread each, read by anyone."""

    sampled_out: int = 0
    dropped: int = 0  # the queue was full, or the writer closed
    rejected: int = 0  # a record that could not be turned into a row
    written: int = 0
    failed: int = 0  # rows given up on after the retries
    retries: int = 0
    purged: int = 0
    last_error: str | None = field(default=None)


class RecordWriter:
    """Queue on the hot path, batched writes on a daemon thread; one per deployment."""

    def __init__(
        self,
        sink: RecordSink,
        config: RecordsConfig,
        *,
        deployment: str,
        key: bytes,
        interval_s: float = INTERVAL_S,
        batch_size: int = BATCH_SIZE,
        max_pending: int = MAX_PENDING,
        retries: int = RETRIES,
        backoff_s: float = BACKOFF_S,
        purge_every_s: float | None = PURGE_EVERY_S,
        seed: int | None = None,
    ) -> None:
        self.sink = sink
        self.config = config
        self.deployment = deployment
        self.redactor = Redactor(config, key)
        self._key = key
        self.stats = WriterStats()
        self._sample = config.sample
        self._random = random.Random(seed).random  # noqa: S311 - sampling, not secrecy
        self._queue: deque[PredictionRecord | threading.Event] = deque()
        self._max_pending = max_pending
        self._interval_s = interval_s
        self._batch_size = batch_size
        self._retries = retries
        self._backoff_s = backoff_s
        self._purge_every_s = purge_every_s
        self._last_purge = 0.0
        self._closed = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._drain_lock = threading.Lock()  # the thread, or close() after a stuck thread
        self._thread = threading.Thread(
            target=self._run, name=f"shipyard-records-{deployment}", daemon=True
        )
        self._thread.start()

    # -- hot path ----------------------------------------------------------------------------

    def submit(self, record: PredictionRecord) -> None:
        """Queue one record (about a microsecond); never blocks, never raises."""
        if self._sample < 1.0 and self._random() >= self._sample:
            self.stats.sampled_out += 1
            return
        if self._closed or len(self._queue) >= self._max_pending:
            self.stats.dropped += 1  # bounded memory beats an unbounded queue under overload
            return
        self._queue.append(record)

    @property
    def pending(self) -> int:
        return len(self._queue)

    def __repr__(self) -> str:
        return f"RecordWriter({self.deployment!r}, {self.sink!r}, pending={len(self._queue)})"

    def reconfigure(self, config: RecordsConfig) -> None:
        """Take a new revision's sampling, redaction and retention (not its `store`)."""
        self.config = config
        self.redactor = Redactor(config, self._key)  # one attribute swap: the thread sees
        self._sample = config.sample  # either the old policy or the new, never a mix

    # -- lifecycle ---------------------------------------------------------------------------

    def flush(self, timeout_s: float | None = 30.0) -> bool:
        """Write everything submitted so far; True once done, False on timeout."""
        marker = threading.Event()
        self._queue.append(marker)
        if not self._thread.is_alive():
            self._drain()
        self._wake.set()
        return marker.wait(timeout_s)

    def close(self, timeout_s: float | None = 30.0) -> bool:
        """Drain everything, stop the thread; later submits are dropped. Idempotent."""
        if self._closed:
            return not self._thread.is_alive()
        self._closed = True
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning(
                "prediction records of %s: writer still busy after %ss; %d records pending",
                self.deployment, timeout_s, len(self._queue),
            )
            return False
        self._drain()  # anything a racing submit slipped in after the thread's last drain
        return True

    def purge(self, now: datetime | None = None) -> tuple[int, int]:
        """Delete this deployment's records and feedback older than retention_days."""
        now = now or datetime.now(UTC)
        before = now - timedelta(days=self.config.retention_days)
        records, feedback = self.sink.purge(self.deployment, before)
        self.stats.purged += records
        return records, feedback

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            try:
                self._drain()
                self._maybe_purge()
            except Exception:  # the writer must outlive any one bad batch
                log.exception("prediction records of %s: writer loop failed", self.deployment)
            if self._stopping.is_set() and not self._queue:
                return

    def _maybe_purge(self) -> None:
        if self._purge_every_s is None or self._stopping.is_set():
            return
        now = time.monotonic()
        if now - self._last_purge < self._purge_every_s:
            return
        self._last_purge = now
        try:
            self.purge()
        except Exception as exc:  # noqa: BLE001 - retried at the next interval
            log.warning("prediction records of %s: purge failed: %s", self.deployment,
                        _reason(exc))

    def _drain(self) -> None:
        with self._drain_lock:
            batch: list[dict[str, Any]] = []
            while True:
                try:
                    item = self._queue.popleft()
                except IndexError:
                    break
                if isinstance(item, threading.Event):
                    self._write(batch)  # everything before the marker, then release it
                    batch = []
                    item.set()
                    continue
                row = self._row(item)
                if row is not None:
                    batch.append(row)
                if len(batch) >= self._batch_size:
                    self._write(batch)
                    batch = []
            self._write(batch)

    def _row(self, record: PredictionRecord) -> dict[str, Any] | None:
        try:
            request_id = record.request_id
            if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
                raise ValueError(f"request id must be 1 to {MAX_REQUEST_ID} characters")
            if not NAME_PATTERN.fullmatch(record.deployment):
                raise ValueError(f"deployment {record.deployment[:80]!r} is not a valid name")
            latency = plain(float(record.latency_ms))
            return {
                "deployment": record.deployment,
                "request_id": request_id,
                "time": datetime.fromtimestamp(record.time, UTC),
                "variant": record.variant,
                "model": record.model,
                "version": record.version,
                "latency_ms": latency,
                "rows": int(record.rows),
                "inputs": _json(self.redactor.rows(rows_of(record.inputs))),
                "outputs": _json(plain(dict(record.outputs or {}))),
            }
        except Exception as exc:  # noqa: BLE001 - one odd record must not stop the others
            self.stats.rejected += 1
            log.warning("prediction records of %s: skipped a record that cannot be stored "
                        "(%s: %s)", self.deployment, type(exc).__name__, exc)
            return None

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        for attempt in range(self._retries + 1):
            try:
                self.sink.write(rows)
                self.stats.written += len(rows)
                return
            except Exception as exc:  # noqa: BLE001 - logged and counted below, never raised
                self.stats.last_error = _reason(exc)
                if _row_problem(exc) and len(rows) > 1:
                    # The database is up but refuses some row: write one by one so a single
                    # bad row costs only itself.
                    for row in rows:
                        self._write([row])
                    return
                if attempt == self._retries:
                    self.stats.failed += len(rows)
                    log.error(
                        "prediction records of %s: gave up on %d records after %d attempts: %s",
                        self.deployment, len(rows), attempt + 1, self.stats.last_error,
                    )
                    return
                self.stats.retries += 1
                time.sleep(self._backoff_s * 2**attempt)


def writer_factory(settings: Settings) -> Callable[[str, MonitoringConfig], RecordWriter | None]:
    """For the server: `make(deployment, config)` -> a writer, or None when not recording.

    All writers of the process share one engine on the registry's database and one store per
    kind. A database that cannot be reached is logged and recording stays off for that
    deployment: serving never fails for want of records.
    """
    lock = threading.Lock()
    shared: dict[str, Any] = {}  # "database" and "key", opened on first use
    stores: dict[str, RecordStore] = {}  # one per RecordsConfig.store kind

    def make(deployment: str, config: MonitoringConfig) -> RecordWriter | None:
        if config.records.sample == 0:
            return None
        try:
            with lock:
                if not shared:
                    database = Database(
                        settings.resolved_database_url, timeout_s=settings.db_timeout_s
                    )
                    shared.update(database=database, key=load_key(settings.home / "records"))
                kind = config.records.store
                if kind not in stores:
                    stores[kind] = RecordStore.for_config(
                        shared["database"], config.records, settings.home
                    )
            return RecordWriter(stores[kind], config.records, deployment=deployment,
                                key=shared["key"])
        except Exception as exc:  # noqa: BLE001 - serving goes on without records
            log.error("prediction records of %s are off: %s", deployment, _reason(exc))
            return None

    return make


def _row_problem(exc: Exception) -> bool:
    """A database error about the data (not about reaching the database)."""
    return isinstance(exc, DBAPIError) and not isinstance(exc, OperationalError | InterfaceError)


def _reason(exc: Exception) -> str:
    # The driver's message only: SQLAlchemy's own text would append the bound parameters,
    # i.e. the (redacted, but still) inputs, to a log line.
    orig = getattr(exc, "orig", None) or exc
    first = (str(orig).strip().splitlines() or [""])[0]
    return f"{type(orig).__name__}: {first}"[:300]


# -- storage ----------------------------------------------------------------------------------

records_metadata = MetaData(naming_convention=NAMING)
NAME = String(64)

prediction_records = Table(
    "prediction_records",
    records_metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("deployment", NAME, nullable=False),
    Column("request_id", String(MAX_REQUEST_ID), nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("variant", NAME, nullable=False),
    Column("model", NAME, nullable=False),
    Column("version", NAME, nullable=False),
    Column("latency_ms", Float, nullable=True),
    Column("rows", Integer, nullable=False),
    Column("inputs", Text, nullable=False),  # JSON: a list of redacted row objects
    Column("outputs", Text, nullable=False),  # JSON: output name -> one value per row
    # A client may reuse a request id: the first record wins (ON CONFLICT DO NOTHING).
    UniqueConstraint("deployment", "request_id", name="uq_prediction_records_request"),
    Index("ix_prediction_records_time", "deployment", "time"),
)

feedback_table = Table(
    "feedback",
    records_metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("deployment", NAME, nullable=False),
    Column("request_id", String(MAX_REQUEST_ID), nullable=False),
    # The record's time, copied: retention and performance windows go by the prediction.
    Column("record_time", UTCDateTime, nullable=False),
    Column("time", UTCDateTime, nullable=False),
    Column("label", Text, nullable=True),  # JSON: the ground truth, one value or one per row
    Column("thumbs", Boolean, nullable=True),
    Column("score", Float, nullable=True),
    Column("comment", Text, nullable=True),
    Index("ix_feedback_request", "deployment", "request_id"),
    Index("ix_feedback_record_time", "deployment", "record_time"),
    # At most one label per request, decided by the database even under racing writers.
    Index(
        "uq_feedback_label",
        "deployment",
        "request_id",
        unique=True,
        sqlite_where=text("label IS NOT NULL"),
        postgresql_where=text("label IS NOT NULL"),
    ),
)

META = ("request_id", "time", "deployment", "variant", "model", "version", "latency_ms", "rows")
PARQUET_SCHEMA = pa.schema([
    ("request_id", pa.string()),
    ("time", pa.timestamp("us", tz="UTC")),
    ("deployment", pa.string()),
    ("variant", pa.string()),
    ("model", pa.string()),
    ("version", pa.string()),
    ("latency_ms", pa.float64()),
    ("rows", pa.int64()),
    ("inputs", pa.string()),
    ("outputs", pa.string()),
])
STALE_TEMP_S = 3600.0


class RecordStore:
    """Prediction records (database or Parquet) and feedback (database), read and written.

    Writes use plain transactions of their own (BEGIN IMMEDIATE on SQLite), never the
    registry-wide write lock: records are many and must not queue behind registry changes.
    """

    def __init__(self, database: Database, *, parquet_dir: Path | None = None) -> None:
        self.database = database
        self.engine = database.engine
        self.parquet_dir = parquet_dir
        self.create_tables()

    @classmethod
    def for_config(cls, database: Database, config: RecordsConfig, home: Path) -> RecordStore:
        """The store `config.store` names: the database, or Parquet under `home/records`."""
        parquet = home / "records" if config.store == "parquet" else None
        return cls(database, parquet_dir=parquet)

    def __repr__(self) -> str:
        where = str(self.parquet_dir) if self.parquet_dir else self.database.shown_url
        return f"RecordStore({where!r})"

    def create_tables(self) -> None:
        with self.database.unavailable_as_error():
            try:
                records_metadata.create_all(self.engine, checkfirst=True)
            except DBAPIError:
                # Another process created them between our check and our CREATE; the
                # second look finds them all and creates nothing.
                records_metadata.create_all(self.engine, checkfirst=True)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction of its own (IMMEDIATE on SQLite); commits on success."""
        with self.database.unavailable_as_error(), self.engine.connect() as conn:
            if self.database.is_sqlite:
                conn = conn.execution_options(**{BEGIN_MODE: "IMMEDIATE"})
            with conn.begin():
                yield conn

    # -- writes ------------------------------------------------------------------------------

    def write(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Store rows made by the writer; a request id already stored is skipped."""
        if not rows:
            return
        if self.parquet_dir is not None:
            self._write_parquet(rows)
            return
        with self.transaction() as conn:
            conn.execute(_insert_ignoring_duplicates(self.database), list(rows))

    def _write_parquet(self, rows: Sequence[Mapping[str, Any]]) -> None:
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for row in rows:
            groups.setdefault(row["deployment"], []).append(row)
        for deployment, group in groups.items():
            folder = self._folder(deployment)
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.parquet"
            write_parquet(pa.Table.from_pylist(group, schema=PARQUET_SCHEMA), folder / name)

    def purge(self, deployment: str, before: datetime) -> tuple[int, int]:
        """Delete records and feedback of predictions made before `before`; (records, feedback)."""
        with self.transaction() as conn:
            feedback = conn.execute(
                delete(feedback_table).where(
                    feedback_table.c.deployment == deployment,
                    feedback_table.c.record_time < before,
                )
            ).rowcount
            if self.parquet_dir is None:
                records = conn.execute(
                    delete(prediction_records).where(
                        prediction_records.c.deployment == deployment,
                        prediction_records.c.time < before,
                    )
                ).rowcount
        if self.parquet_dir is not None:
            records = self._purge_parquet(deployment, before)
        return records, feedback

    def _purge_parquet(self, deployment: str, before: datetime) -> int:
        folder = self._folder(deployment)
        removed = 0
        cutoff = pa.scalar(before, type=PARQUET_SCHEMA.field("time").type)
        for path in self._files(deployment):
            times = pq.read_table(path, columns=["time"]).column("time")
            keep = pc.greater_equal(times, cutoff)
            kept = int(pc.sum(keep).as_py() or 0)
            if kept == len(times):
                continue
            if kept == 0:
                path.unlink(missing_ok=True)
            else:
                table = pq.read_table(path, schema=PARQUET_SCHEMA)
                write_parquet(table.filter(pc.greater_equal(table.column("time"), cutoff)), path)
            removed += len(times) - kept
        for temporary in folder.glob(".*.tmp") if folder.is_dir() else ():
            # Left by a process killed mid-write; never visible to readers, removed here.
            if time.time() - temporary.stat().st_mtime > STALE_TEMP_S:
                temporary.unlink(missing_ok=True)
        return removed

    # -- reads -------------------------------------------------------------------------------

    def records(
        self,
        deployment: str,
        since: datetime | None = None,
        until: datetime | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """One row per served row: META, `row`, `input.<field>`, `output.<name>` columns.

        `since` is inclusive, `until` exclusive. `columns` picks columns (any of the above);
        a column no record has comes back as nulls.
        """
        raw = self._scan(deployment, since, until, None)
        return expand(raw, columns)

    def get(self, deployment: str, request_id: str) -> PredictionRecord | None:
        """The stored record (inputs as redacted row dicts), or None."""
        found = self._scan(deployment, None, None, request_id)
        if not found:
            return None
        row = found[0]
        return PredictionRecord(
            request_id=row["request_id"],
            time=row["time"].timestamp(),
            deployment=row["deployment"],
            variant=row["variant"],
            model=row["model"],
            version=row["version"],
            inputs=json.loads(row["inputs"]),
            outputs=json.loads(row["outputs"]),
            latency_ms=row["latency_ms"],
            rows=row["rows"],
        )

    def feedback(
        self, deployment: str, since: datetime | None = None, until: datetime | None = None
    ) -> pd.DataFrame:
        """Feedback of predictions made in [since, until): label parsed from JSON."""
        t = feedback_table
        query = select(
            t.c.request_id, t.c.record_time, t.c.time, t.c.label, t.c.thumbs, t.c.score,
            t.c.comment,
        ).where(t.c.deployment == deployment).order_by(t.c.id)
        if since is not None:
            query = query.where(t.c.record_time >= since)
        if until is not None:
            query = query.where(t.c.record_time < until)
        with self.database.read() as conn:
            rows = [dict(row) for row in conn.execute(query).mappings()]
        for row in rows:
            row["label"] = None if row["label"] is None else json.loads(row["label"])
        names = ["request_id", "record_time", "time", "label", "thumbs", "score", "comment"]
        return pd.DataFrame(rows, columns=names)

    def _scan(
        self, deployment: str, since: datetime | None, until: datetime | None,
        request_id: str | None,
    ) -> list[dict[str, Any]]:
        if self.parquet_dir is not None:
            return self._scan_parquet(deployment, since, until, request_id)
        t = prediction_records
        query = select(*(t.c[name] for name in (*META, "inputs", "outputs")))
        query = query.where(t.c.deployment == deployment)
        if request_id is not None:
            query = query.where(t.c.request_id == request_id)
        if since is not None:
            query = query.where(t.c.time >= since)
        if until is not None:
            query = query.where(t.c.time < until)
        with self.database.read() as conn:
            return [dict(row) for row in conn.execute(query.order_by(t.c.time, t.c.id)).mappings()]

    def _scan_parquet(
        self, deployment: str, since: datetime | None, until: datetime | None,
        request_id: str | None,
    ) -> list[dict[str, Any]]:
        stamp = PARQUET_SCHEMA.field("time").type
        condition = ds.field("deployment") == deployment
        if request_id is not None:
            condition = condition & (ds.field("request_id") == request_id)
        if since is not None:
            condition = condition & (ds.field("time") >= pa.scalar(since, type=stamp))
        if until is not None:
            condition = condition & (ds.field("time") < pa.scalar(until, type=stamp))
        for attempt in range(3):
            files = [str(path) for path in self._files(deployment)]
            if not files:
                return []
            try:
                dataset = ds.dataset(files, schema=PARQUET_SCHEMA, format="parquet")
                table = dataset.to_table(filter=condition)
                break
            except FileNotFoundError:
                if attempt == 2:  # a purge kept rewriting under us; give its result time
                    raise
        rows = table.to_pylist()
        rows.sort(key=lambda row: row["time"])
        return rows

    def _folder(self, deployment: str) -> Path:
        if self.parquet_dir is None or not NAME_PATTERN.fullmatch(deployment):
            raise ValueError(f"no Parquet folder for deployment {deployment[:80]!r}")
        return self.parquet_dir / deployment

    def _files(self, deployment: str) -> list[Path]:
        folder = self._folder(deployment)
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith("."))


def write_parquet(table: pa.Table, path: Path) -> None:
    """Write `table` to `path` atomically: a temp file in the same folder, fsync, rename."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "wb") as handle:
            pq.write_table(table, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _insert_ignoring_duplicates(database: Database) -> Any:
    backend = database.url.get_backend_name()
    if backend == "sqlite":
        return sqlite_insert(prediction_records).on_conflict_do_nothing(
            index_elements=["deployment", "request_id"]
        )
    if backend == "postgresql":
        return postgresql_insert(prediction_records).on_conflict_do_nothing(
            index_elements=["deployment", "request_id"]
        )
    return insert(prediction_records)


def expand(raw: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Stored records -> one row per served row, inputs and outputs as prefixed columns."""
    wanted = list(columns) if columns is not None else None
    want_inputs = wanted is None or any(c.startswith("input.") for c in wanted)
    want_outputs = wanted is None or any(c.startswith("output.") for c in wanted)
    rows: list[dict[str, Any]] = []
    for record in raw:
        inputs = json.loads(record["inputs"]) if want_inputs else []
        outputs = json.loads(record["outputs"]) if want_outputs else {}
        count = max(int(record["rows"] or 0), len(inputs))
        meta = {name: record[name] for name in META}
        for index in range(count):
            row = dict(meta)
            row["row"] = index
            if index < len(inputs) and isinstance(inputs[index], dict):
                for name, value in inputs[index].items():
                    row["input." + name] = value
            for name, values in outputs.items():
                row["output." + name] = (
                    (values[index] if index < len(values) else None)
                    if isinstance(values, list) else values
                )
            rows.append(row)
    base = [*META, "row"]
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=base)
    if not rows:
        frame["time"] = pd.to_datetime(frame["time"], utc=True)
    if wanted is not None:
        for name in wanted:
            if name not in frame.columns:
                frame[name] = None
        frame = frame[wanted]
    return frame


def split_frame(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(meta, inputs, outputs) of a `records()` frame, prefixes stripped: what drift takes."""
    inputs = [c for c in frame.columns if c.startswith("input.")]
    outputs = [c for c in frame.columns if c.startswith("output.")]
    meta = [c for c in frame.columns if c not in inputs and c not in outputs]
    return (
        frame[meta],
        frame[inputs].rename(columns=lambda c: c[len("input."):]),
        frame[outputs].rename(columns=lambda c: c[len("output."):]),
    )
