"""Prediction records: what each served prediction was, and the writer that stores them.

`PredictionRecord` is one served batch. `RecordWriter.submit` costs about a microsecond: a
sampling draw and a deque append. A daemon thread takes what has gathered every `interval_s`,
turns the served batches into JSON rows, redacts them (`redact.py`: redaction happens there
and only there, so no path can store an input unredacted) and writes them in batches to a
`RecordSink` (`recordstore.py`'s `RecordStore`). `flush()` and `close()` drain everything
submitted before them. A failing write is retried with backoff, then logged and counted,
never raised: monitoring must not take the server down.

The writer shares the server's core, so a record must cost little there (a few microseconds
on top of the database's insert; bench/monitoring/records_micro.py measures it). When every
field's policy is keep, a record's inputs and outputs go to orjson as served (NumPy arrays
natively, NaN and infinity as null), with no per-value Python conversion; only a value orjson
cannot write on its own goes through `plain`, and a record orjson refuses as a whole (a lone
surrogate, an integer over 64 bits, a non-string key) takes the slower path through
`rows_of`, `plain` and `json`. Both store the same JSON values, but for float32: orjson
writes the shortest text that reads back as the same float32 (0.1), `plain` its float64
widening (0.10000000149011612). Redacting policies always take the plain path: a hash must
see exactly the canonical value. Rows reach the sink as tuples in `RECORD_COLUMNS` order,
the time as seconds since the epoch; where the sink packs arrays (the database store), a
served float64, int64, int32 or bool array is handed over as it is, and the store writes a
block's arrays as their bytes.
"""

from __future__ import annotations

import json
import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Protocol

import numpy as np
import pandas as pd
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from shipyard.bundle.manifest import NAME_PATTERN
from shipyard.bundle.schema import ARRAY_FIELD, TEXT_FIELD
from shipyard.cpu import Pacer, name_thread
from shipyard.monitoring.recordstore import (
    MAX_REQUEST_ID,
    PredictionRecord,
    RecordBlock,
    RecordRow,
    RecordStore,
    array_rows_json,
    count_rows,
    packable,
)
from shipyard.monitoring.redact import Redactor, load_key, plain
from shipyard.registry.database import Database
from shipyard.routing import MonitoringConfig, RecordsConfig
from shipyard.settings import Settings

try:  # the serve extra's dependency; without it records are written with json, more slowly
    import orjson
except ImportError:  # pragma: no cover - the server always has it
    orjson = None  # type: ignore[assignment]

log = logging.getLogger("shipyard.monitoring.records")

# One transaction a second: at thousands of requests a second, each commit (and SQLite's WAL
# checkpoint behind it) is shared by thousands of records.
INTERVAL_S = 1.0
BATCH_SIZE = 5000
MAX_PENDING = 100_000
RETRIES = 3
BACKOFF_S = 0.2
PURGE_EVERY_S = 3600.0
ROWS_PER_CHUNK = 64  # an Answered's records are made this many at once, paced between
_YEAR_2200 = 7258118400.0  # seconds since the epoch: times before it need no range check


def rows_of(batch: Any) -> list[dict[str, Any]]:
    """The batch as JSON-able row dicts keyed by input field name."""
    if batch is None:
        return []
    if isinstance(batch, pd.DataFrame):
        # to_numpy, not to_dict("records"): the same values a hundred times faster.
        names = _names(batch)
        return [dict(zip(names, plain(row), strict=True))
                for row in batch.to_numpy(dtype=object).tolist()]
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


def _picker(positions: list[int]) -> Callable[[Any], Any]:
    """Takes the entries at `positions` (ascending) of a column: a slice where they run
    without a gap, as they do unless a request failed or sampling left some out."""
    first, last = positions[0], positions[-1]
    if last - first + 1 == len(positions):
        return lambda column: column[first:last + 1]
    return lambda column: [column[k] for k in positions]


def _names(frame: pd.DataFrame) -> list[str]:
    # tolist() is C; iterating an Index is ten times slower.
    return [name if type(name) is str else str(name) for name in frame.columns.tolist()]


def _json(value: Any) -> str:
    # ASCII-only: a lone surrogate or a NUL in a caller's string is escaped, never a write
    # that PostgreSQL refuses.
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":"))


def raw_rows(batch: Any) -> list[dict[str, Any]]:
    """The batch as row dicts keyed by input field name, values as served (for orjson).

    The same rows as `rows_of`, without converting each value: NumPy rows and scalars stay
    as they are. Layouts other than arrays, frames and texts go through `rows_of`.
    """
    if isinstance(batch, np.ndarray):
        if batch.ndim == 0:
            return [{ARRAY_FIELD: batch}]
        return [{ARRAY_FIELD: row} for row in batch]
    if isinstance(batch, pd.DataFrame):
        # One conversion for the whole frame: numeric blocks become Python numbers, anything
        # else stays the object it is (a Timestamp, <NA>, an array of a shaped field).
        names = _names(batch)
        return [dict(zip(names, row, strict=True))
                for row in batch.to_numpy(dtype=object).tolist()]
    if isinstance(batch, list) and all(type(item) is str for item in batch):
        return [{TEXT_FIELD: item} for item in batch]
    if isinstance(batch, list) and all(type(item) is dict for item in batch):
        return batch  # row dicts already (a scrubbed frame's rows): orjson takes them as is
    return rows_of(batch)


if orjson is not None:
    _ORJSON_OPTIONS = (
        orjson.OPT_SERIALIZE_NUMPY
        # These go to `_default`, so that they are stored as `plain` stores them.
        | orjson.OPT_PASSTHROUGH_DATETIME
        | orjson.OPT_PASSTHROUGH_DATACLASS
    )
    _ORJSON_REFUSED: tuple[type[Exception], ...] = (orjson.JSONEncodeError,)

    def _default(value: Any) -> Any:
        # What orjson does not write itself: a non-contiguous or object array, bytes, a
        # Timestamp, <NA>... as `plain` makes it.
        if isinstance(value, np.ndarray):
            return value.tolist()
        return plain(value)

    def _dumps(value: Any) -> str:
        return orjson.dumps(value, option=_ORJSON_OPTIONS, default=_default).decode()
else:  # pragma: no cover
    _ORJSON_REFUSED = ()

    def _dumps(value: Any) -> str:
        return _json(plain(value))


def _dumps_inputs(batch: Any) -> str:
    """JSON text of `raw_rows(batch)`; a 2-D numeric array, the common request, in one
    orjson call (`recordstore.array_rows_json`)."""
    text = array_rows_json(batch)
    return text if text is not None else _dumps(raw_rows(batch))


def _text(value: Any) -> str:
    """JSON text of plain values: orjson where it can, json where it refuses (surrogates)."""
    try:
        return _dumps(value)
    except _ORJSON_REFUSED:
        return _json(value)


class RecordSink(Protocol):
    """Where the writer puts stored records (`recordstore.RecordStore`): `RecordBlock`s, or
    tuples in `RECORD_COLUMNS` order, `time` seconds since the epoch, `inputs` and `outputs`
    JSON text; `inputs` may be the served array itself where the sink has `packs_arrays`
    true and `recordstore.packable(array)` holds (the database store packs a block's
    arrays)."""

    def write(self, rows: Sequence[RecordBlock | RecordRow],
              pace: Callable[[], None] | None = None) -> None: ...

    def purge(self, deployment: str, before: datetime) -> tuple[int, int]: ...


@dataclass(slots=True)
class Answered:
    """What one variant answered since the monitor's last flush, handed to the writer in one
    go (`RecordWriter.submit_answered`) as columns, one entry per request: the flush builds
    no object per request, and the writer makes each chunk's rows from slices. A request
    whose `outputs` is None (it failed) is skipped. `scrub` is applied to each request's
    outputs, and to its batch when `scrub_inputs`."""

    deployment: str
    variant: str
    model: str
    version: str
    request_ids: Sequence[Any]
    times: Sequence[Any] | np.ndarray  # seconds since the epoch
    latencies_ms: Sequence[Any] | np.ndarray
    batches: Sequence[Any]
    outputs: Sequence[Mapping[str, Any] | None]
    answered_by: Sequence[tuple[str, str] | None]  # (variant, version) where a fallback did
    scrub: Callable[[Any], Any]
    scrub_inputs: bool

    def __len__(self) -> int:
        return len(self.request_ids)

    @classmethod
    def of(cls, deployment: str, variant: str, model: str, version: str, items: Sequence[Any],
           scrub: Callable[[Any], Any], scrub_inputs: bool) -> Answered:
        """From objects with attributes request_id, time, latency_ms, batch, outputs and
        answered_by, one per request."""
        return cls(deployment, variant, model, version, [i.request_id for i in items],
                   [i.time for i in items], [i.latency_ms for i in items],
                   [i.batch for i in items], [i.outputs for i in items],
                   [i.answered_by for i in items], scrub, scrub_inputs)


@dataclass
class WriterStats:
    """Counters for the API and tests, read by anyone. Each is written by one thread: the
    submitter's, or the writer's (sampled_out too, for `submit_answered`)."""

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
        # A sink that packs arrays (the database store) takes a served array as it is.
        self._packs = bool(getattr(sink, "packs_arrays", False))
        self.config = config
        self.deployment = deployment
        self.redactor = Redactor(config, key)
        self._key = key
        self.stats = WriterStats()
        self._sample = config.sample
        self._random = random.Random(seed).random  # noqa: S311 - sampling, not secrecy
        self._queue: deque[PredictionRecord | Answered | threading.Event] = deque()
        # Items of the queued Answered beyond one each (the entry counts in len(_queue)),
        # under _answered_lock: `pending` counts records to come, not queue entries.
        self._answered_pending = 0
        self._answered_lock = threading.Lock()
        self._max_pending = max_pending
        self._interval_s = interval_s
        self._batch_size = batch_size
        self._retries = retries
        self._backoff_s = backoff_s
        self._purge_every_s = purge_every_s
        self._last_purge = 0.0
        self._valid_names: set[str] = set()  # deployment names already checked
        self._closed = False
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._pace = Pacer()
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

    def submit_answered(self, answered: Answered) -> None:
        """Queue what a variant answered since the last flush (one append for them all);
        sampling, as `submit`'s, is drawn per item when the writer makes the records. Past
        `max_pending` records to come, the whole hand-off is dropped and counted."""
        count = len(answered)
        with self._answered_lock:
            if self._closed or len(self._queue) + self._answered_pending >= self._max_pending:
                self.stats.dropped += count
                return
            self._answered_pending += count - 1  # the entry itself counts in len(_queue)
        self._queue.append(answered)

    @property
    def pending(self) -> int:
        return len(self._queue) + self._answered_pending

    def __repr__(self) -> str:
        return f"RecordWriter({self.deployment!r}, {self.sink!r}, pending={self.pending})"

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
        name_thread()
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            self._pace.restart()
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
            batch: list[RecordBlock | RecordRow] = []
            size = 0  # records in batch
            while True:
                try:
                    item = self._queue.popleft()
                except IndexError:
                    break
                if isinstance(item, threading.Event):
                    self._write(batch)  # everything before the marker, then release it
                    batch, size = [], 0
                    item.set()
                    continue
                if isinstance(item, Answered):
                    for made in self._answered_rows(item):
                        self._pace()
                        batch.extend(made)
                        size += _records_in(made)
                        if size >= self._batch_size:
                            self._write(batch)
                            batch, size = [], 0
                    if len(item) > 1:
                        with self._answered_lock:
                            self._answered_pending -= len(item) - 1
                    continue
                self._pace()
                row = self._row(item)
                if row is not None:
                    batch.append(row)
                    size += 1
                if size >= self._batch_size:
                    self._write(batch)
                    batch, size = [], 0
            self._write(batch)

    def _answered_rows(self, answered: Answered) -> Iterator[list[RecordBlock] | list[RecordRow]]:
        """The records of a hand-off, a chunk at a time (the drain paces between chunks). A
        chunk is made column by column into blocks, each check over the whole chunk at once;
        a chunk holding anything odd is made again record by record, so only the odd record
        is lost."""
        outputs = answered.outputs
        picked = [k for k in range(len(answered)) if outputs[k] is not None]
        if self._sample < 1.0:
            sample, draw = self._sample, self._random
            kept = [k for k in picked if draw() < sample]
            self.stats.sampled_out += len(picked) - len(kept)
            picked = kept
        for start in range(0, len(picked), ROWS_PER_CHUNK):
            chunk = picked[start:start + ROWS_PER_CHUNK]
            try:
                blocks = self._chunk_blocks(answered, chunk)
            except Exception:  # noqa: BLE001 - made again one by one below, which says why
                blocks = None
            if blocks is not None:
                yield blocks
                continue
            yield [row for row in map(partial(self._item_row, answered), chunk)
                   if row is not None]

    def _chunk_blocks(self, answered: Answered, chunk: list[int]) -> list[RecordBlock] | None:
        """The records of the requests at `chunk` (ascending positions), one pass per column,
        as one block per variant that answered (a fallback answers as itself); None where
        any record needs a closer look (`_item_row`): an odd request id, time or deployment,
        outputs that are not a dict, a scrub or serialisation that fails."""
        deployment, variant, version = answered.deployment, answered.variant, answered.version
        self._check_name(deployment)
        pick = _picker(chunk)
        ids = pick(answered.request_ids)
        if set(map(type, ids)) != {str} or not 0 < min(map(len, ids)) <= max(
                map(len, ids)) <= MAX_REQUEST_ID:
            return None
        times = np.asarray(pick(answered.times), dtype=np.float64)
        if not ((times >= 0.0) & (times < _YEAR_2200)).all():
            return None
        latencies = np.asarray(pick(answered.latencies_ms), dtype=np.float64)
        latency_list: list[float | None] = latencies.tolist()
        if not np.isfinite(latencies).all():
            latency_list = [v if math.isfinite(v) else None for v in latencies.tolist()]
        batches = pick(answered.batches)
        counts = [count_rows(batch) for batch in batches]
        scrub = answered.scrub
        if answered.scrub_inputs:
            batches = [scrub(batch) for batch in batches]
        inputs = list(map(self._inputs, batches))
        outputs = list(map(scrub, pick(answered.outputs)))
        if set(map(type, outputs)) != {dict}:
            return None
        answered_by = pick(answered.answered_by)
        model, time_list = answered.model, times.tolist()
        if not any(answered_by):
            return [RecordBlock((deployment, variant, model, version), ids, time_list,
                                latency_list, counts, inputs, self._outputs_of(outputs))]
        by: dict[tuple[str, str], list[int]] = {}
        for k, who in enumerate(answered_by):
            by.setdefault(who or (variant, version), []).append(k)
        blocks = []
        for (name, name_version), positions in by.items():
            take = _picker(positions)
            blocks.append(RecordBlock(
                (deployment, name, model, name_version), take(ids), take(time_list),
                take(latency_list), take(counts), take(inputs), self._outputs_of(take(outputs))))
        return blocks

    def _item_row(self, answered: Answered, k: int) -> RecordRow | None:
        """The row of the request at position `k`, or None (counted, logged) when it cannot
        be one."""
        by, by_version = answered.answered_by[k] or (answered.variant, answered.version)
        batch = answered.batches[k]
        try:
            inputs = answered.scrub(batch) if answered.scrub_inputs else batch
            outputs = answered.scrub(answered.outputs[k])
        except Exception as exc:  # noqa: BLE001 - as in _make_row: only this one is lost
            self._rejected(exc)
            return None
        return self._make_row(answered.request_ids[k], answered.deployment, answered.times[k],
                              by, answered.model, by_version, answered.latencies_ms[k],
                              count_rows(batch), inputs, outputs)

    def _row(self, record: PredictionRecord) -> RecordRow | None:
        return self._make_row(record.request_id, record.deployment, record.time, record.variant,
                              record.model, record.version, record.latency_ms, record.rows,
                              record.inputs, record.outputs)

    def _make_row(self, request_id: Any, deployment: Any, time_s: Any, variant: str, model: str,
                  version: str, latency_ms: Any, rows: Any, inputs: Any,
                  outputs: Any) -> RecordRow | None:
        """The stored row of one record, or None (counted, logged) when it cannot be one."""
        try:
            if not isinstance(request_id, str) or not 0 < len(request_id) <= MAX_REQUEST_ID:
                raise ValueError(f"request id must be 1 to {MAX_REQUEST_ID} characters")
            self._check_name(deployment)
            at = float(time_s)
            if not 0.0 <= at < _YEAR_2200:
                datetime.fromtimestamp(at, UTC)  # a time a datetime cannot hold is refused here
            latency: float | None = float(latency_ms)
            if not math.isfinite(latency):  # type: ignore[arg-type]
                latency = None
            return (deployment, request_id, at, variant, model, version, latency, int(rows),
                    self._inputs(inputs), self._outputs(outputs))
        except Exception as exc:  # noqa: BLE001 - one odd record must not stop the others
            self._rejected(exc)
            return None

    def _check_name(self, deployment: Any) -> None:
        if deployment not in self._valid_names:
            if not NAME_PATTERN.fullmatch(deployment):
                raise ValueError(f"deployment {deployment[:80]!r} is not a valid name")
            if len(self._valid_names) < 1000:
                self._valid_names.add(deployment)

    def _rejected(self, exc: Exception) -> None:
        self.stats.rejected += 1
        log.warning("prediction records of %s: skipped a record that cannot be stored (%s: %s)",
                    self.deployment, type(exc).__name__, exc)

    def _inputs(self, batch: Any) -> Any:
        redactor = self.redactor  # one read: reconfigure() swaps the attribute
        if redactor.identity and orjson is not None:
            if self._packs and packable(batch):
                return batch  # the store packs a block's arrays in one go
            try:
                return _dumps_inputs(batch)
            except Exception:  # noqa: BLE001, S110 - the plain path below stores it, or says why
                pass
        return _text(redactor.rows(rows_of(batch)))

    def _outputs_of(self, outputs: list[dict[str, Any]]) -> str | list[str]:
        """The outputs as a block stores them: for the database, the JSON text of their list
        in one call (raises where a record needs `_outputs`); else each record's text."""
        if self._packs and orjson is not None:
            return _dumps(outputs)
        return list(map(self._outputs, outputs))

    def _outputs(self, outputs: Mapping[str, Any] | None) -> str:
        values = outputs if type(outputs) is dict else dict(outputs or {})
        if orjson is not None:
            try:
                return _dumps(values)
            except Exception:  # noqa: BLE001, S110 - as for inputs
                pass
        return _text(plain(values))

    def _write(self, rows: list[RecordBlock | RecordRow]) -> None:
        if not rows:
            return
        count = _records_in(rows)
        for attempt in range(self._retries + 1):
            try:
                self.sink.write(rows, self._pace)
                self.stats.written += count
                return
            except Exception as exc:  # noqa: BLE001 - logged and counted below, never raised
                self.stats.last_error = _reason(exc)
                if _row_problem(exc) and count > 1:
                    # The database is up but refuses some record: write one by one so a
                    # single bad record costs only itself.
                    for row in _one_by_one(rows):
                        self._write([row])
                    return
                if attempt == self._retries:
                    self.stats.failed += count
                    log.error(
                        "prediction records of %s: gave up on %d records after %d attempts: %s",
                        self.deployment, count, attempt + 1, self.stats.last_error,
                    )
                    return
                self.stats.retries += 1
                time.sleep(self._backoff_s * 2**attempt)


def _records_in(items: Sequence[RecordBlock | RecordRow]) -> int:
    return sum(len(item) if type(item) is RecordBlock else 1 for item in items)


def _one_by_one(items: Sequence[RecordBlock | RecordRow]) -> Iterator[RecordRow]:
    for item in items:
        if type(item) is RecordBlock:
            yield from item.records()
        else:
            yield item  # type: ignore[misc]


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
