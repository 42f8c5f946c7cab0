"""Where prediction records and feedback are kept: the tables, the files and `RecordStore`.

Records go to the registry's database or to one Parquet file per flush, written atomically
(`write_parquet`). The writer hands them over as tuples in `RECORD_COLUMNS` order, and they go
to the driver as they are: SQLite's executemany, PostgreSQL's COPY (into a temporary table,
then one INSERT ... ON CONFLICT DO NOTHING), a pyarrow table built column by column; no
per-row work in SQLAlchemy. Feedback lives in the database in either case
(`feedback.py`); the tables have a `MetaData` of their own, outside the registry's
migrations, created with checkfirst. Reads come back as one row per served row (`expand`),
split into what drift takes by `split_frame`.
"""

from __future__ import annotations

import functools
import json
import os
import secrets
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
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
from sqlalchemy.exc import DBAPIError

from shipyard.bundle.manifest import NAME_PATTERN
from shipyard.registry.database import BEGIN_MODE, Database
from shipyard.registry.tables import NAMING, UTCDateTime
from shipyard.routing import RecordsConfig

if TYPE_CHECKING:
    import pyarrow as pa

MAX_REQUEST_ID = 128
IDS_PER_QUERY = 500  # request ids per IN (...) list: well under every database's limit


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
    if type(batch) is np.ndarray:  # the common batch, once per record: no ABC checks
        return len(batch) if batch.ndim else 1
    if batch is None:
        return 0
    if isinstance(batch, Mapping):
        first = next(iter(batch.values()), None)
        return 0 if first is None else len(first)
    try:
        return len(batch)
    except TypeError:
        return 1

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
# What `RecordStore.write` takes, in this order: one tuple per record, `time` seconds since the
# epoch (a float, as the writer gives it) or a timezone-aware datetime, `latency_ms` a finite
# float or None, `inputs` and `outputs` JSON text.
RECORD_COLUMNS = (
    "deployment", "request_id", "time", "variant", "model", "version", "latency_ms", "rows",
    "inputs", "outputs",
)
RecordRow = tuple[Any, ...]
CHUNK = 128  # rows per insert when paced: about half a millisecond on a slow core
# Constant SQL, spelled out: the columns are RECORD_COLUMNS, in order (a test checks it).
_SQLITE_INSERT = (
    "INSERT INTO prediction_records (deployment, request_id, time, variant, model, version, "
    "latency_ms, rows, inputs, outputs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (deployment, request_id) DO NOTHING"
)
# PostgreSQL: COPY into a temporary table of the session (emptied at every commit), then one
# INSERT from it. COPY cannot skip a duplicate; the INSERT can, and in COPY's order (ctid),
# so that the first record of a reused request id wins as it does row by row. Text columns
# here: a value too long for its column is refused by the INSERT, as a data error. Times come
# as UTC text without a zone (the SQLite text) and are read as UTC whatever the session's zone.
_PG_CREATE_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS shipyard_prediction_records_in (deployment text, "
    "request_id text, time timestamp, variant text, model text, version text, "
    "latency_ms float8, rows int4, inputs text, outputs text) ON COMMIT DELETE ROWS"
)
_PG_COPY = (
    "COPY shipyard_prediction_records_in (deployment, request_id, time, variant, model, "
    "version, latency_ms, rows, inputs, outputs) FROM STDIN"
)
_PG_MOVE = (
    "INSERT INTO prediction_records (deployment, request_id, time, variant, model, version, "
    "latency_ms, rows, inputs, outputs) SELECT deployment, request_id, time AT TIME ZONE 'UTC', "
    "variant, model, version, latency_ms, rows, inputs, outputs "
    "FROM shipyard_prediction_records_in "
    "ORDER BY ctid ON CONFLICT (deployment, request_id) DO NOTHING"
)
@functools.cache
def parquet_schema() -> pa.Schema:
    # pyarrow is imported on first use: a server that keeps its records in the database (the
    # default) never pays the ~80 ms of its import at start.
    import pyarrow as pa

    return pa.schema([
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

    def write(self, rows: Sequence[RecordRow | Mapping[str, Any]],
              pace: Callable[[], None] | None = None) -> None:
        """Store records (tuples in `RECORD_COLUMNS` order, or mappings of those columns); a
        request id already stored is skipped. `pace`, when given, is called between chunks of
        one transaction (a background writer gives the core away there)."""
        if not rows:
            return
        tuples = [
            row if type(row) is tuple else tuple(row[name] for name in RECORD_COLUMNS)  # type: ignore[call-overload]
            for row in rows
        ]
        if self.parquet_dir is not None:
            self._write_parquet(tuples)
            return
        backend = self.database.url.get_backend_name()
        with self.transaction() as conn:
            if backend == "sqlite":
                # Column by column, in C: the times made text in one go, the rows zipped.
                columns: list[Sequence[Any]] = list(zip(*tuples, strict=True))
                columns[2] = _sqlite_times(columns[2])
                for chunk in _paced(list(zip(*columns, strict=True)), pace):
                    conn.exec_driver_sql(_SQLITE_INSERT, chunk)
            elif backend == "postgresql" and conn.dialect.driver == "psycopg":
                _copy_postgresql(conn, tuples, pace)
            else:
                insert = _insert_ignoring_duplicates(self.database)
                for chunk in _paced(tuples, pace):
                    conn.execute(insert, [dict(zip(RECORD_COLUMNS, row, strict=True))
                                          for row in chunk])

    def _write_parquet(self, rows: Sequence[RecordRow]) -> None:
        import pyarrow as pa

        groups: dict[str, list[RecordRow]] = {}
        for row in rows:
            groups.setdefault(row[0], []).append(row)
        for deployment, group in groups.items():
            folder = self._folder(deployment)
            folder.mkdir(parents=True, exist_ok=True)
            name = f"{time.time_ns():020d}-{secrets.token_hex(4)}.parquet"
            columns = dict(zip(RECORD_COLUMNS, zip(*group, strict=True), strict=True))
            table = pa.table(
                [
                    _parquet_times(columns[f.name]) if f.name == "time"
                    else pa.array(list(columns[f.name]), type=f.type)
                    for f in parquet_schema()
                ],
                schema=parquet_schema(),
            )
            write_parquet(table, folder / name)

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
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        folder = self._folder(deployment)
        removed = 0
        cutoff = pa.scalar(before, type=parquet_schema().field("time").type)
        for path in self._files(deployment):
            times = pq.read_table(path, columns=["time"]).column("time")
            keep = pc.greater_equal(times, cutoff)
            kept = int(pc.sum(keep).as_py() or 0)
            if kept == len(times):
                continue
            if kept == 0:
                path.unlink(missing_ok=True)
            else:
                table = pq.read_table(path, schema=parquet_schema())
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
        *,
        request_ids: Collection[str] | None = None,
    ) -> pd.DataFrame:
        """One row per served row: META, `row`, `input.<field>`, `output.<name>` columns.

        `since` is inclusive, `until` exclusive. `columns` picks columns (any of the above);
        a column no record has comes back as nulls. `request_ids` keeps only those records
        (performance reads the labelled ones, not a month of unlabelled traffic).
        """
        if request_ids is None:
            return expand(self._scan(deployment, since, until, None), columns)
        wanted = sorted(set(request_ids))
        raw: list[dict[str, Any]] = []
        for start in range(0, len(wanted), IDS_PER_QUERY):
            raw.extend(self._scan(deployment, since, until, wanted[start:start + IDS_PER_QUERY]))
        raw.sort(key=lambda row: row["time"])
        return expand(raw, columns)

    def get(self, deployment: str, request_id: str) -> PredictionRecord | None:
        """The stored record (inputs as redacted row dicts), or None."""
        found = self._scan(deployment, None, None, [request_id])
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
        request_ids: Sequence[str] | None,
    ) -> list[dict[str, Any]]:
        if self.parquet_dir is not None:
            return self._scan_parquet(deployment, since, until, request_ids)
        t = prediction_records
        query = select(*(t.c[name] for name in (*META, "inputs", "outputs")))
        query = query.where(t.c.deployment == deployment)
        if request_ids is not None:
            query = query.where(t.c.request_id.in_(request_ids))
        if since is not None:
            query = query.where(t.c.time >= since)
        if until is not None:
            query = query.where(t.c.time < until)
        with self.database.read() as conn:
            return [dict(row) for row in conn.execute(query.order_by(t.c.time, t.c.id)).mappings()]

    def _scan_parquet(
        self, deployment: str, since: datetime | None, until: datetime | None,
        request_ids: Sequence[str] | None,
    ) -> list[dict[str, Any]]:
        import pyarrow as pa
        import pyarrow.dataset as ds

        stamp = parquet_schema().field("time").type
        condition = ds.field("deployment") == deployment
        if request_ids is not None:
            condition = condition & ds.field("request_id").isin(list(request_ids))
        if since is not None:
            condition = condition & (ds.field("time") >= pa.scalar(since, type=stamp))
        if until is not None:
            condition = condition & (ds.field("time") < pa.scalar(until, type=stamp))
        for attempt in range(3):
            files = [str(path) for path in self._files(deployment)]
            if not files:
                return []
            try:
                dataset = ds.dataset(files, schema=parquet_schema(), format="parquet")
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
    import pyarrow.parquet as pq

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
    # Dialect modules are imported here, for the one in use: importing PostgreSQL's (with its
    # asyncpg driver glue) costs a SQLite server ~20 ms at start.
    backend = database.url.get_backend_name()
    if backend == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(prediction_records).on_conflict_do_nothing(
            index_elements=["deployment", "request_id"]
        )
    if backend == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgresql_insert

        return postgresql_insert(prediction_records).on_conflict_do_nothing(
            index_elements=["deployment", "request_id"]
        )
    return insert(prediction_records)


def _as_datetime(value: float | datetime) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"Got {value!r}. Expected a timezone-aware datetime.")
        return value if value.tzinfo is UTC else value.astimezone(UTC)
    return datetime.fromtimestamp(value, UTC)


def _sqlite_time(value: float | datetime) -> str:
    """SQLAlchemy's SQLite text for a UTCDateTime: 'YYYY-MM-DD HH:MM:SS.ffffff', in UTC."""
    return _as_datetime(value).isoformat(" ", "microseconds")[:26]


def _epoch_micros(values: Sequence[float | datetime]) -> np.ndarray | None:
    """Microseconds since the epoch of float times, rounded as datetime.fromtimestamp rounds
    them (np.round: half to even), in one go; None when some time is not a float."""
    if not all(type(value) is float for value in values):
        return None
    fraction, whole = np.modf(np.asarray(values, dtype=np.float64))
    return whole.astype(np.int64) * 1_000_000 + np.round(fraction * 1e6).astype(np.int64)


def _sqlite_times(values: Sequence[float | datetime]) -> list[str]:
    """`_sqlite_time` of each value; for a batch of floats, in C through NumPy (a third of
    the cost of formatting datetimes one by one)."""
    micros = _epoch_micros(values)
    if micros is not None and len(micros) and _YEAR_1 <= micros.min() <= micros.max() < _YEAR_10000:
        # 'YYYY-MM-DDTHH:MM:SS.ffffff' for years 1 to 9999 (NumPy leaves room for more).
        text = np.datetime_as_string(micros.astype("datetime64[us]"), unit="us").astype("<U26")
        text.view(np.uint32).reshape(-1, 26)[:, 10] = ord(" ")  # the T becomes a space
        return text.tolist()
    return [_sqlite_time(value) for value in values]


_YEAR_1 = -62_135_596_800_000_000  # microseconds since the epoch at 0001-01-01
_YEAR_10000 = 253_402_300_800_000_000


def _parquet_times(values: Sequence[float | datetime]) -> pa.Array:
    import pyarrow as pa

    kind = parquet_schema().field("time").type
    micros = _epoch_micros(values)
    if micros is not None:
        return pa.array(micros, type=pa.int64()).cast(kind)
    return pa.array([_as_datetime(value) for value in values], type=kind)


def _paced(rows: Sequence[Any], pace: Callable[[], None] | None) -> Iterator[Sequence[Any]]:
    """`rows` in one piece, or in chunks of CHUNK with `pace()` between them."""
    if pace is None:
        yield rows
        return
    for start in range(0, len(rows), CHUNK):
        if start:
            pace()
        yield rows[start : start + CHUNK]


def _copy_postgresql(conn: Connection, rows: Sequence[RecordRow],
                     pace: Callable[[], None] | None = None) -> None:
    """COPY the rows in, then INSERT them, in `conn`'s transaction (psycopg 3)."""
    dbapi_connection = conn.connection.driver_connection
    dbapi = conn.dialect.loaded_dbapi
    statement = _PG_CREATE_STAGE
    try:
        with dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(_PG_CREATE_STAGE)
            statement = _PG_COPY
            columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
            columns[2] = _sqlite_times(columns[2])  # UTC, without a zone: see _PG_MOVE
            with cursor.copy(_PG_COPY) as copy:
                write_row = copy.write_row
                for chunk in _paced(list(zip(*columns, strict=True)), pace):
                    for row in chunk:
                        write_row(row)
            statement = _PG_MOVE
            cursor.execute(_PG_MOVE)
    except dbapi.Error as exc:
        # As SQLAlchemy would have raised it: a data error is told from an unreachable
        # database by its class (the writer retries one, splits the batch on the other).
        raise DBAPIError.instance(statement, None, exc, dbapi.Error, dialect=conn.dialect) from exc


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
