"""Input and output schemas: inferred from a sample, enforced on every batch.

`infer_inputs` reads a pandas DataFrame, a 2-D NumPy array or a list of strings and writes the
typed fields; `to_batch` turns what a caller sends (a DataFrame, an array, records, columns or
strings) into the layout the model takes, refusing anything the schema does not allow with a
`SchemaError` that names the field, the row and the rule broken.

Coercion is strict: `true`/`false` is not a number (nor 1 a bool, nor `true` the category 1),
a string is never parsed as a number (FieldSpec has no option for it), and a value the
field's dtype cannot hold is refused (rule "dtype_range": 1e39 for float32, 2**40 for int32,
a whole float or an integer beyond int64) rather than turned into infinity or wrapped.

A null (JSON null, NaN, pandas NA) in a nullable int32/int64/bool field becomes pandas' nullable
dtype (Int32, Int64, boolean) with <NA> in the "frame" layout, in a batch that has a null (one
without stays a NumPy column). NumPy integer and bool arrays cannot hold a null, so the "array"
layout and shaped fields refuse it (rule "nullable") rather than cast NaN to an arbitrary
integer. Strings are at most `MAX_STRING_CHARS` characters (413, rule "string_length").

`check_json_limits` bounds a decoded request body (nesting depth, string length) before any of
this runs.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from itertools import chain, compress
from typing import Any

import numpy as np
import pandas as pd

from shipyard.bundle.manifest import DType, FieldSpec, Schema
from shipyard.errors import PayloadTooLargeError, SchemaError, UserError

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

# Limits on a decoded request before any schema is consulted (`check_json_limits`), and on every
# string value `to_batch` takes. The manifest has no per-field string limit (a field's
# `maximum` bounds numbers only), so one limit holds for every string.
MAX_JSON_DEPTH = 32
MAX_STRING_CHARS = 1_000_000

_NULL_TYPES = frozenset({type(None), type(pd.NA)})
_IS_STR = frozenset({str}).__contains__
_IS_LIST = frozenset({list}).__contains__
_IS_DICT = frozenset({dict}).__contains__


def _string_limit(longest: int, limit: int) -> None:
    if longest > limit:
        raise PayloadTooLargeError(
            f"A string in the body has {longest} characters. The limit is {limit}.",
            hint="Send shorter text, or split it across requests.",
            rule="string_length",
        )


def _children(lists: list[Any], dicts: list[Any]) -> Iterator[Any]:
    return chain(chain.from_iterable(lists), chain.from_iterable(map(dict.values, dicts)))


def _of_type(test: Callable[[type], bool], lists: list[Any], dicts: list[Any]) -> Iterator[Any]:
    """The children whose type passes `test`, filtered at C speed (two walks, no copies)."""
    return compress(_children(lists, dicts), map(test, map(type, _children(lists, dicts))))


def bounded(raw: bytes | memoryview, max_depth: int = MAX_JSON_DEPTH) -> bool:
    """True when a body is too short or too flat to break the limits of `check_json_limits`
    at all (the usual request), so the walk over the decoded document can be skipped: no
    string is longer than the body, and no nesting deeper than its brackets."""
    data = bytes(raw) if isinstance(raw, memoryview) else raw
    return len(data) <= MAX_STRING_CHARS and data.count(b"[") + data.count(b"{") <= max_depth


def check_json_limits(
    document: Any, *, max_depth: int = MAX_JSON_DEPTH, max_string: int = MAX_STRING_CHARS
) -> None:
    """Refuse a decoded JSON document that nests more than `max_depth` arrays and objects
    (400, rule "depth") or holds a key or string longer than `max_string` characters (413,
    rule "string_length"). The messages give sizes, never content.

    The walk goes level by level with C-level iterators, so a large flat tensor costs a few
    passes over its elements and no copy of them."""
    lists: list[Any] = [document] if type(document) is list else []
    dicts: list[Any] = [document] if type(document) is dict else []
    if type(document) is str:
        _string_limit(len(document), max_string)
    depth = 0
    while lists or dicts:
        depth += 1
        if depth > max_depth:
            raise UserError(
                f"The JSON body nests arrays and objects more than {max_depth} levels deep.",
                hint="Send flat records or rectangular arrays.",
                rule="depth",
            )
        if dicts:
            keys = compress(
                chain.from_iterable(dicts), map(_IS_STR, map(type, chain.from_iterable(dicts)))
            )
            _string_limit(max(map(len, keys), default=0), max_string)
        kinds = set(map(type, _children(lists, dicts)))
        if str in kinds:
            _string_limit(max(map(len, _of_type(_IS_STR, lists, dicts))), max_string)
        lists, dicts = (
            list(_of_type(_IS_LIST, lists, dicts)) if list in kinds else [],
            list(_of_type(_IS_DICT, lists, dicts)) if dict in kinds else [],
        )


def _shown(names: Sequence[str], limit: int = 20) -> str:
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _fail(
    field: str,
    row: int | None,
    rule: str,
    message: str,
    hint: str,
    error: type[UserError] = SchemaError,
) -> UserError:
    # Field names can come from the caller: never echo more than a short prefix back.
    field = field if len(field) <= 64 else field[:64] + "…"
    where = f" at row {row}" if row is not None else ""
    return error(f"Field {field!r}{where}: {message}", hint=hint, field=field, row=row, rule=rule)


def _fail_where(spec: FieldSpec, bad: np.ndarray, rule: str, message: str, hint: str) -> None:
    """Refuse when `bad` (rows x elements) flags anything, naming the first row flagged."""
    rows = np.flatnonzero(bad.any(axis=1)) if bad.ndim > 1 else np.flatnonzero(bad)
    if rows.size:
        raise _fail(spec.name, int(rows[0]), rule, message, hint)


def _describe(value: Any) -> str:
    """What kind of value a caller sent, in JSON words; never the value itself."""
    if isinstance(value, bool | np.bool_):
        return "true/false"
    if isinstance(value, str | bytes):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple | np.ndarray):
        return "an array"
    return f"a {type(value).__name__}"


def _within(spec: FieldSpec, values: np.ndarray) -> bool:
    """Fast path: the smallest and largest value decide that every value is finite and in
    range. False sends the caller to the slow path, which finds the row and the rule."""
    if values.size == 0:
        return True
    if values.size <= SMALL_ARRAY:
        # A request's row or a classifier's answer: Python's min and max beat NumPy's
        # reductions, whose fixed cost is a few microseconds each. NaN would make them
        # order-dependent, so the sum screens NaN and infinity first (a sum that overflows
        # only sends the values to the slow path).
        flat = values.ravel().tolist()
        if not math.isfinite(sum(flat)):
            return False
        low, high = float(min(flat)), float(max(flat))
    else:
        low, high = float(values.min()), float(values.max())
        if not (math.isfinite(low) and math.isfinite(high)):
            return False  # NaN or infinity somewhere: the slow path finds the row
    limit = FLOAT_LIMITS.get(spec.dtype)
    if limit is not None and (low < -limit or high > limit):
        return False
    if spec.minimum is not None and low < spec.minimum:
        return False
    return spec.maximum is None or high <= spec.maximum


SMALL_ARRAY = 32  # values, at most, checked in Python rather than by NumPy reductions


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


def _is_null(value: Any) -> bool:
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def _category_key(value: Any) -> tuple[str, Any] | None:
    """What a category value is compared by: its `_plain` form and whether it is a bool, so
    `true` never matches the category 1 (nor 1 the category true), as `True == 1` would."""
    if isinstance(value, list | tuple | dict | np.ndarray):
        return None
    plain = _plain(value)
    return ("bool" if isinstance(plain, bool) else type(plain).__name__, plain)


def _text_column(spec: FieldSpec, raw: Any) -> pd.Series:
    values = list(raw)
    if set(map(type, values)) <= {str}:
        # The common case, plain strings and no nulls: judged with set operations.
        known = spec.categories is None or {
            c for c in spec.categories if type(c) is str
        }.issuperset(values)
        short = spec.dtype != "string" or max(map(len, values), default=0) <= MAX_STRING_CHARS
        if known and short:
            return pd.Series(values, dtype=object)
        # Else the loop below names the first row that breaks a rule, and the rule.
    allowed = None if spec.categories is None else {_category_key(c) for c in spec.categories}
    for row, value in enumerate(values):
        if _is_null(value):
            if not spec.nullable:
                raise _fail(
                    spec.name,
                    row,
                    "nullable",
                    "a null value is not allowed.",
                    "Send a value, or declare the field nullable.",
                )
            continue
        if spec.dtype == "string":
            if not isinstance(value, str):
                raise _fail(
                    spec.name,
                    row,
                    "type",
                    f"got {_describe(value)}, expected a string.",
                    "Quote the value.",
                )
            if len(value) > MAX_STRING_CHARS:
                raise _fail(
                    spec.name,
                    row,
                    "string_length",
                    f"the string has {len(value)} characters. The limit is {MAX_STRING_CHARS}.",
                    "Send shorter text, or split it across requests.",
                    PayloadTooLargeError,
                )
        if allowed is not None and _category_key(value) not in allowed:
            shown = ", ".join(map(str, spec.categories[:10]))  # type: ignore[index]
            raise _fail(
                spec.name,
                row,
                "categories",
                f"the value is not an allowed category (allowed: {shown}).",
                "Send one of the allowed values.",
            )
    return pd.Series(values, dtype=object)


def _leaf_ok(spec: FieldSpec, kind: type) -> bool:
    """Whether a Python value of type `kind` may stand for one element of `spec`."""
    if issubclass(kind, bool | np.bool_):
        return spec.dtype == "bool"
    return spec.dtype != "bool" and issubclass(kind, int | float | np.integer | np.floating)


def _flatten(spec: FieldSpec, values: list[Any]) -> tuple[list[int], list[Any], set[type]]:
    """Nested lists to (dims, row-major leaves, leaf types), refusing ragged nesting."""
    level, dims = values, [len(values)]
    while True:
        kinds = set(map(type, level))
        if np.ndarray in kinds or tuple in kinds:
            level = [
                v.tolist() if type(v) is np.ndarray else list(v) if type(v) is tuple else v
                for v in level
            ]
            kinds = set(map(type, level))
        if list not in kinds:
            return dims, level, kinds
        if kinds != {list} or len(set(map(len, level))) != 1:
            # The first value unlike the first one: a list among numbers, or another length.
            first = level[0]
            size = len(first) if type(first) is list else -1
            index = next(
                i
                for i, v in enumerate(level)
                if (type(v) is list) != (size >= 0) or (size >= 0 and len(v) != size)
            )
            raise _fail(
                spec.name,
                index // max(1, math.prod(dims[1:])),
                "shape",
                f"the nested values are not rectangular; expected the shape {spec.shape}.",
                "Send one value of the declared shape per row.",
            )
        dims.append(len(level[0]))
        level = list(chain.from_iterable(level))


# Python types that `_from_python` turns into an array without looking further.
_FAST_KINDS = {
    "float32": frozenset({int, float}),
    "float64": frozenset({int, float}),
    "int32": frozenset({int}),
    "int64": frozenset({int}),
    "bool": frozenset({bool}),
}
_FAST_DTYPES: dict[str, type[np.generic]] = {
    "float32": np.float64,
    "float64": np.float64,
    "int32": np.int64,
    "int64": np.int64,
    "bool": np.bool_,
}


def _from_python(spec: FieldSpec, values: list[Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """JSON-like values to an array, type by type: bools are not numbers, strings are not
    parsed, and a value outside the dtype is refused, not wrapped or rounded to infinity.
    Returns the array and, for nulls in an integer or bool field, a mask of null rows."""
    kinds = set(map(type, values))
    if not spec.shape and kinds and kinds <= _FAST_KINDS[spec.dtype]:
        # The common case, one plain JSON scalar per row, in one NumPy call.
        with contextlib.suppress(OverflowError):  # a Python int beyond the dtype: judged below
            return np.array(values, dtype=_FAST_DTYPES[spec.dtype]), None
    nulls = None
    if not _NULL_TYPES.isdisjoint(kinds):
        nulls = np.fromiter((v is None or v is pd.NA for v in values), bool, len(values))
        row = int(np.argmax(nulls))
        if not spec.nullable:
            raise _fail(
                spec.name,
                row,
                "nullable",
                "a null value is not allowed.",
                "Send a value, or declare the field nullable.",
            )
        if spec.shape:
            raise _fail(
                spec.name,
                row,
                "nullable",
                f"a null cannot stand for a value of shape {spec.shape}.",
                "Send the whole value; only scalar fields take nulls.",
            )
        fill = math.nan if spec.dtype.startswith("float") else False if spec.dtype == "bool" else 0
        values = [fill if null else v for v, null in zip(values, nulls, strict=True)]
    dims, leaves, kinds = _flatten(spec, values)
    per_row = max(1, math.prod(dims[1:]))
    bad = {kind for kind in kinds if not _leaf_ok(spec, kind)}
    if bad:
        index = next(i for i, v in enumerate(leaves) if type(v) in bad)
        value = leaves[index]
        if type(value) in _NULL_TYPES:
            raise _fail(
                spec.name,
                index // per_row,
                "nullable",
                "a null inside an array value is not allowed.",
                "Send numbers only; only scalar fields take nulls.",
            )
        raise _fail(
            spec.name,
            index // per_row,
            "type",
            f"got {_describe(value)}, expected {spec.dtype}.",
            "Send the number without quotes."
            if isinstance(value, str)
            else f"Send a {spec.dtype} value.",
        )
    if spec.dtype == "bool":
        return np.array(leaves, dtype=np.bool_).reshape(dims), nulls
    if spec.dtype.startswith("float") or not kinds <= {int}:
        try:
            array = np.array(leaves, dtype=np.float64)
        except OverflowError:  # a Python int beyond any double
            raise _overflow(spec, leaves, per_row, _fits_float) from None
        if spec.dtype.startswith("float") or all(
            abs(int(v)) <= 2**53 for v in leaves if isinstance(v, int | np.integer)
        ):
            # Every integer is exact as a double: `_column` judges the floats (whole, finite,
            # in range; NaN is a null) as it does for a float array.
            return array.reshape(dims), nulls
        # Integers beyond 2**53 among floats: every float must be whole, then all go exactly.
        _fail_where(
            spec,
            (~np.isfinite(array) | (array != np.trunc(array))).reshape(dims[0], -1),
            "type",
            "got fractional or non-finite values, expected an integer.",
            "Send whole numbers.",
        )
        leaves = [int(v) for v in leaves]
    try:
        return np.array(leaves, dtype=np.int64).reshape(dims), nulls
    except OverflowError:  # a Python int beyond int64
        raise _overflow(spec, leaves, per_row, _fits_int64) from None


def _overflow(spec: FieldSpec, leaves: list[Any], per_row: int,
              fits: Callable[[Any], bool]) -> UserError:
    """The error for the first value that does not fit the field's dtype."""
    index = next(i for i, v in enumerate(leaves) if not fits(v))
    return _fail(spec.name, index // per_row, "dtype_range",
                 f"the value overflows {spec.dtype}.", "Send a smaller number.")


def _fits_float(value: Any) -> bool:
    try:
        float(value)
    except OverflowError:
        return False
    return True


def _fits_int64(value: Any) -> bool:
    low, high = INT_LIMITS["int64"]
    return low <= int(value) <= high


def _numeric_values(spec: FieldSpec, raw: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The numbers of a column as a NumPy array of kind b, i, u or f, and a mask of the rows
    that are null where the array cannot say so itself (integers, bools)."""
    if isinstance(raw, pd.DataFrame):  # a frame with the column name twice
        raw = raw.to_numpy()
    if isinstance(raw, pd.Series | pd.Index | pd.api.extensions.ExtensionArray):
        dtype = raw.dtype
        if (
            pd.api.types.is_extension_array_dtype(dtype)
            and getattr(dtype, "kind", "O") in "iufb"
            and getattr(dtype, "numpy_dtype", None) is not None
        ):
            # pandas' nullable dtypes (Int64, boolean, Float64): keep the mask, not a NaN cast.
            mask = np.asarray(raw.isna(), dtype=bool)
            fill: Any = math.nan if dtype.kind == "f" else False if dtype.kind == "b" else 0
            array = np.asarray(raw.to_numpy(dtype=dtype.numpy_dtype, na_value=fill))
            return array, (mask if mask.any() and dtype.kind != "f" else None)
        raw = raw.to_numpy()
    if isinstance(raw, np.ndarray):
        if raw.dtype.kind in "biuf":
            return raw, None
        if raw.dtype.kind != "O" or raw.ndim == 0:
            raise _fail(
                spec.name,
                0 if raw.ndim and len(raw) else None,
                "type",
                f"got {raw.dtype} values, expected {spec.dtype}.",
                f"Send {spec.dtype} values.",
            )
        raw = raw.tolist()
    return _from_python(spec, list(raw))


def _column(spec: FieldSpec, raw: Any, rows: int, allow_nan: bool, frame: bool = True) -> Any:
    """Convert and check one column of `rows` values; `frame` says whether the column goes
    into a DataFrame, where a nullable integer or bool field can carry a null."""
    if spec.dtype in ("string", "category"):
        return _text_column(spec, raw)
    numpy_dtype = NUMPY_DTYPES[spec.dtype]
    array, nulls = _numeric_values(spec, raw)
    if (spec.dtype == "bool") != (array.dtype.kind == "b"):
        raise _fail(
            spec.name,
            0 if array.ndim and len(array) else None,
            "type",
            f"got {'true/false' if array.dtype.kind == 'b' else 'numeric'} values, "
            f"expected {spec.dtype}.",
            f"Send {spec.dtype} values.",
        )
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
    if nulls is None and (
        array.dtype.kind == "b"
        or spec.dtype.startswith("float")
        or (array.dtype.kind in "iu" and np.can_cast(array.dtype, numpy_dtype))
    ):
        # Fast path: no dtype can overflow; two reductions show all finite and in bounds.
        with np.errstate(invalid="ignore"):
            if _within(spec, array):
                return array.astype(numpy_dtype, copy=False)
    # Every check runs on doubles: float16 and float32 cannot even hold some limits and bounds.
    with np.errstate(invalid="ignore"):
        floats = array if array.dtype == np.float64 else array.astype(np.float64)
    nan = np.isnan(floats)
    if nan.any():
        # A signalling NaN (raw binary tensors can hold one, and a cast may keep it) made
        # quiet: every comparison and rounding below would warn on it.
        floats = np.where(nan, np.nan, floats)
    flat = floats.reshape(len(floats), -1)
    if spec.dtype.startswith("int"):
        low, high = INT_LIMITS[spec.dtype]
        over: np.ndarray | None = None
        if array.dtype.kind == "f":
            nan = nan.reshape(len(floats), -1)  # the rows of `flat`
            _fail_where(
                spec, np.isinf(flat), "finite", "infinity is not allowed.", "Send a finite number."
            )
            _fail_where(
                spec,
                (flat != np.trunc(flat)) & ~nan,
                "type",
                "got fractional values, expected an integer.",
                "Send whole numbers.",
            )
            # float(high) + 1 is exactly 2**31 or 2**63, the first value that overflows; NaN
            # compares False and is a null, judged below.
            over = (flat < low) | (flat >= float(high) + 1)
        elif not np.can_cast(array.dtype, numpy_dtype):  # exact, on the integers themselves
            exact = array.reshape(len(array), -1)
            over = (exact < low) | (exact > high)
        if over is not None:
            _fail_where(
                spec,
                over,
                "dtype_range",
                f"the value overflows {spec.dtype}.",
                f"Send whole numbers from {low} to {high}.",
            )
    if nulls is not None:
        floats = floats.copy() if floats is array else floats
        floats[nulls] = math.nan
    _check_numeric(spec, floats, allow_nan)
    if spec.dtype.startswith("float"):
        with np.errstate(invalid="ignore"):  # casting a signalling NaN quiets it, warning
            return array.astype(numpy_dtype, copy=False)
    if array.dtype.kind == "f":
        nan_rows = np.isnan(flat).any(axis=1)
        if nan_rows.any():
            nulls = nan_rows if nulls is None else nulls | nan_rows
            array = np.where(np.isnan(array), 0, array)
    if nulls is None or not nulls.any():
        return array.astype(numpy_dtype, copy=False)
    # Reached only when the field is nullable and nulls are allowed (`_check_numeric`).
    row = int(np.argmax(nulls))
    if spec.shape:
        raise _fail(
            spec.name,
            row,
            "nullable",
            f"a {spec.dtype} value of shape {spec.shape} cannot hold a null or NaN.",
            "Send numbers only; only scalar fields take nulls.",
        )
    if not frame:
        raise _fail(
            spec.name,
            row,
            "nullable",
            f"the model takes a NumPy {spec.dtype} array, which cannot hold a null or NaN.",
            "Send a number, or declare the field as a float to pass NaN for missing values.",
        )
    values: np.ndarray = array.astype(numpy_dtype, copy=False).reshape(-1)
    if spec.dtype == "bool":
        return pd.arrays.BooleanArray(values, nulls)
    return pd.arrays.IntegerArray(values, nulls)


def _length(column: Any) -> int:
    """The rows of one column of a column mapping; -1 for what is not a column."""
    if isinstance(column, np.ndarray):
        return len(column) if column.ndim else -1
    if isinstance(column, Sequence) and not isinstance(column, str | bytes):
        return len(column)
    return -1


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
        # Series, not arrays: pandas' nullable dtypes keep their mask for `_column`.
        return {n: data[n] for n in names}, len(data)
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
        lengths = {_length(data[n]) for n in names}
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
        rows = len(data) if not isinstance(data, np.ndarray) or data.ndim else 0
        _limit(rows, max_rows)
        return _column(spec, data, rows, allow_nan, frame=False)
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
    frame = schema.layout == "frame"
    converted = {s.name: _column(s, columns[s.name], rows, allow_nan, frame) for s in schema.inputs}
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
    """Refuse model outputs that break the output schema (a broken model, not a bad caller).
    Every field's kind is checked before any field's values, so an `OutputTypeError` (the
    model's bug whatever the input) is never hidden behind a value rule of another field."""
    numbers: list[tuple[FieldSpec, np.ndarray]] = []
    for spec in specs:
        if spec.name not in outputs:
            raise SchemaError(
                f"The model returned no output {spec.name!r}.",
                hint="Check the postprocessing code.",
                field=spec.name,
                rule="output",
            )
        if spec.dtype not in ("string", "category"):
            numbers.append((spec, _numbers_of(spec, np.asarray(outputs[spec.name]))))
    for spec, values in numbers:
        _check_numeric(spec, values, allow_nan=spec.nullable)


class OutputTypeError(SchemaError):
    """The model answered text (or another kind of value) where the schema says number."""


_NOT_NUMBERS = {"U": "text", "S": "bytes", "c": "complex numbers", "M": "dates", "m": "durations"}


def _numbers_of(spec: FieldSpec, values: np.ndarray) -> np.ndarray:
    """A numeric output as float64. Text is refused even where it reads as a number ("1.5"):
    the caller would get a string where the schema promises a number."""
    kind = values.dtype.kind
    if kind in "biuf":
        return values.astype(np.float64, copy=False)
    row: int | None = 0
    what = _NOT_NUMBERS.get(kind, "values that are not numbers")
    if kind == "O":  # Python objects: numbers and None (nullable) are fine
        flat = values.reshape(-1)
        first = next((i for i, v in enumerate(flat) if isinstance(v, str | bytes)), None)
        if first is not None:
            per_row = flat.size // len(values) if values.ndim else 1
            row, what = first // per_row, "text"
        else:
            try:
                return values.astype(np.float64)
            except (TypeError, ValueError):
                row = None
    raise _fail(spec.name, row, "output_type",
                f"the model answered {what} where the schema says {spec.dtype}.",
                "Fix the model's postprocessing, or the output schema.", error=OutputTypeError)
