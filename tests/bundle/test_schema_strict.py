"""Strict input coercion in `schema.to_batch` and the limits on decoded JSON.

`true` is not a number, "1.5" is not a float (FieldSpec has no option to parse strings), and a
value the model's dtype cannot hold is refused with a 4xx naming field, row and rule: never
wrapped, rounded to infinity or cast to an arbitrary integer (the suite turns numpy's
"invalid value encountered in cast" RuntimeWarning into an error, so a silent cast fails here).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.bundle.manifest import FieldSpec, Schema
from shipyard.bundle.schema import (
    INT_LIMITS,
    MAX_JSON_DEPTH,
    MAX_STRING_CHARS,
    SMALL_ARRAY,
    _within,
    check_json_limits,
    to_batch,
)
from shipyard.errors import PayloadTooLargeError, SchemaError, ShipyardError, UserError
from shipyard.serving import native, v2


def frame(dtype: str, **kwargs: Any) -> Schema:
    return Schema(layout="frame", inputs=[FieldSpec(name="x", dtype=dtype, **kwargs)])  # type: ignore[arg-type]


def array(dtype: str, shape: list[int], **kwargs: Any) -> Schema:
    return Schema(
        layout="array",
        inputs=[FieldSpec(name="input", dtype=dtype, shape=shape, **kwargs)],  # type: ignore[arg-type]
    )


def refused(data: Any, schema: Schema, **kwargs: Any) -> ShipyardError:
    with pytest.raises(ShipyardError) as caught:
        to_batch(data, schema, **kwargs)
    error = caught.value
    assert 400 <= error.status < 500
    orjson.dumps(error.to_dict())  # the error body always serialises
    return error


def where(error: ShipyardError) -> tuple[Any, Any, Any]:
    return error.details.get("field"), error.details.get("row"), error.details.get("rule")


# -- true is not a number, a number is not true ------------------------------------------------

BOOLS_AS_NUMBERS = {
    "record": ([{"x": 1.0}, {"x": True}], frame("float64"), ("x", 1, "type")),
    "column": ({"x": [1, False]}, frame("int64"), ("x", 1, "type")),
    "shaped record": (
        [{"x": [1.0, 2.0]}, {"x": [True, 1.5]}],
        frame("float32", shape=[2]),
        ("x", 1, "type"),
    ),
    "array rows": ([[1.0, 2.0], [2.0, True]], array("float64", [2]), ("input", 1, "type")),
    "numpy bools": (np.array([[True, False]]), array("float32", [2]), ("input", 0, "type")),
    "frame of bools": (pd.DataFrame({"x": [True, False]}), frame("int32"), ("x", 0, "type")),
    "numbers for bool": ([{"x": True}, {"x": 1}], frame("bool"), ("x", 1, "type")),
    "numpy ints for bool": (np.array([[1, 0]]), array("bool", [2]), ("input", 0, "type")),
}


@pytest.mark.parametrize("case", BOOLS_AS_NUMBERS, ids=list(BOOLS_AS_NUMBERS))
def test_true_is_not_a_number(case: str) -> None:
    data, schema, expected = BOOLS_AS_NUMBERS[case]
    error = refused(data, schema)
    assert isinstance(error, SchemaError) and error.status == 422
    assert where(error) == expected


def test_categories_tell_true_from_1() -> None:
    numbers = frame("category", categories=[1, 2])
    flags = frame("category", categories=[True, False])
    assert where(refused([{"x": 1}, {"x": True}], numbers)) == ("x", 1, "categories")
    assert where(refused([{"x": 1}], flags)) == ("x", 0, "categories")
    assert where(refused([{"x": "1"}], numbers)) == ("x", 0, "categories")
    assert to_batch([{"x": 1}, {"x": 2}], numbers)["x"].tolist() == [1, 2]
    assert to_batch([{"x": True}], flags)["x"].tolist() == [True]


# -- strings are not parsed ---------------------------------------------------------------------

STRINGS_AS_NUMBERS = {
    "record": ([{"x": "1.5"}], frame("float64")),
    "int record": ([{"x": 1}, {"x": "2"}], frame("int64")),
    "column": ({"x": [1.5, "2.5"]}, frame("float32")),
    "shaped record": ([{"x": [1.0, "2.0"]}], frame("float64", shape=[2])),
    "array rows": ([["1.5", "2.5"]], array("float64", [2])),
    "numpy strings": (np.array([["1.5", "2.5"]]), array("float64", [2])),
    "object frame": (pd.DataFrame({"x": ["1.5", "2.5"]}), frame("float64")),
}


@pytest.mark.parametrize("case", STRINGS_AS_NUMBERS, ids=list(STRINGS_AS_NUMBERS))
def test_a_string_is_not_a_number(case: str) -> None:
    data, schema = STRINGS_AS_NUMBERS[case]
    error = refused(data, schema)
    assert error.status == 422 and error.details["rule"] == "type"
    assert error.details["row"] in (0, 1)
    assert "1.5" not in error.message and "2.5" not in error.message  # never echoed


def test_objects_and_ragged_values_name_the_row() -> None:
    assert where(refused([{"x": 1.0}, {"x": {"a": 1}}], frame("float64"))) == ("x", 1, "type")
    ragged = [{"x": [1.0, 2.0]}, {"x": [1.0, [2.0]]}]
    assert where(refused(ragged, frame("float64", shape=[2]))) == ("x", 1, "shape")
    assert where(refused([[1, 2], [3]], array("int64", [2]))) == ("input", 1, "shape")


def test_a_string_is_not_a_column_of_characters() -> None:
    error = refused({"text": "hello"}, Schema(inputs=[FieldSpec(name="text", dtype="string")]))
    assert error.details["rule"] == "columns"


# -- overflow: refused, never infinity, never wrapped ------------------------------------------

I32_LOW, I32_HIGH = INT_LIMITS["int32"]
I64_LOW, I64_HIGH = INT_LIMITS["int64"]

OVERFLOWS = {
    "1e39 float32": (1e39, "float32"),
    "-1e39 float32": (-1e39, "float32"),
    "10**39 float32": (10**39, "float32"),
    "10**400 float64": (10**400, "float64"),
    "2**40 int32": (2**40, "int32"),
    "2**31 int32": (2**31, "int32"),
    "-2**31-1 int32": (-(2**31) - 1, "int32"),
    "2**31 as a float int32": (2.0**31, "int32"),
    "2**63 int64": (2**63, "int64"),
    "2**64-1 int64": (2**64 - 1, "int64"),
    "-2**63-1 int64": (-(2**63) - 1, "int64"),
    "2**70 int64": (2**70, "int64"),
    "1e19 int64": (1e19, "int64"),
    "-1e19 int64": (-1e19, "int64"),
    "2**63 as a float int64": (2.0**63, "int64"),
    "1e39 int64": (1e39, "int64"),
}


@pytest.mark.parametrize("case", OVERFLOWS, ids=list(OVERFLOWS))
@pytest.mark.parametrize("form", ["records", "columns", "array", "numpy"])
def test_a_value_the_dtype_cannot_hold_is_refused(case: str, form: str) -> None:
    value, dtype = OVERFLOWS[case]
    if form == "records":
        data: Any = [{"x": 0}, {"x": value}]
        schema = frame(dtype)
    elif form == "columns":
        data, schema = {"x": [0, value]}, frame(dtype)
    elif form == "array":
        data, schema = [[0, 0], [0, value]], array(dtype, [2])
    else:  # NumPy picks the dtype: float64, uint64, or object for Python ints beyond 64 bits
        data = np.array([[0, 0], [0, value]])
        schema = array(dtype, [2])
    error = refused(data, schema)
    assert isinstance(error, SchemaError) and error.status == 422
    assert error.details["row"] == 1 and error.details["rule"] == "dtype_range"
    assert dtype in error.message
    assert str(value) not in error.message


def test_the_limits_themselves_pass_exactly() -> None:
    batch = to_batch({"x": [I64_LOW, I64_HIGH, 2**53 + 1]}, frame("int64"))
    assert batch["x"].tolist() == [I64_LOW, I64_HIGH, 2**53 + 1]
    assert batch["x"].dtype == np.int64
    batch = to_batch([[I32_LOW, I32_HIGH, -(2.0**31)]], array("int32", [3]))
    assert batch.dtype == np.int32 and batch.tolist() == [[I32_LOW, I32_HIGH, I32_LOW]]
    top = float(np.finfo(np.float32).max)
    batch = to_batch({"x": [top, -top]}, frame("float32"))
    assert np.isfinite(batch["x"].to_numpy()).all()


def test_big_integers_among_floats_stay_exact() -> None:
    batch = to_batch({"x": [2**62 + 1, 2.0, I64_HIGH]}, frame("int64"))
    assert batch["x"].tolist() == [2**62 + 1, 2, I64_HIGH]
    assert where(refused({"x": [2**62 + 1, 2.5]}, frame("int64"))) == ("x", 1, "type")


def test_unsigned_and_wide_arrays_are_range_checked() -> None:
    assert where(refused(np.array([[1], [2**64 - 1]], dtype=np.uint64), array("int64", [1]))) == (
        "input",
        1,
        "dtype_range",
    )
    assert where(refused(pd.DataFrame({"x": np.array([1, 2**40])}), frame("int32"))) == (
        "x",
        1,
        "dtype_range",
    )
    ok = to_batch(np.array([[1], [2**32]], dtype=np.uint64), array("int64", [1]))
    assert ok.dtype == np.int64 and ok.tolist() == [[1], [2**32]]
    assert to_batch(np.array([[7]], dtype=np.int8), array("int32", [1])).dtype == np.int32


def test_infinity_and_fractions_for_integers() -> None:
    assert where(refused(np.array([[1.0], [np.inf]]), array("int64", [1]))) == (
        "input",
        1,
        "finite",
    )
    error = refused(np.array([[1.0], [2.5]]), array("int32", [1]))
    assert where(error) == ("input", 1, "type") and "fractional" in error.message


@settings(max_examples=200, deadline=None)
@given(
    value=st.integers(min_value=-(2**70), max_value=2**70),
    dtype=st.sampled_from(["int32", "int64"]),
)
def test_any_integer_is_kept_exactly_or_refused_as_overflow(value: int, dtype: str) -> None:
    low, high = INT_LIMITS[dtype]
    try:
        batch = to_batch({"x": [value]}, frame(dtype))
    except SchemaError as error:
        assert not low <= value <= high
        assert error.details["rule"] == "dtype_range" and error.details["row"] == 0
        return
    assert low <= value <= high
    assert batch["x"].tolist() == [value] and batch["x"].dtype == np.dtype(dtype)


@settings(max_examples=200, deadline=None)
@given(value=st.floats(allow_nan=False, allow_infinity=False))
def test_any_double_becomes_a_finite_float32_or_is_refused(value: float) -> None:
    try:
        batch = to_batch([[value]], array("float32", [1]))
    except SchemaError as error:
        assert abs(value) > float(np.finfo(np.float32).max)
        assert error.details["rule"] == "dtype_range"
        return
    assert np.isfinite(batch).all() and batch.dtype == np.float32


# -- nulls in integer and bool fields ---------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_a_null_in_a_nullable_int_field_becomes_pandas_na(dtype: str) -> None:
    schema = frame(dtype, nullable=True)
    expected = pd.array([1, None, 3], dtype=dtype.capitalize())
    sources = {
        "records": [{"x": 1}, {"x": None}, {"x": 3}],
        "columns": {"x": [1, None, 3]},
        "NaN in a float frame": pd.DataFrame({"x": [1.0, np.nan, 3.0]}),
        "NA in an Int64 frame": pd.DataFrame({"x": pd.array([1, None, 3], dtype="Int64")}),
        "NaN among floats": {"x": [1.0, math.nan, 3]},
    }
    for name, data in sources.items():
        batch = to_batch(data, schema)
        assert batch["x"].dtype == expected.dtype, name
        assert batch["x"].isna().tolist() == [False, True, False], name
        assert batch["x"].iloc[[0, 2]].tolist() == [1, 3], name
    # Without nulls the column stays a NumPy integer column.
    assert to_batch({"x": [1, 2]}, schema)["x"].dtype == np.dtype(dtype)


def test_a_null_keeps_big_integers_exact() -> None:
    batch = to_batch({"x": [2**62 + 1, None]}, frame("int64", nullable=True))
    assert batch["x"].iloc[0] == 2**62 + 1 and batch["x"].isna().tolist() == [False, True]


def test_a_null_in_a_nullable_bool_field_becomes_pandas_na() -> None:
    batch = to_batch({"x": [True, None]}, frame("bool", nullable=True))
    assert str(batch["x"].dtype) == "boolean"
    assert batch["x"].isna().tolist() == [False, True]


def test_nulls_for_ints_are_refused_where_no_null_fits() -> None:
    # Not nullable, not allowed, a NumPy array layout, or inside a shaped value.
    assert where(refused({"x": [1, None]}, frame("int64"))) == ("x", 1, "nullable")
    assert where(refused(pd.DataFrame({"x": [1.0, np.nan]}), frame("int64"))) == (
        "x",
        1,
        "nullable",
    )
    nullable = frame("int64", nullable=True)
    assert where(refused({"x": [1, None]}, nullable, allow_nan=False)) == ("x", 1, "nullable")
    error = refused(np.array([[1.0], [np.nan]]), array("int32", [1], nullable=True))
    assert where(error) == ("input", 1, "nullable") and "cannot hold" in error.message
    error = refused([[1], [None]], array("int32", [], nullable=True))
    assert where(error) == ("input", 1, "nullable")
    shaped = frame("int64", shape=[2], nullable=True)
    assert where(refused({"x": [[1, 2], None]}, shaped)) == ("x", 1, "nullable")
    assert where(refused({"x": [[1, 2], [3, None]]}, shaped)) == ("x", 1, "nullable")


# -- string length ----------------------------------------------------------------------------


def test_a_string_over_the_limit_is_413_and_not_echoed() -> None:
    schema = Schema(layout="text", inputs=[FieldSpec(name="text", dtype="string")])
    assert to_batch(["a" * MAX_STRING_CHARS], schema) == ["a" * MAX_STRING_CHARS]
    long = "secret" + "b" * MAX_STRING_CHARS
    error = refused(["ok", long], schema)
    assert isinstance(error, PayloadTooLargeError) and error.status == 413
    assert where(error) == ("text", 1, "string_length")
    assert "secret" not in str(error) and len(orjson.dumps(error.to_dict())) < 1000


# -- limits on decoded JSON -------------------------------------------------------------------


def nested(depth: int) -> Any:
    document: Any = 1
    for level in range(depth):
        document = [document] if level % 2 else {"k": document}
    return document


def test_nesting_deeper_than_the_limit_is_400() -> None:
    check_json_limits(nested(MAX_JSON_DEPTH))
    with pytest.raises(UserError) as caught:
        check_json_limits(nested(MAX_JSON_DEPTH + 1))
    assert caught.value.status == 400 and caught.value.details == {"rule": "depth"}
    with pytest.raises(UserError) as caught:
        native.decode({"inputs": nested(MAX_JSON_DEPTH)})
    assert caught.value.status == 400 and caught.value.details == {"rule": "depth"}


def test_long_strings_and_keys_in_a_body_are_413() -> None:
    long = "secret" + "x" * MAX_STRING_CHARS
    for document in (
        {"inputs": [{"text": long}]},
        {"inputs": [{long: 1}]},
        {"inputs": {"a": [1, 2, [long]]}},
        long,
    ):
        with pytest.raises(PayloadTooLargeError) as caught:
            check_json_limits(document)
        assert caught.value.status == 413
        assert "secret" not in str(caught.value) and len(str(caught.value)) < 300
    with pytest.raises(PayloadTooLargeError):
        native.decode({"inputs": [{"text": long}]})
    check_json_limits({"inputs": [{"text": "x" * MAX_STRING_CHARS}]})


def test_v2_takes_its_deepest_tensor_but_nothing_deeper() -> None:
    data: Any = [1.0]
    for _ in range(v2.MAX_DIMS - 1):
        data = [data]
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1] * v2.MAX_DIMS, "data": data}]}
    request = v2.decode_request(orjson.dumps(body))
    assert request.inputs[0].data.shape == (1,) * v2.MAX_DIMS
    body["inputs"][0]["data"] = [data]  # type: ignore[index]
    with pytest.raises(UserError) as caught:
        v2.decode_request(orjson.dumps(body))
    assert caught.value.status == 400 and caught.value.details == {"rule": "depth"}
    long = {
        "inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["x" * 10**6 + "y"]}]
    }
    with pytest.raises(PayloadTooLargeError):
        v2.decode_request(orjson.dumps(long))


def test_v2_binary_values_meet_the_same_rules() -> None:
    def binary(name: str, datatype: str, raw: bytes, shape: list[int]) -> v2.InferRequest:
        head = orjson.dumps(
            {
                "inputs": [
                    {
                        "name": name,
                        "datatype": datatype,
                        "shape": shape,
                        "parameters": {"binary_data_size": len(raw)},
                    }
                ]
            }
        )
        return v2.decode_request(head + raw, len(head))

    nan = np.array([1.0, np.nan], dtype="<f4").tobytes()
    schema = frame("int64", nullable=True)
    batch = to_batch(v2.to_columns(binary("x", "FP32", nan, [2]), schema), schema)
    assert batch["x"].isna().tolist() == [False, True]
    with pytest.raises(SchemaError) as caught:
        to_batch(v2.to_columns(binary("x", "FP32", nan, [2]), frame("int64")), frame("int64"))
    assert where(caught.value) == ("x", 1, "nullable")
    big = np.array([1.0, 1e300], dtype="<f8").tobytes()
    with pytest.raises(SchemaError) as caught:
        to_batch(v2.to_columns(binary("x", "FP64", big, [2]), frame("float32")), frame("float32"))
    assert where(caught.value) == ("x", 1, "dtype_range")
    # A signalling NaN (raw float32 bits 0x7f810000) is a NaN like any other, quietly.
    signalling = np.array([0x3F800000, 0x7F810000], dtype="<u4").tobytes()
    request = binary("input", "FP32", signalling, [2, 1])
    with pytest.raises(SchemaError) as caught:
        to_batch(v2.to_columns(request, array("float32", [1])), array("float32", [1]))
    assert where(caught.value) == ("input", 1, "nullable")
    # ... in FP16 and FP64 too, into integer and float fields, nullable or not: the same
    # answers as for a quiet NaN, never a warning (the fuzz test found an FP16 one).
    for datatype, bits in (("FP16", np.array([0x3C00, 0x7D01], dtype="<u2")),
                           ("FP64", np.array([0x3FF0000000000000, 0x7FF0000000000001],
                                             dtype="<u8"))):
        for field in ("int32", "float32", "float64"):
            request = binary("input", datatype, bits.tobytes(), [2, 1])
            with pytest.raises(SchemaError) as caught:
                to_batch(v2.to_columns(request, array(field, [1])), array(field, [1]))
            assert where(caught.value) == ("input", 1, "nullable")
        request = binary("x", datatype, bits.tobytes(), [2])
        nullable = frame("float32", nullable=True)
        assert np.isnan(to_batch(v2.to_columns(request, nullable), nullable)["x"][1])
        nullable = frame("int64", nullable=True)
        assert to_batch(v2.to_columns(request, nullable), nullable)["x"].isna().tolist() == [
            False, True]
    # FP16 into an int32 array: compared as doubles, not in float16 (which overflows).
    halves = np.array([[1.0], [2.0]], dtype="<f2").tobytes()
    request = binary("input", "FP16", halves, [2, 1])
    ints = to_batch(v2.to_columns(request, array("int32", [1])), array("int32", [1]))
    assert ints.dtype == np.int32 and ints.tolist() == [[1], [2]]
    flags = np.array([1, 0], dtype="u1").tobytes()
    with pytest.raises(SchemaError) as caught:
        to_batch(v2.to_columns(binary("x", "BOOL", flags, [2]), frame("float64")), frame("float64"))
    assert where(caught.value)[2] == "type"


@settings(max_examples=300, deadline=None)
@given(
    values=st.lists(st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                              st.integers(-(2**53), 2**53).map(float)), min_size=1, max_size=70),
    low=st.none() | st.floats(-1e6, 1e6),
    span=st.floats(0, 2e6),
    dtype=st.sampled_from(["float64", "float32"]),
)
def test_the_range_fast_path_agrees_with_numpy_at_every_size(
    values: list[float], low: float | None, span: float, dtype: str
) -> None:
    """Small arrays are screened in Python, larger ones by NumPy reductions; either way a NaN
    or infinity anywhere (first, last, alone) and any value out of bounds is never passed."""
    spec = FieldSpec(name="x", dtype=dtype, minimum=low,
                     maximum=None if low is None else low + span)
    array = np.array(values, dtype=np.float64)
    ok = bool(np.isfinite(array).all())
    if ok and dtype == "float32":
        ok = bool((np.abs(array) <= np.finfo(np.float32).max).all())
    if ok and low is not None:
        ok = bool((array >= low).all() and (array <= low + span).all())
    with np.errstate(over="ignore", invalid="ignore"):
        overflows = not np.isfinite(np.sum(array))
    for shaped in (array, array.reshape(1, -1)):
        passed = _within(spec, shaped)
        assert not passed or ok  # never passes a bad value
        # A sum that overflows may send good values to the slow path, which is exact.
        assert passed == ok or (overflows and array.size <= SMALL_ARRAY)
