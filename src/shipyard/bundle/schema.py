"""Input and output schemas: inferred from a sample, enforced on every batch.

`infer_inputs` reads a pandas DataFrame, a 2-D NumPy array or a list of strings and writes the
typed fields; `to_batch` turns what a caller sends (a DataFrame, an array, records, columns or
strings) into the layout the model takes, refusing anything the schema does not allow with a
`SchemaError` that names the field, the row and the rule broken.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from shipyard.bundle.manifest import DType, FieldSpec, Schema
from shipyard.errors import SchemaError

MAX_INFERRED_CATEGORIES = 32
ARRAY_FIELD = "input"
TEXT_FIELD = "text"
FLOAT_LIMITS = {
    "float32": float(np.finfo(np.float32).max),
    "float64": float(np.finfo(np.float64).max),
}
INT_LIMITS = {
    "int32": (int(np.iinfo(np.int32).min), int(np.iinfo(np.int32).max)),
    "int64": (int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)),
}
NUMPY_DTYPES = {
    "float32": np.float32,
    "float64": np.float64,
    "int32": np.int32,
    "int64": np.int64,
    "bool": np.bool_,
}


def _dtype_of(values: np.ndarray | pd.Series) -> DType:
    kind = values.dtype.kind
    if kind == "f":
        return "float32" if values.dtype.itemsize <= 4 else "float64"
    if kind in "iu":
        return "int32" if values.dtype.itemsize <= 4 and kind == "i" else "int64"
    if kind == "b":
        return "bool"
    return "string"


def _plain(value: Any) -> str | int | bool:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool | int | str):
        return value
    return str(value)


def infer_inputs(sample: Any, extra: Any = None) -> Schema:
    """Infer the input schema from a sample (and optionally more rows, e.g. the eval data)."""
    if isinstance(sample, pd.DataFrame):
        frame = (
            sample
            if extra is None or not isinstance(extra, pd.DataFrame)
            else pd.concat([sample, extra], ignore_index=True)
        )
        fields = []
        for name in sample.columns:
            column = frame[name]
            nullable = bool(column.isna().any())
            if isinstance(column.dtype, pd.CategoricalDtype):
                cats = [_plain(c) for c in column.cat.categories]
                fields.append(
                    FieldSpec(name=str(name), dtype="category", categories=cats, nullable=nullable)
                )
                continue
            dtype = _dtype_of(column)
            if dtype == "string":
                distinct = column.dropna().unique()
                if len(distinct) <= MAX_INFERRED_CATEGORIES:
                    cats = sorted({_plain(v) for v in distinct}, key=str)
                    fields.append(
                        FieldSpec(
                            name=str(name), dtype="category", categories=cats, nullable=nullable
                        )
                    )
                    continue
            fields.append(FieldSpec(name=str(name), dtype=dtype, nullable=nullable))
        return Schema(layout="frame", inputs=fields)
    if isinstance(sample, np.ndarray):
        if sample.ndim < 2:
            raise SchemaError(
                f"Got a {sample.ndim}-D array as sample. Expected a 2-D array (rows, features).",
                hint="Pass sample=X[:5], not a single row; reshape a row with x.reshape(1, -1).",
                field="sample",
            )
        dtype = _dtype_of(sample)
        nullable = bool(sample.dtype.kind == "f" and np.isnan(sample).any())
        field = FieldSpec(
            name=ARRAY_FIELD,
            dtype=dtype,
            shape=list(sample.shape[1:]),
            nullable=nullable,
        )
        return Schema(layout="array", inputs=[field])
    if isinstance(sample, Sequence) and sample and all(isinstance(s, str) for s in sample):
        return Schema(layout="text", inputs=[FieldSpec(name=TEXT_FIELD, dtype="string")])
    raise SchemaError(
        f"Got a sample of type {type(sample).__name__}. Expected a pandas DataFrame, a 2-D "
        "NumPy array or a non-empty list of strings.",
        hint="Pass a few rows of the training data as sample=.",
        field="sample",
    )


def infer_outputs(
    outputs: Mapping[str, np.ndarray], classes: Sequence[Any] | None
) -> list[FieldSpec]:
    fields = []
    for name, values in outputs.items():
        values = np.asarray(values)
        spec = FieldSpec(name=name, dtype=_dtype_of(values), shape=list(values.shape[1:]))
        if name == "label" and classes is not None:
            spec.categories = [_plain(c) for c in classes]
        if name == "probabilities":
            spec.minimum, spec.maximum = 0.0, 1.0
        fields.append(spec)
    return fields


# -- enforcement ------------------------------------------------------------------------------


def _shown(names: Sequence[str], limit: int = 20) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _fail(field: str, row: int | None, rule: str, message: str, hint: str) -> SchemaError:
    # Field names can come from the caller: never echo more than a short prefix back.
    field = field if len(field) <= 64 else field[:64] + "…"
    where = f" at row {row}" if row is not None else ""
    return SchemaError(
        f"Field {field!r}{where}: {message}", hint=hint, field=field, row=row, rule=rule
    )


def _within(spec: FieldSpec, values: np.ndarray) -> bool:
    """Fast path: two reductions decide that every value is finite and in range."""
    if values.size == 0:
        return True
    low, high = float(values.min()), float(values.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        return False  # NaN or infinity somewhere: the slow path finds the row
    limit = FLOAT_LIMITS.get(spec.dtype)
    if limit is not None and (low < -limit or high > limit):
        return False
    if spec.minimum is not None and low < spec.minimum:
        return False
    return spec.maximum is None or high <= spec.maximum


def _check_numeric(spec: FieldSpec, values: np.ndarray, allow_nan: bool) -> None:
    if _within(spec, values):
        return
    flat = values.reshape(len(values), -1) if values.ndim > 1 else values.reshape(-1, 1)
    if values.dtype.kind == "f":
        bad = ~np.isfinite(flat)
        if bad.any():
            nan = np.isnan(flat)
            if (bad & ~nan).any():
                row = int(np.argwhere(bad & ~nan)[0][0])
                raise _fail(
                    spec.name, row, "finite", "infinity is not allowed.", "Send a finite number."
                )
            if not (spec.nullable and allow_nan):
                row = int(np.argwhere(nan)[0][0])
                raise _fail(
                    spec.name,
                    row,
                    "nullable",
                    "a null or NaN value is not allowed.",
                    "Send a number, or declare the field nullable in the schema.",
                )
        limit = FLOAT_LIMITS.get(spec.dtype)
        if limit is not None:
            over = np.abs(np.where(np.isnan(flat), 0, flat)) > limit
            if over.any():
                row = int(np.argwhere(over)[0][0])
                raise _fail(
                    spec.name,
                    row,
                    "dtype_range",
                    f"the value overflows {spec.dtype}.",
                    "Send a smaller number.",
                )
    for bound, compare, word in (
        (spec.minimum, np.less, "below"),
        (spec.maximum, np.greater, "above"),
    ):
        if bound is None:
            continue
        with np.errstate(invalid="ignore"):
            out = compare(flat, bound) & ~np.isnan(flat.astype(np.float64))
        if out.any():
            row = int(np.argwhere(out)[0][0])
            raise _fail(
                spec.name,
                row,
                "range",
                f"a value is {word} the allowed "
                f"{'minimum' if word == 'below' else 'maximum'} {bound}.",
                f"Send values in [{spec.minimum}, {spec.maximum}].",
            )


def _column(spec: FieldSpec, raw: Any, rows: int, allow_nan: bool) -> Any:
    """Convert and check one column of `rows` values."""
    if spec.dtype in ("string", "category"):
        values = list(raw)
        for row, value in enumerate(values):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                if not spec.nullable:
                    raise _fail(
                        spec.name,
                        row,
                        "nullable",
                        "a null value is not allowed.",
                        "Send a value, or declare the field nullable.",
                    )
                continue
            if spec.dtype == "string" and not isinstance(value, str):
                raise _fail(
                    spec.name,
                    row,
                    "type",
                    f"got {type(value).__name__}, expected a string.",
                    "Quote the value.",
                )
            if spec.categories is not None and _plain(value) not in spec.categories:
                shown = ", ".join(map(str, spec.categories[:10]))
                raise _fail(
                    spec.name,
                    row,
                    "categories",
                    f"the value is not an allowed category (allowed: {shown}).",
                    "Send one of the allowed values.",
                )
        return pd.Series(values, dtype=object)
    numpy_dtype = NUMPY_DTYPES[spec.dtype]
    if not isinstance(raw, np.ndarray | pd.Series):
        raw = _python_values(spec, list(raw))
    try:
        array = np.asarray(raw)
        if array.dtype.kind not in "fiub" or (spec.dtype == "bool") != (array.dtype.kind == "b"):
            raise TypeError
    except (TypeError, ValueError):
        raise _fail(
            spec.name,
            None,
            "type",
            f"got non-numeric values, expected {spec.dtype}.",
            f"Send {spec.dtype} values.",
        ) from None
    expected = (rows, *spec.shape)
    if array.ndim != len(expected) or any(
        e not in (-1, a) for e, a in zip(expected, array.shape, strict=False)
    ):
        raise _fail(
            spec.name,
            None,
            "shape",
            f"got shape {list(array.shape[1:])} per row, expected {spec.shape}.",
            "Send one value of the declared shape per row.",
        )
    if array.dtype.kind == "f" and spec.dtype.startswith("int"):
        finite = array[np.isfinite(array)]
        if (finite != np.round(finite)).any():
            raise _fail(
                spec.name,
                None,
                "type",
                "got fractional values, expected an integer.",
                "Send whole numbers.",
            )
    _check_numeric(
        spec, array.astype(np.float64, copy=False) if array.dtype.kind != "f" else array, allow_nan
    )
    return array.astype(numpy_dtype, copy=False)


def _python_values(spec: FieldSpec, values: list[Any]) -> list[Any]:
    """Check JSON-like scalars one by one: JSON has no NaN, bools are not numbers."""
    for row, value in enumerate(values):
        if value is None:
            if not spec.nullable or not spec.dtype.startswith("float"):
                raise _fail(
                    spec.name,
                    row,
                    "nullable",
                    "a null value is not allowed.",
                    "Send a value, or declare the field nullable.",
                )
        elif isinstance(value, bool) != (spec.dtype == "bool") and not isinstance(value, list):
            raise _fail(
                spec.name,
                row,
                "type",
                f"got {type(value).__name__}, expected {spec.dtype}.",
                f"Send a {spec.dtype} value.",
            )
        elif isinstance(value, str):
            raise _fail(
                spec.name,
                row,
                "type",
                f"got a string, expected {spec.dtype}.",
                "Send the number without quotes.",
            )
    if spec.nullable and any(v is None for v in values):
        return [math.nan if v is None else v for v in values]
    return values


def _columns_from(data: Any, schema: Schema) -> tuple[dict[str, Any], int]:
    names = [f.name for f in schema.inputs]
    if isinstance(data, pd.DataFrame):
        missing = [n for n in names if n not in data.columns]
        if missing:
            raise _fail(
                missing[0],
                None,
                "required",
                "the column is missing.",
                f"Send all of: {_shown(names)}.",
            )
        return {n: data[n].to_numpy() for n in names}, len(data)
    if isinstance(data, Mapping):
        unknown = [k for k in data if k not in names]
        if unknown:
            raise _fail(
                str(unknown[0]),
                None,
                "unknown",
                "the field is not in the schema.",
                f"Send only: {_shown(names)}.",
            )
        missing = [n for n in names if n not in data]
        if missing:
            raise _fail(
                missing[0],
                None,
                "required",
                "the field is missing.",
                f"Send all of: {_shown(names)}.",
            )
        lengths = {
            len(data[n]) if isinstance(data[n], Sequence | np.ndarray) else -1 for n in names
        }
        if len(lengths) != 1 or -1 in lengths:
            raise SchemaError(
                "Columns have different lengths or are not lists.",
                hint="Send every field as a list with one value per row.",
                rule="columns",
            )
        return {n: data[n] for n in names}, lengths.pop()
    if isinstance(data, Sequence) and not isinstance(data, str):
        columns: dict[str, list[Any]] = {n: [] for n in names}
        for row, record in enumerate(data):
            if not isinstance(record, Mapping):
                raise SchemaError(
                    f"Row {row} is a {type(record).__name__}, expected an object.",
                    hint="Send records as objects of field: value.",
                    row=row,
                    rule="records",
                )
            for key in record:
                if key not in columns:
                    raise _fail(
                        str(key),
                        row,
                        "unknown",
                        "the field is not in the schema.",
                        f"Send only: {_shown(names)}.",
                    )
            for name in names:
                if name not in record:
                    raise _fail(
                        name,
                        row,
                        "required",
                        "the field is missing.",
                        f"Send all of: {_shown(names)}.",
                    )
                columns[name].append(record[name])
        return columns, len(data)
    raise SchemaError(
        f"Got inputs of type {type(data).__name__}.",
        hint="Send a DataFrame, a list of records or a mapping of columns.",
        rule="inputs",
    )


def to_batch(
    data: Any, schema: Schema, *, allow_nan: bool = True, max_rows: int | None = None
) -> Any:
    """Validate `data` against `schema` and return the batch in the model's layout."""
    if (
        schema.layout == "array"
        and isinstance(data, np.ndarray | list)
        and not (isinstance(data, list) and data and isinstance(data[0], Mapping))
    ):
        spec = schema.inputs[0]
        array = np.asarray(data) if not isinstance(data, np.ndarray) else data
        rows = len(array) if array.ndim else 0
        _limit(rows, max_rows)
        return _column(spec, array, rows, allow_nan)
    if (
        schema.layout == "text"
        and isinstance(data, Sequence)
        and not isinstance(data, str)
        and (not data or isinstance(data[0], str | type(None)))
    ):
        _limit(len(data), max_rows)
        return list(_column(schema.inputs[0], data, len(data), allow_nan))
    columns, rows = _columns_from(data, schema)
    _limit(rows, max_rows)
    converted = {s.name: _column(s, columns[s.name], rows, allow_nan) for s in schema.inputs}
    if schema.layout == "array":
        return converted[schema.inputs[0].name]
    if schema.layout == "text":
        return list(converted[schema.inputs[0].name])
    return pd.DataFrame(
        {
            k: (list(v) if isinstance(v, np.ndarray) and v.ndim > 1 else v)
            for k, v in converted.items()
        }
    )


def concat(batches: Sequence[Any]) -> Any:
    """Concatenate batches of one layout (from `to_batch`) into one batch."""
    first = batches[0]
    if len(batches) == 1:
        return first
    if isinstance(first, np.ndarray):
        return np.concatenate(batches)
    if isinstance(first, pd.DataFrame):
        return pd.concat(batches, ignore_index=True)
    merged: list[Any] = []
    for batch in batches:
        merged.extend(batch)
    return merged


def _limit(rows: int, max_rows: int | None) -> None:
    if rows == 0:
        raise SchemaError("Got an empty batch.", hint="Send at least one row.", rule="rows")
    if max_rows is not None and rows > max_rows:
        raise SchemaError(
            f"Got {rows} rows. The limit is {max_rows}.",
            hint="Split the request into smaller batches.",
            rule="rows",
        )


def check_outputs(outputs: Mapping[str, np.ndarray], specs: Sequence[FieldSpec]) -> None:
    """Refuse model outputs that break the output schema (a broken model, not a bad caller)."""
    for spec in specs:
        if spec.name not in outputs:
            raise SchemaError(
                f"The model returned no output {spec.name!r}.",
                hint="Check the postprocessing code.",
                field=spec.name,
                rule="output",
            )
        values = np.asarray(outputs[spec.name])
        if spec.dtype not in ("string", "category"):
            _check_numeric(spec, values.astype(np.float64, copy=False), allow_nan=spec.nullable)
