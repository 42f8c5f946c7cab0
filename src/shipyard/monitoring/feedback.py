"""Labels and human feedback, joined to prediction records by request id.

`submit_feedback` takes one item (the ground truth `label`, and/or `thumbs`, a `score`, a
`comment`); `import_feedback` takes a CSV, JSON-lines or Parquet file of them. Every item is
checked before anything is written: an unknown request id is `NotFoundError` (404), a
prediction past retention `GoneError` (410), a second label for one request `ConflictError`
(409; the database's unique index decides races), a label that does not fit the output
schema of the version that answered `SchemaError` (422), anything else malformed `UserError`
(400). A request that served several rows takes a list of labels, one per row.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from shipyard.bundle.manifest import FieldSpec, Schema
from shipyard.errors import (
    ConflictError,
    GoneError,
    NotFoundError,
    SchemaError,
    ShipyardError,
    UserError,
)
from shipyard.monitoring.records import PredictionRecord
from shipyard.monitoring.recordstore import RecordStore, feedback_table

SchemaLookup = Callable[[str, str], Schema | None]  # (model, version) -> output schema
LABEL_OUTPUTS = ("label", "prediction")
FIELDS = ("request_id", "label", "thumbs", "score", "comment")
MAX_COMMENT = 10_000
MAX_ERRORS = 20
TRUE = {"true", "1", "yes", "up"}
FALSE = {"false", "0", "no", "down"}


@dataclass(frozen=True, slots=True)
class Feedback:
    """One stored feedback item."""

    deployment: str
    request_id: str
    time: datetime
    label: Any = None
    thumbs: bool | None = None
    score: float | None = None
    comment: str | None = None


@dataclass
class ImportReport:
    """What `import_feedback` did: counts and the first errors, row numbers from 1."""

    rows: int = 0
    written: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "written": self.written, "failed": self.failed,
                "errors": list(self.errors)}

    def _fail(self, row: int, request_id: Any, error: ShipyardError) -> None:
        self.failed += 1
        if len(self.errors) < MAX_ERRORS:
            shown = request_id if isinstance(request_id, str) else None
            self.errors.append({"row": row, "request_id": shown, "code": error.code,
                                "message": error.message})


def submit_feedback(
    store: RecordStore,
    deployment: str,
    request_id: str,
    *,
    label: Any = None,
    thumbs: bool | None = None,
    score: float | None = None,
    comment: str | None = None,
    retention_days: float,
    schema_of: SchemaLookup | None = None,
    now: datetime | None = None,
) -> Feedback:
    """Check one feedback item and store it; raises (writing nothing) when it does not fit."""
    now = now or datetime.now(UTC)
    item = {"request_id": request_id, "label": label, "thumbs": thumbs, "score": score,
            "comment": comment}
    row = _prepare(store, deployment, item, retention_days, schema_of, now, from_text=False)
    try:
        with store.transaction() as conn:
            if row["label"] is not None and _has_label(conn, deployment, request_id):
                raise _duplicate(request_id)
            conn.execute(insert(feedback_table), [row])
    except IntegrityError:
        raise _duplicate(request_id) from None  # a racing writer stored its label first
    return _feedback(row)


def import_feedback(
    store: RecordStore,
    deployment: str,
    path: Path,
    *,
    retention_days: float,
    schema_of: SchemaLookup | None = None,
    now: datetime | None = None,
) -> ImportReport:
    """Store every good row of a feedback file; bad rows are reported, never half-written.

    Columns: request_id and any of label, thumbs, score, comment. CSV values are text and are
    converted to the label's type (a list of labels as JSON text); an empty cell is missing.
    """
    import pyarrow as pa  # on first use, so that a server never pays its import at start

    now = now or datetime.now(UTC)
    report = ImportReport()
    good: list[tuple[int, dict[str, Any]]] = []
    labelled: set[str] = set()
    from_text = Path(path).suffix.lower() == ".csv"
    try:
        items = list(_read(Path(path)))  # all read first: a broken file writes nothing
    except (UnicodeDecodeError, csv.Error, pa.ArrowException) as exc:
        raise UserError(
            f"Could not read {Path(path).name!r} ({type(exc).__name__}: {str(exc)[:200]}).",
            hint="Send UTF-8 CSV with a header line, JSON lines, or a Parquet file.",
        ) from None
    for number, item in items:
        report.rows += 1
        request_id = item.get("request_id") if isinstance(item, dict) else None
        try:
            if not isinstance(item, dict):
                raise UserError(f"Row {number} is not an object.", hint="One JSON object a line.")
            row = _prepare(store, deployment, item, retention_days, schema_of, now, from_text)
            if row["label"] is not None:
                if row["request_id"] in labelled:
                    raise _duplicate(row["request_id"])
                labelled.add(row["request_id"])
            good.append((number, row))
        except ShipyardError as error:
            report._fail(number, request_id, error)
    _store_rows(store, deployment, good, report)
    return report


def _store_rows(
    store: RecordStore, deployment: str, good: list[tuple[int, dict[str, Any]]],
    report: ImportReport,
) -> None:
    """All good rows in one transaction; row by row only if a racing label got in first."""
    try:
        with store.transaction() as conn:
            for _, row in good:
                if row["label"] is not None and _has_label(conn, deployment, row["request_id"]):
                    raise _duplicate(row["request_id"])
            if good:
                conn.execute(insert(feedback_table), [row for _, row in good])
        report.written += len(good)
        return
    except (ConflictError, IntegrityError):
        pass  # fall through: find out which rows conflict, store the others
    for number, row in good:
        try:
            with store.transaction() as conn:
                if row["label"] is not None and _has_label(conn, deployment, row["request_id"]):
                    raise _duplicate(row["request_id"])
                conn.execute(insert(feedback_table), [row])
            report.written += 1
        except IntegrityError:
            report._fail(number, row["request_id"], _duplicate(row["request_id"]))
        except ConflictError as error:
            report._fail(number, row["request_id"], error)


# -- checks ------------------------------------------------------------------------------------


def _prepare(
    store: RecordStore,
    deployment: str,
    item: Mapping[str, Any],
    retention_days: float,
    schema_of: SchemaLookup | None,
    now: datetime,
    from_text: bool,
) -> dict[str, Any]:
    """The row to insert for one item, or the error that refuses it."""
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        raise UserError(
            f"Got unknown feedback field(s) {', '.join(repr(u)[:40] for u in unknown[:5])}. "
            f"Expected {', '.join(FIELDS)}.",
            hint="Rename or remove the column.",
        )
    request_id = item.get("request_id")
    if not isinstance(request_id, str) or not 0 < len(request_id) <= 128:
        raise UserError(
            "Got no usable request_id. Expected the x-request-id of a served prediction.",
            hint="Send the request id the prediction's response carried.",
        )
    label, thumbs = _missing(item.get("label")), _thumbs(_missing(item.get("thumbs")))
    score, comment = _score(_missing(item.get("score"))), _comment(_missing(item.get("comment")))
    if label is None and thumbs is None and score is None and comment is None:
        raise UserError(
            f"Got feedback for {request_id!r} with nothing in it.",
            hint="Send a label, thumbs, a score or a comment.",
        )
    record = store.get(deployment, request_id)
    if record is None:
        raise NotFoundError(
            f"Got feedback for request {request_id!r}, but deployment {deployment!r} has no "
            "record of it.",
            hint="Check the request id (x-request-id); records may be sampled (records.sample) "
            "or already purged.",
        )
    cutoff = now - timedelta(days=retention_days)
    if record.at < cutoff:
        raise GoneError(
            f"Request {request_id!r} was served at {record.at.isoformat()}, past the "
            f"{retention_days:g}-day retention.",
            hint="Send feedback sooner, or raise records.retention_days.",
        )
    if label is not None:
        schema = schema_of(record.model, record.version) if schema_of is not None else None
        label = check_label(label, record, label_spec(schema), from_text=from_text)
    return {
        "deployment": deployment,
        "request_id": request_id,
        "record_time": record.at,
        "time": now,
        "label": None if label is None else json.dumps(label, ensure_ascii=True),
        "thumbs": thumbs,
        "score": score,
        "comment": comment,
    }


def label_spec(schema: Schema | None) -> FieldSpec | None:
    """The output a label is ground truth for: `label`, else `prediction`, else the first."""
    if schema is None or not schema.outputs:
        return None
    by_name = {spec.name: spec for spec in schema.outputs}
    for name in LABEL_OUTPUTS:
        if name in by_name:
            return by_name[name]
    others = [spec for spec in schema.outputs if spec.name != "probabilities"]
    return others[0] if others else None


def check_label(
    value: Any, record: PredictionRecord, spec: FieldSpec | None, *, from_text: bool = False
) -> Any:
    """The label in its stored form: one value, or one per row of a multi-row request."""
    if from_text and isinstance(value, str) and value.lstrip().startswith("["):
        with contextlib.suppress(ValueError):  # if not JSON, it is simply a string label
            value = json.loads(value)
    scalar = spec is None or not spec.shape
    if record.rows > 1:
        if not isinstance(value, list) or len(value) != record.rows:
            raise _bad_label(value, record, spec, f"a list of {record.rows} labels, one per row")
        return [_one(item, record, spec, from_text) for item in value]
    if scalar and isinstance(value, list) and len(value) == 1:
        value = value[0]  # [label] for a one-row request is the same label
    return _one(value, record, spec, from_text)


def _one(value: Any, record: PredictionRecord, spec: FieldSpec | None, from_text: bool) -> Any:
    if spec is not None and spec.shape:
        if not isinstance(value, list):
            raise _bad_label(value, record, spec, f"a list (shape {spec.shape})")
        if spec.shape[0] >= 0 and len(value) != spec.shape[0]:
            raise _bad_label(value, record, spec, f"{spec.shape[0]} values")
        element = spec.model_copy(update={"shape": []})
        return [_one(item, record, element, from_text) for item in value]
    if spec is None:
        if value is None or isinstance(value, bool | int | str) or _finite(value):
            return value
        raise _bad_label(value, record, spec, "a string, a number or a boolean")
    converted = _convert(value, spec, from_text)
    if converted is _INVALID:
        raise _bad_label(value, record, spec, _expected(spec))
    if spec.categories is not None and not any(
        type(converted) is type(c) and converted == c for c in spec.categories
    ):
        raise _bad_label(value, record, spec, _expected(spec))
    return converted


_INVALID = object()


def _convert(value: Any, spec: FieldSpec, from_text: bool) -> Any:
    dtype = spec.dtype
    if from_text and isinstance(value, str):
        text = value.strip()
        try:
            if dtype in ("int32", "int64"):
                return int(text)
            if dtype in ("float32", "float64"):
                value = float(text)
            elif dtype == "bool":
                lowered = text.lower()
                return True if lowered in TRUE else False if lowered in FALSE else _INVALID
        except ValueError:
            return _INVALID
    if dtype == "bool":
        return value if isinstance(value, bool) else _INVALID
    if dtype in ("int32", "int64"):
        if isinstance(value, bool):
            return _INVALID
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)  # JSON writers often send 1.0 for 1
        return _INVALID
    if dtype in ("float32", "float64"):
        return float(value) if _finite(value) else _INVALID
    if isinstance(value, str):
        return value
    if spec.categories is not None and isinstance(value, bool | int):
        return value  # a category output whose classes are numbers
    return _INVALID


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _expected(spec: FieldSpec) -> str:
    if spec.categories is not None:
        shown = ", ".join(repr(c) for c in spec.categories[:20])
        more = ", ..." if len(spec.categories) > 20 else ""
        return f"one of [{shown}{more}]"
    return {"bool": "true or false", "int32": "an integer", "int64": "an integer",
            "float32": "a finite number", "float64": "a finite number"}.get(spec.dtype, "a string")


def _bad_label(
    value: Any, record: PredictionRecord, spec: FieldSpec | None, what: str
) -> SchemaError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else shown[:80] + "…"
    output = f" (output {spec.name!r}, {spec.dtype})" if spec is not None else ""
    return SchemaError(
        f"Got label {shown} for request {record.request_id!r}, answered by "
        f"{record.model}:{record.version}. Expected {what}{output}.",
        hint="Send the ground truth in the type of the model's output.",
        field="label",
    )


def _missing(value: Any) -> Any:
    """Empty CSV cells and nulls mean "not given"; a NaN is a value, and refused as one."""
    if value is None or (isinstance(value, str) and value == ""):
        return None
    return value


def _thumbs(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE | FALSE:
        return value.strip().lower() in TRUE
    raise UserError(f"Got thumbs {str(value)[:40]!r}. Expected true (up) or false (down).",
                    hint="Send thumbs: true or false.")


def _score(value: Any) -> float | None:
    if value is None:
        return None
    try:
        number = float(value) if isinstance(value, str | int | float) else math.nan
    except ValueError:
        number = math.nan
    if isinstance(value, bool) or not math.isfinite(number):
        raise UserError(f"Got score {str(value)[:40]!r}. Expected a finite number.",
                        hint="Send score as a number, e.g. 4 or 0.8.")
    return number


def _comment(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_COMMENT or "\x00" in value:
        raise UserError(
            f"Got a comment that is not text of at most {MAX_COMMENT} characters "
            "(or holds a NUL character).",
            hint="Shorten the comment.",
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UserError("Got a comment that is not valid Unicode text.",
                        hint="Send UTF-8 text.") from None
    return value


def _duplicate(request_id: str) -> ConflictError:
    return ConflictError(
        f"Request {request_id!r} already has a label.",
        hint="A prediction takes one label; send thumbs, a score or a comment to add more.",
    )


def _has_label(conn: Any, deployment: str, request_id: str) -> bool:
    t = feedback_table
    query = select(t.c.id).where(
        t.c.deployment == deployment, t.c.request_id == request_id, t.c.label.is_not(None)
    )
    return conn.execute(query.limit(1)).first() is not None


def _feedback(row: Mapping[str, Any]) -> Feedback:
    return Feedback(
        deployment=row["deployment"], request_id=row["request_id"], time=row["time"],
        label=None if row["label"] is None else json.loads(row["label"]),
        thumbs=row["thumbs"], score=row["score"], comment=row["comment"],
    )


# -- files -------------------------------------------------------------------------------------


def _read(path: Path) -> Iterator[tuple[int, Any]]:
    """(row number from 1, item) for each row of a CSV, JSON-lines or Parquet file."""
    suffix = path.suffix.lower()
    if not path.is_file():
        raise NotFoundError(f"Got {str(path)[:200]!r}. No such file.", hint="Check the path.")
    if suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            if reader.fieldnames is None or "request_id" not in reader.fieldnames:
                raise UserError(f"{path.name} has no request_id column.",
                                hint=f"The first line names the columns: {', '.join(FIELDS)}.")
            for number, row in enumerate(reader, start=1):
                yield number, {k: v for k, v in row.items() if k is not None}
        return
    if suffix in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except ValueError:
                    yield number, None  # reported as "not an object"
        return
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        for number, row in enumerate(pq.read_table(path).to_pylist(), start=1):
            yield number, row
        return
    raise UserError(
        f"Got a feedback file {path.name!r}. Expected .csv, .jsonl (JSON lines) or .parquet.",
        hint="Convert the file, or rename it to the suffix of its format.",
    )
