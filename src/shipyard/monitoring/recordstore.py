"""Where prediction records and feedback are kept: the tables, the files and `RecordStore`.

Records go to the registry's database or to one Parquet file per flush, written atomically
(`write_parquet`). The writer hands them over as `RecordBlock`s, the columns of records of one
variant and version, or as tuples in `RECORD_COLUMNS` order, one per record. In the
database they are stored in blocks (`prediction_blocks`: up to BLOCK records of one variant
and version as one JSON body, their inputs' and outputs' JSON joined as the writer made it),
each record's request id in `prediction_index`, filled from the block's list of ids by one
statement in the database's own code; in Parquet, as a pyarrow table built column by column.
Either way there is no per-row work in SQLAlchemy. Feedback lives in the database in either case
(`feedback.py`); the tables have a `MetaData` of their own, outside the registry's
migrations, created with checkfirst. Reads come back as one row per served row (`expand`),
split into what drift takes by `split_frame`.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    delete,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.exc import DBAPIError

from shipyard.bundle.manifest import NAME_PATTERN
from shipyard.bundle.schema import ARRAY_FIELD
from shipyard.registry.database import BEGIN_MODE, Database
from shipyard.registry.tables import NAMING, UTCDateTime
from shipyard.routing import RecordsConfig

if TYPE_CHECKING:
    import pyarrow as pa

try:  # the serve extra's dependency; without it blocks are written with json, more slowly
    import orjson
except ImportError:  # pragma: no cover - the server always has it
    orjson = None  # type: ignore[assignment]

log = logging.getLogger("shipyard.monitoring.records")

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

# A block holds up to BLOCK records of one variant and model version, as one JSON body: a
# row per record would cost three B-tree inserts each (the row, its request id, its time);
# a block costs one insert per BLOCK records, and each record only its request id's entry in
# `prediction_index`, which decides duplicates and finds a record for its feedback.
prediction_blocks = Table(
    "prediction_blocks",
    records_metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("deployment", NAME, nullable=False),
    Column("variant", NAME, nullable=False),
    Column("model", NAME, nullable=False),
    Column("version", NAME, nullable=False),
    Column("first_time", UTCDateTime, nullable=False),  # of the records it still holds
    Column("last_time", UTCDateTime, nullable=False),
    Column("count", Integer, nullable=False),  # records it holds (not purged, not duplicates)
    # JSON list, one request id per record; null where the record is not held (a request id
    # already stored, or purged): its inputs and outputs are null too.
    Column("request_ids", Text, nullable=False),
    # JSON object of lists, one item per record: time_us (microseconds since the epoch, UTC),
    # latency_ms, rows, inputs (a list of redacted row objects), outputs (name -> values).
    Column("body", Text, nullable=False),
    Index("ix_prediction_blocks_time", "deployment", "last_time"),
    sqlite_autoincrement=True,  # ids never reused: `get` keeps decoded blocks by id
)

prediction_index = Table(
    "prediction_index",
    records_metadata,
    # A client may reuse a request id: the first record wins (ON CONFLICT DO NOTHING).
    Column("deployment", NAME, primary_key=True),
    Column("request_id", String(MAX_REQUEST_ID), primary_key=True),
    Column("block_id", BigInteger, nullable=False),
    Column("position", Integer, nullable=False),
    sqlite_with_rowid=False,  # the primary key is the table: one B-tree per entry
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


@dataclass(slots=True)
class RecordBlock:
    """Records of one (deployment, variant, model, version) as columns, in `RECORD_COLUMNS`'
    terms: how the writer hands most records over, with no tuple per record. `outputs` is
    the JSON text of a list holding each record's outputs, in order (one serialisation for
    them all, what a database block stores), or each record's JSON text (what a Parquet row
    stores); `inputs` holds JSON text, or arrays where the store packs them."""

    key: tuple[str, str, str, str]
    request_ids: Sequence[str]
    times: Sequence[float | datetime]
    latencies_ms: Sequence[float | None]
    rows: Sequence[int]
    inputs: Sequence[Any]
    outputs: str | Sequence[str]

    def __len__(self) -> int:
        return len(self.request_ids)

    def records(self) -> list[RecordRow]:
        """One tuple per record (for Parquet, and to retry a refused block one by one)."""
        deployment, variant, model, version = self.key
        outputs = self.outputs
        if isinstance(outputs, str):
            outputs = [_dumps_json(item) for item in _loads_json(outputs)]
        return [(deployment, request_id, at, variant, model, version, latency, rows, inputs,
                 output)
                for request_id, at, latency, rows, inputs, output in zip(
                    self.request_ids, self.times, self.latencies_ms, self.rows, self.inputs,
                    outputs, strict=True)]


# Records per block: the writer gives way between blocks (about a millisecond each on a slow
# core), and a feedback lookup decodes one block (~200 kB of JSON).
BLOCK = 256
# Each record's request id goes into the index in one statement per block, from the block's
# JSON list of ids, in the database's own code (no per-row Python binding). ON CONFLICT DO
# NOTHING takes them in list order, so the first record of a reused request id wins, in the
# block as across blocks.
_SQLITE_INDEX = text(
    "INSERT INTO prediction_index (deployment, request_id, block_id, position) "
    "SELECT :deployment, value, :block, key FROM json_each(:ids) WHERE true "
    "ON CONFLICT (deployment, request_id) DO NOTHING"
)
_SQLITE_HELD = text(
    "SELECT j.key FROM json_each(:ids) AS j JOIN prediction_index AS i "
    "ON i.deployment = :deployment AND i.request_id = j.value "
    "WHERE i.block_id = :block AND i.position = j.key"
)
_PG_INDEX = text(
    "INSERT INTO prediction_index (deployment, request_id, block_id, position) "
    "SELECT :deployment, u.r, :block, u.o - 1 "
    "FROM jsonb_array_elements_text(CAST(:ids AS jsonb)) WITH ORDINALITY AS u(r, o) "
    "ON CONFLICT (deployment, request_id) DO NOTHING"
)
_PG_HELD = text(
    "SELECT u.o - 1 FROM jsonb_array_elements_text(CAST(:ids AS jsonb)) WITH ORDINALITY "
    "AS u(r, o) JOIN prediction_index AS i ON i.deployment = :deployment "
    "AND i.request_id = u.r WHERE i.block_id = :block AND i.position = u.o - 1"
)
_INSERT_BLOCK = insert(prediction_blocks)  # built once: SQLAlchemy compiles it once
_BLOCK_CACHE = 16  # decoded blocks kept for `get`: feedback comes in serving order


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
_Decoded = tuple[str, str, str, list[Any], dict[str, Any]]  # variant, model, version, ids, body


class RecordStore:
    """Prediction records (database or Parquet) and feedback (database), read and written.

    Writes use plain transactions of their own (BEGIN IMMEDIATE on SQLite), never the
    registry-wide write lock: records are many and must not queue behind registry changes.
    """

    def __init__(self, database: Database, *, parquet_dir: Path | None = None) -> None:
        self.database = database
        self.engine = database.engine
        self.parquet_dir = parquet_dir
        self.packs_arrays = parquet_dir is None  # the writer may hand served arrays over
        self._cache: dict[int, _Decoded] = {}  # block id -> decoded, oldest first
        self._cache_lock = threading.Lock()
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
            if self.database.url.get_backend_name() == "postgresql":
                _compress_blocks_with_lz4(self.engine)
            if self.parquet_dir is None and inspect(self.engine).has_table(_LEGACY.name):
                self._move_legacy_records()

    def _move_legacy_records(self) -> None:
        """Records of shipyard before blocks (a row each, in `prediction_records`) move into
        blocks, then the table goes. Safe to repeat after a crash or in a racing worker:
        a request id already moved is skipped like any reused one."""
        t = _LEGACY
        query = select(t.c.id, *(t.c[name] for name in RECORD_COLUMNS)).order_by(t.c.id)
        moved, last = 0, None
        while True:  # a chunk at a time: a month of records need not fit in memory
            with self.database.read() as conn:
                chunk = conn.execute((query if last is None else query.where(t.c.id > last))
                                     .limit(BLOCK * 20)).all()
            if not chunk:
                break
            self.write([tuple(row[1:]) for row in chunk])
            moved, last = moved + len(chunk), chunk[-1][0]
        with self.database.unavailable_as_error(), contextlib.suppress(DBAPIError):
            t.drop(self.engine, checkfirst=True)  # a racing worker may have dropped it
        log.info("moved %d prediction records into blocks", moved)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction of its own (IMMEDIATE on SQLite); commits on success."""
        with self.database.unavailable_as_error(), self.engine.connect() as conn:
            if self.database.is_sqlite:
                conn = conn.execution_options(**{BEGIN_MODE: "IMMEDIATE"})
            with conn.begin():
                yield conn

    # -- writes ------------------------------------------------------------------------------

    def write(self, rows: Sequence[RecordBlock | RecordRow | Mapping[str, Any]],
              pace: Callable[[], None] | None = None) -> None:
        """Store records: `RecordBlock`s, tuples in `RECORD_COLUMNS` order, or mappings of
        those columns; a request id already stored is skipped. `pace`, when given, is called
        between blocks of one transaction (a background writer gives the core away there)."""
        if not rows:
            return
        given = [row for row in rows if isinstance(row, RecordBlock)]
        tuples = [_tuple(row) for row in rows if not isinstance(row, RecordBlock)]
        if self.parquet_dir is not None:
            self._write_parquet(tuples + [row for block in given for row in block.records()])
            return
        with self.transaction() as conn:
            for number, block in enumerate(_coalesced([*given, *_blocks(tuples)])):
                if number and pace is not None:
                    pace()
                self._write_block(conn, block)

    def _write_block(self, conn: Connection, block: RecordBlock) -> None:
        """One block and its request ids' index entries; a request id already stored (or
        repeated in the block) is left out of the block."""
        deployment, variant, model, version = block.key
        times = _times_us(block.times)
        ids = list(block.request_ids)
        ids_text = _dumps_json(ids)
        body = (
            '{"time_us":' + _dumps_json(times) + ',"latency_ms":'
            + _dumps_json(block.latencies_ms) + ',"rows":' + _dumps_json(block.rows) + ","
            + _inputs_json(block.inputs) + ',"outputs":' + _list_text(block.outputs) + "}"
        )
        number: int = conn.execute(_INSERT_BLOCK, {
            "deployment": deployment, "variant": variant, "model": model, "version": version,
            "first_time": _at_us(min(times)), "last_time": _at_us(max(times)),
            "count": len(ids), "request_ids": ids_text, "body": body,
        }).inserted_primary_key[0]  # type: ignore[index]
        sqlite = self.database.is_sqlite
        params = {"deployment": deployment, "block": number, "ids": ids_text}
        indexed = conn.execute(_SQLITE_INDEX if sqlite else _PG_INDEX, params).rowcount
        if indexed == len(ids):
            return
        # Some request id was stored before (rare: a client reusing ids): keep only the
        # records whose id now points here.
        held = {int(p) for (p,) in conn.execute(_SQLITE_HELD if sqlite else _PG_HELD, params)}
        if not held:
            conn.execute(delete(prediction_blocks).where(prediction_blocks.c.id == number))
            return
        decoded = _loads_json(body)
        _drop(ids, decoded, [k for k in range(len(ids)) if k not in held])
        kept = [times[k] for k in held]
        conn.execute(prediction_blocks.update().where(prediction_blocks.c.id == number).values(
            first_time=_at_us(min(kept)), last_time=_at_us(max(kept)), count=len(held),
            request_ids=_dumps_json(ids), body=_dumps_json(decoded),
        ))

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
                records = self._purge_blocks(conn, deployment, before)
        if self.parquet_dir is not None:
            records = self._purge_parquet(deployment, before)
        return records, feedback

    def _purge_blocks(self, conn: Connection, deployment: str, before: datetime) -> int:
        """Delete blocks wholly before `before`; in a block that straddles it, the older
        records' ids, inputs and outputs are nulled (positions stay, so the index holds)."""
        b = prediction_blocks
        cutoff = _micros_of(before)
        removed = 0
        found = conn.execute(
            select(b.c.id, b.c.last_time, b.c.request_ids, b.c.count)
            .where(b.c.deployment == deployment, b.c.first_time < before)
        ).all()
        for block, last, ids_text, count in found:
            ids: list[str | None] = _loads_json(ids_text)
            if last < before:  # wholly past: its body need not be read
                self._unindex(conn, deployment, block, [i for i in ids if i is not None])
                conn.execute(delete(b).where(b.c.id == block))
                removed += count
                continue
            body = conn.execute(select(b.c.body).where(b.c.id == block)).scalar_one()
            decoded = _loads_json(body)
            gone = [k for k, request_id in enumerate(ids)
                    if request_id is not None and decoded["time_us"][k] < cutoff]
            if not gone:
                continue
            self._unindex(conn, deployment, block, [ids[k] for k in gone])
            _drop(ids, decoded, gone)
            kept = [t for t, request_id in zip(decoded["time_us"], ids, strict=True)
                    if request_id is not None]
            conn.execute(b.update().where(b.c.id == block).values(
                first_time=_at_us(min(kept)), count=len(kept),
                request_ids=_dumps_json(ids), body=_dumps_json(decoded),
            ))
            removed += len(gone)
        return removed

    @staticmethod
    def _unindex(conn: Connection, deployment: str, block: int, ids: Sequence[Any]) -> None:
        i = prediction_index
        for start in range(0, len(ids), IDS_PER_QUERY):
            conn.execute(delete(i).where(
                i.c.deployment == deployment, i.c.block_id == block,
                i.c.request_id.in_(ids[start:start + IDS_PER_QUERY]),
            ))

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
        if self.parquet_dir is not None:
            found = self._scan_parquet(deployment, None, None, [request_id])
        else:
            found = self._get_block_record(deployment, request_id)
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
            inputs=_parsed(row["inputs"]),
            outputs=_parsed(row["outputs"]),
            latency_ms=row["latency_ms"],
            rows=row["rows"],
        )

    def _get_block_record(self, deployment: str, request_id: str) -> list[dict[str, Any]]:
        i, b = prediction_index, prediction_blocks
        with self.database.read() as conn:
            entry = conn.execute(select(i.c.block_id, i.c.position).where(
                i.c.deployment == deployment, i.c.request_id == request_id)).first()
            if entry is None:
                return []
            block, position = entry
            # Block ids are never reused (AUTOINCREMENT), and a held record never changes:
            # a purge or a duplicate only nulls records, after (or before) their index entry
            # goes. So a decoded block can be kept, and feedback, which comes in serving
            # order, decodes each block once.
            with self._cache_lock:
                cached = self._cache.get(block)
            if cached is None:
                row = conn.execute(select(b.c.variant, b.c.model, b.c.version, b.c.request_ids,
                                          b.c.body).where(b.c.id == block)).first()
                if row is None:
                    return []
                cached = (row[0], row[1], row[2], _loads_json(row[3]),
                          _with_inputs(_loads_json(row[4])))
                with self._cache_lock:
                    self._cache[block] = cached
                    while len(self._cache) > _BLOCK_CACHE:
                        self._cache.pop(next(iter(self._cache)))
        return _unpack(deployment, *cached, None, None, {position})

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
        b = prediction_blocks
        query = select(b.c.id, b.c.variant, b.c.model, b.c.version, b.c.request_ids, b.c.body)
        query = query.where(b.c.deployment == deployment)
        with self.database.read() as conn:
            if request_ids is not None:
                i = prediction_index
                where = {block: set(positions) for block, positions in _grouped(conn.execute(
                    select(i.c.block_id, i.c.position).where(
                        i.c.deployment == deployment, i.c.request_id.in_(request_ids))
                ).all()).items()}
                if not where:
                    return []
                query = query.where(b.c.id.in_(sorted(where)))
            if since is not None:
                query = query.where(b.c.last_time >= since)
            if until is not None:
                query = query.where(b.c.first_time < until)
            blocks = conn.execute(query.order_by(b.c.id)).all()
        low = _micros_of(since) if since is not None else None
        high = _micros_of(until) if until is not None else None
        found: list[dict[str, Any]] = []
        for block, variant, model, version, ids_text, body in blocks:
            wanted = where[block] if request_ids is not None else None
            found.extend(_unpack(deployment, variant, model, version, _loads_json(ids_text),
                                 _loads_json(body), low, high, wanted))
        found.sort(key=lambda row: row["time"])  # stable: block, then position, break ties
        return found

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


def _as_datetime(value: float | datetime) -> datetime:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"Got {value!r}. Expected a timezone-aware datetime.")
        return value if value.tzinfo is UTC else value.astimezone(UTC)
    return datetime.fromtimestamp(value, UTC)


def _epoch_micros(values: Sequence[float | datetime]) -> np.ndarray | None:
    """Microseconds since the epoch of float times, rounded as datetime.fromtimestamp rounds
    them (np.round: half to even), in one go; None when some time is not a float. A time
    outside years 1 to 9999 (NaN included) is refused, as fromtimestamp refuses it."""
    if not all(type(value) is float for value in values):
        return None
    seconds = np.asarray(values, dtype=np.float64)
    if len(seconds) and not _YEAR_1 / 1e6 <= seconds.min() <= seconds.max() < _YEAR_10000 / 1e6:
        raise ValueError("Got a record time outside years 1 to 9999 (or not a number).")
    fraction, whole = np.modf(seconds)
    return whole.astype(np.int64) * 1_000_000 + np.round(fraction * 1e6).astype(np.int64)


_YEAR_1 = -62_135_596_800_000_000  # microseconds since the epoch at 0001-01-01
_YEAR_10000 = 253_402_300_800_000_000


def _parquet_times(values: Sequence[float | datetime]) -> pa.Array:
    import pyarrow as pa

    kind = parquet_schema().field("time").type
    micros = _epoch_micros(values)
    if micros is not None:
        return pa.array(micros, type=pa.int64()).cast(kind)
    return pa.array([_as_datetime(value) for value in values], type=kind)


# The one-row-per-record table of earlier versions, read once to move its records.
_LEGACY = Table(
    "prediction_records",
    MetaData(),
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("deployment", NAME), Column("request_id", String(MAX_REQUEST_ID)),
    Column("time", UTCDateTime), Column("variant", NAME), Column("model", NAME),
    Column("version", NAME), Column("latency_ms", Float), Column("rows", Integer),
    Column("inputs", Text), Column("outputs", Text),
)


def array_rows_json(batch: Any) -> str | None:
    """JSON text of a 2-D numeric array's rows as stored, `[{"input": row}, ...]`, in one
    orjson call with each row then wrapped (no row objects); None for any other batch."""
    if (
        orjson is None
        or type(batch) is not np.ndarray
        or batch.ndim != 2
        or batch.dtype.kind not in "fiub"
        or not len(batch)
        or not batch.flags.c_contiguous
    ):
        return None
    body = orjson.dumps(batch, option=orjson.OPT_SERIALIZE_NUMPY)[1:-1]
    if len(batch) == 1:  # a single-row request, the common record: no row to separate
        return _FIRST_ROW_TEXT + body.decode() + "}]"
    # '[[1.0,2.0],[3.0,4.0]]': numbers hold no brackets, so "],[" only ever separates rows.
    return (_FIRST_ROW + body.replace(b"],[", _NEXT_ROW) + b"}]").decode()


_FIRST_ROW_TEXT = "[{" + json.dumps(ARRAY_FIELD) + ":"  # [{"input":
_FIRST_ROW = _FIRST_ROW_TEXT.encode()
_NEXT_ROW = ("]},{" + json.dumps(ARRAY_FIELD) + ":[").encode()  # ]},{"input":[
# Served arrays of these types are packed: a block's arrays of one type and row shape are
# stored as their bytes, base64 in the body, instead of each number as text (formatting 30
# floats costs more than the rest of the record). float32 is left out: its JSON is the
# shortest text of the float32, which its float64 widening would not read back as.
_PACKED = frozenset(np.dtype(t) for t in ("float64", "int64", "int32", "bool"))


def packable(batch: Any) -> bool:
    """A batch the database store packs: an array of rows (2-D or more) of a _PACKED type."""
    return type(batch) is np.ndarray and batch.ndim >= 2 and batch.dtype in _PACKED


def _inputs_json(inputs: Sequence[Any]) -> str:
    """The body's inputs: packed when every record's is an array of one type and row shape,
    else one JSON list per record (an array made text here)."""
    if all(type(item) is np.ndarray for item in inputs):
        shapes = {(item.dtype, item.shape[1:]) for item in inputs}
        if len(shapes) == 1:
            dtype, shape = shapes.pop()
            data = np.concatenate(inputs) if len(inputs) > 1 else inputs[0]
            return ('"packed_inputs":{"dtype":"' + dtype.str + '","shape":'
                    + json.dumps(list(shape)) + ',"data":"'
                    + base64.b64encode(np.ascontiguousarray(data).data).decode() + '"}')
    texts = [item if type(item) is str else _array_text(item) for item in inputs]
    return '"inputs":[' + ",".join(texts) + "]"


def _array_text(batch: np.ndarray) -> str:
    text = array_rows_json(batch)
    if text is not None:
        return text
    return _dumps_json([{ARRAY_FIELD: row} for row in _plain_rows(batch)])


def _plain_rows(values: np.ndarray) -> list[Any]:
    """Rows as JSON takes them: NaN and infinity as null, as orjson writes them."""
    if values.dtype.kind == "f" and not np.isfinite(values).all():
        values = values.astype(object)
        values[~np.isfinite(values.astype(np.float64))] = None
    return values.tolist()


def _unpacked(body: dict[str, Any]) -> Any:
    """The body's inputs, one list of row objects per record (packed ones unpacked)."""
    inputs = body.get("inputs")
    if inputs is not None:
        return inputs
    packed = body["packed_inputs"]
    data = np.frombuffer(base64.b64decode(packed["data"]), dtype=np.dtype(packed["dtype"]))
    rows = _plain_rows(data.reshape(-1, *packed["shape"]))
    out, start = [], 0
    for count in body["rows"]:
        out.append([{ARRAY_FIELD: row} for row in rows[start:start + count]])
        start += count
    return out


def _with_inputs(body: dict[str, Any]) -> dict[str, Any]:
    """`body` with its inputs as lists (packed ones unpacked), in place."""
    if "packed_inputs" in body:
        body["inputs"] = _unpacked(body)
        del body["packed_inputs"]
    return body


def _compress_blocks_with_lz4(engine: Any) -> None:
    """PostgreSQL compresses a block's body with pglz by default, which costs its server
    about as much as the insert itself; lz4 (PostgreSQL 14 and later, where built with it)
    costs a fraction. Set once: the ALTER locks the table, so it runs only when needed."""
    try:
        with engine.begin() as conn:
            method = conn.exec_driver_sql(
                "SELECT attcompression FROM pg_attribute WHERE attrelid = "
                "'prediction_blocks'::regclass AND attname = 'body'"
            ).scalar()
            if method != "l":
                conn.exec_driver_sql(
                    "ALTER TABLE prediction_blocks ALTER COLUMN body SET COMPRESSION lz4")
    except DBAPIError as exc:  # an older server, or one built without lz4: pglz it is
        log.info("prediction blocks stay pglz-compressed: %s", str(exc).splitlines()[0])


def _blocks(rows: Sequence[RecordRow]) -> Iterator[RecordBlock]:
    """The rows by (deployment, variant, model, version), in blocks of at most BLOCK."""
    if not rows:
        return
    columns: list[Sequence[Any]] = list(zip(*rows, strict=True))
    if all(len(set(columns[c])) == 1 for c in (0, 3, 4, 5)):
        # The common case, one variant: no loop over the rows in Python.
        key = (rows[0][0], rows[0][3], rows[0][4], rows[0][5])
        for start in range(0, len(rows), BLOCK):
            yield _block_of(key, [column[start:start + BLOCK] for column in columns])
        return
    groups: dict[tuple[str, str, str, str], list[RecordRow]] = {}
    for row in rows:
        groups.setdefault((row[0], row[3], row[4], row[5]), []).append(row)
    for key, group in groups.items():
        for start in range(0, len(group), BLOCK):
            yield _block_of(key, list(zip(*group[start:start + BLOCK], strict=True)))


def _tuple(row: RecordRow | Mapping[str, Any]) -> RecordRow:
    return row if type(row) is tuple else tuple(row[name] for name in RECORD_COLUMNS)  # type: ignore[call-overload]


def _block_of(key: tuple[str, str, str, str], columns: Sequence[Sequence[Any]]) -> RecordBlock:
    return RecordBlock(key, columns[1], columns[2], columns[6], columns[7], columns[8],
                       columns[9])


def _list_text(outputs: str | Sequence[str]) -> str:
    return outputs if isinstance(outputs, str) else "[" + ",".join(outputs) + "]"


def _coalesced(blocks: Iterable[RecordBlock]) -> Iterator[RecordBlock]:
    """Blocks of one key joined, up to BLOCK records each: the writer makes them a chunk at a
    time, and every stored block costs two statements (and a feedback lookup decodes one)."""
    pending: dict[tuple[str, str, str, str], tuple[list[RecordBlock], int]] = {}
    for block in blocks:
        held, size = pending.get(block.key, ([], 0))
        if held and size + len(block) > BLOCK:
            yield _joined(held)
            held, size = [], 0
        held.append(block)
        pending[block.key] = (held, size + len(block))
    for held, _ in pending.values():
        yield _joined(held)


def _joined(blocks: list[RecordBlock]) -> RecordBlock:
    if len(blocks) == 1:
        return blocks[0]
    return RecordBlock(
        blocks[0].key,
        [v for b in blocks for v in b.request_ids], [v for b in blocks for v in b.times],
        [v for b in blocks for v in b.latencies_ms], [v for b in blocks for v in b.rows],
        [v for b in blocks for v in b.inputs],
        # "[a,b]" and "[c]" make "[a,b,c]": a block holds one record at least.
        "[" + ",".join(_list_text(b.outputs)[1:-1] for b in blocks) + "]",
    )


def _times_us(values: Sequence[float | datetime]) -> list[int]:
    """Microseconds since the epoch of each time, rounded as datetime.fromtimestamp rounds."""
    micros = _epoch_micros(values)
    if micros is None:
        return [_micros_of(_as_datetime(value)) for value in values]
    return micros.tolist()


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _micros_of(value: datetime) -> int:
    if value.tzinfo is None:
        raise ValueError(f"Got {value!r}. Expected a timezone-aware datetime.")
    return (value - _EPOCH) // _MICROSECOND


def _at_us(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


def _dumps_json(value: Any) -> str:
    if orjson is not None:
        try:
            return orjson.dumps(value).decode()
        except TypeError:  # a lone surrogate in a caller's string: json escapes it
            pass
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"))


def _loads_json(text: str | bytes) -> Any:
    if orjson is not None:
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:  # a lone surrogate, stored escaped: json reads it
            pass
    return json.loads(text)


def _parsed(value: Any) -> Any:
    """Inputs or outputs as read: JSON text (Parquet) or already decoded (blocks)."""
    return json.loads(value) if isinstance(value, str) else value


def _drop(ids: list[Any], body: dict[str, Any], positions: Sequence[int]) -> None:
    """Null the records at `positions` in a decoded block: gone, their place kept."""
    _with_inputs(body)
    for k in positions:
        ids[k] = None
        body["inputs"][k] = None
        body["outputs"][k] = None


def _grouped(pairs: Sequence[Any]) -> dict[Any, list[Any]]:
    out: dict[Any, list[Any]] = {}
    for key, value in pairs:
        out.setdefault(key, []).append(value)
    return out


def _unpack(deployment: str, variant: str, model: str, version: str, ids: Sequence[Any],
            body: dict[str, Any], low: int | None, high: int | None,
            positions: Collection[int] | None) -> list[dict[str, Any]]:
    """The held records of a decoded block, those with low <= time_us < high (and at
    `positions`, when given), as `_scan` returns them."""
    times, latencies, rows = body["time_us"], body["latency_ms"], body["rows"]
    inputs, outputs = _unpacked(body), body["outputs"]
    found = []
    for k in (sorted(positions) if positions is not None else range(len(ids))):
        if k >= len(ids) or ids[k] is None:
            continue
        at = times[k]
        if (low is not None and at < low) or (high is not None and at >= high):
            continue
        found.append({
            "request_id": ids[k], "time": _at_us(at), "deployment": deployment,
            "variant": variant, "model": model, "version": version,
            "latency_ms": latencies[k], "rows": rows[k],
            "inputs": inputs[k], "outputs": outputs[k],
        })
    return found


def expand(raw: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Stored records -> one row per served row, inputs and outputs as prefixed columns."""
    wanted = list(columns) if columns is not None else None
    want_inputs = wanted is None or any(c.startswith("input.") for c in wanted)
    want_outputs = wanted is None or any(c.startswith("output.") for c in wanted)
    rows: list[dict[str, Any]] = []
    for record in raw:
        inputs = _parsed(record["inputs"]) if want_inputs else []
        outputs = _parsed(record["outputs"]) if want_outputs else {}
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
