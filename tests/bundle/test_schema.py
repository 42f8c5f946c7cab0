from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.bundle.manifest import FieldSpec, Schema
from shipyard.bundle.schema import check_outputs, infer_inputs, infer_outputs, to_batch
from shipyard.errors import SchemaError


@pytest.fixture
def frame_schema() -> Schema:
    sample = pd.DataFrame(
        {
            "age": [30, 40, 50],
            "income": [1.5, 2.5, np.nan],
            "city": ["Lisboa", "Porto", "Lisboa"],
            "vip": [True, False, True],
        }
    )
    schema = infer_inputs(sample)
    for field in schema.inputs:
        if field.name == "age":
            field.minimum, field.maximum = 0, 130
    return schema


def test_infers_types_nullability_and_categories(frame_schema):
    by_name = {f.name: f for f in frame_schema.inputs}
    assert frame_schema.layout == "frame"
    assert by_name["age"].dtype == "int64"
    assert by_name["income"].dtype == "float64" and by_name["income"].nullable
    assert by_name["city"].dtype == "category"
    assert by_name["city"].categories == ["Lisboa", "Porto"]
    assert by_name["vip"].dtype == "bool"


def test_infers_array_and_text_layouts():
    schema = infer_inputs(np.zeros((4, 30), dtype=np.float32))
    assert schema.layout == "array"
    assert schema.inputs[0].shape == [30] and schema.inputs[0].dtype == "float32"
    assert infer_inputs(["a sentence", "another"]).layout == "text"
    with pytest.raises(SchemaError, match="2-D"):
        infer_inputs(np.zeros(3))
    with pytest.raises(SchemaError, match="DataFrame"):
        infer_inputs(42)


def test_outputs_schema_names_classes():
    fields = infer_outputs({"label": np.array([0, 1]), "probabilities": np.zeros((2, 2))}, [0, 1])
    assert fields[0].categories == [0, 1]
    assert fields[1].shape == [2] and fields[1].maximum == 1.0


def test_records_columns_and_frames_give_the_same_batch(frame_schema):
    records = [
        {"age": 31, "income": 2.0, "city": "Porto", "vip": False},
        {"age": 32, "income": None, "city": "Lisboa", "vip": True},
    ]
    columns = {
        "age": [31, 32],
        "income": [2.0, None],
        "city": ["Porto", "Lisboa"],
        "vip": [False, True],
    }
    a = to_batch(records, frame_schema)
    b = to_batch(columns, frame_schema)
    c = to_batch(pd.DataFrame(records), frame_schema)
    for x in (b, c):
        pd.testing.assert_frame_equal(a, x, check_dtype=False)
    assert math.isnan(a["income"][1])


@pytest.mark.parametrize(
    ("record", "field", "rule"),
    [
        ({"age": "31", "income": 1.0, "city": "Porto", "vip": True}, "age", "type"),
        ({"age": True, "income": 1.0, "city": "Porto", "vip": True}, "age", "type"),
        ({"age": 31.5, "income": 1.0, "city": "Porto", "vip": True}, "age", "type"),
        ({"age": 200, "income": 1.0, "city": "Porto", "vip": True}, "age", "range"),
        ({"age": -1, "income": 1.0, "city": "Porto", "vip": True}, "age", "range"),
        ({"age": 31, "income": float("inf"), "city": "Porto", "vip": True}, "income", "finite"),
        ({"age": 31, "income": 1.0, "city": "Faro", "vip": True}, "city", "categories"),
        ({"age": 31, "income": 1.0, "city": None, "vip": True}, "city", "nullable"),
        ({"age": 31, "income": 1.0, "city": "Porto"}, "vip", "required"),
        ({"age": 31, "income": 1.0, "city": "Porto", "vip": True, "x": 1}, "x", "unknown"),
        ({"age": 31, "income": 1.0, "city": "Porto", "vip": 1}, "vip", "type"),
        ({"age": 31, "income": 1e309, "city": "Porto", "vip": True}, "income", "finite"),
    ],
)
def test_violations_name_field_row_and_rule(frame_schema, record, field, rule):
    good = {"age": 30, "income": 1.0, "city": "Lisboa", "vip": False}
    with pytest.raises(SchemaError) as info:
        to_batch([good, record], frame_schema)
    details = info.value.details
    assert details["field"] == field
    assert details["rule"] == rule
    if rule not in ("type",):
        assert details["row"] in (1, None)
    assert info.value.status == 422


def test_nan_refused_for_non_nullable_and_overflow_for_float32():
    schema = Schema(layout="array", inputs=[FieldSpec(name="input", dtype="float32", shape=[2])])
    with pytest.raises(SchemaError) as info:
        to_batch(np.array([[1.0, np.nan]]), schema)
    assert info.value.details["rule"] == "nullable"
    with pytest.raises(SchemaError) as info:
        to_batch([[1.0, 1e39]], schema)
    assert info.value.details["rule"] == "dtype_range"
    with pytest.raises(SchemaError) as info:
        to_batch([[1.0, 2.0, 3.0]], schema)
    assert info.value.details["rule"] == "shape"
    assert to_batch([[1.0, 2.0]], schema).dtype == np.float32


def test_empty_and_oversized_batches(frame_schema):
    with pytest.raises(SchemaError, match="empty"):
        to_batch([], frame_schema)
    rows = [{"age": 1, "income": 1.0, "city": "Porto", "vip": True}] * 5
    with pytest.raises(SchemaError, match="limit is 4"):
        to_batch(rows, frame_schema, max_rows=4)


def test_text_layout_accepts_unicode():
    schema = infer_inputs(["hello"])
    assert to_batch(["olá 👋", "日本語"], schema) == ["olá 👋", "日本語"]
    with pytest.raises(SchemaError):
        to_batch([{"text": 3}], schema)


def test_check_outputs_flags_missing_and_non_finite():
    specs = [FieldSpec(name="prediction", dtype="float64")]
    check_outputs({"prediction": np.array([1.0])}, specs)
    with pytest.raises(SchemaError, match="no output"):
        check_outputs({}, specs)
    with pytest.raises(SchemaError):
        check_outputs({"prediction": np.array([np.nan])}, specs)


@given(
    st.lists(
        st.floats(allow_nan=False, allow_infinity=False, min_value=-1e300, max_value=1e300),
        min_size=1,
        max_size=20,
    )
)
def test_finite_float64_values_always_pass(values):
    schema = Schema(layout="frame", inputs=[FieldSpec(name="x", dtype="float64")])
    batch = to_batch({"x": values}, schema)
    assert batch["x"].tolist() == values
