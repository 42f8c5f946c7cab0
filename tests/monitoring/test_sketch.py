"""Window sketches: binned exactly like the reference profile, mergeable, plain-JSON persistent."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shipyard.bundle.manifest import FieldSpec, Profile, Schema
from shipyard.bundle.profile import build_profile, categorical_profile, numeric_profile
from shipyard.errors import ConflictError, SchemaError
from shipyard.monitoring.sketch import (
    CONFIDENCE_KEYS,
    NULL,
    OTHER,
    UNSEEN,
    ReferenceBins,
    WindowSketch,
    confidence_columns,
    merge_all,
    sketch_columns,
)

RNG = np.random.default_rng(7)
REFERENCE = RNG.normal(10.0, 2.0, size=5_000)


def make_profile() -> Profile:
    colours = RNG.choice(["rot", "grün", "青"], size=5_000, p=[0.5, 0.3, 0.2])
    return Profile(
        rows=5_000,
        inputs={
            "x": numeric_profile(REFERENCE),
            "colour": categorical_profile(colours),
            "constant": numeric_profile(np.full(5_000, 3.0)),
            "empty": numeric_profile(np.full(5_000, np.nan)),
        },
        outputs={"label": categorical_profile(RNG.choice(["a", "b"], size=5_000))},
    )


@pytest.fixture
def bins() -> ReferenceBins:
    return ReferenceBins.from_profile(make_profile())


def test_reference_counts_add_underflow_overflow_and_null_bins(bins: ReferenceBins) -> None:
    x = bins.fields["x"]
    assert x.size == 23  # 20 reference bins + underflow + overflow + null
    assert x.reference is not None and x.reference[0] == 0 and x.reference[-2] == 0
    assert sum(x.reference) == 5_000
    assert x.labels()[0].startswith("(-inf") and x.labels()[-1] == NULL
    colour = bins.fields["colour"]
    assert colour.labels()[-3:] == [OTHER, UNSEEN, NULL]
    assert set(colour.categories) == {"rot", "grün", "青"}


def test_live_values_in_range_bin_exactly_like_numpy_histogram(bins: ReferenceBins) -> None:
    live = RNG.normal(10.0, 2.0, size=20_000)
    edges = np.asarray(bins.fields["x"].edges)
    inside = live[(live >= edges[0]) & (live <= edges[-1])]
    sketch = WindowSketch(bins)
    sketch.update({"x": live})
    counts = sketch.counts["x"]
    np.testing.assert_array_equal(counts[1:-2], np.histogram(inside, bins=edges)[0])
    assert counts[0] == np.sum(live < edges[0]) and counts[-2] == np.sum(live > edges[-1])
    assert sketch.rows == 20_000


def test_nan_goes_to_null_infinities_to_the_outer_bins_max_to_the_last_bin(
    bins: ReferenceBins,
) -> None:
    edges = bins.fields["x"].edges
    sketch = WindowSketch(bins)
    sketch.update({"x": np.array([np.nan, np.nan, -np.inf, np.inf, edges[-1], edges[0]])})
    counts = sketch.counts["x"]
    assert counts[-1] == 2 and counts[0] == 1 and counts[-2] == 1
    assert counts[-3] == 1 and counts[1] == 1
    # KLL keeps only finite values, so quantiles stay plain JSON numbers.
    assert sketch.kll["x"].n == 2


def test_categories_unseen_unicode_and_null(bins: ReferenceBins) -> None:
    sketch = WindowSketch(bins)
    sketch.update({"colour": np.array(["rot", "青", "青", "violett", None, np.nan], dtype=object)})
    counts = dict(zip(bins.fields["colour"].labels(), sketch.counts["colour"], strict=True))
    assert counts == {"rot": 1, "grün": 0, "青": 2, OTHER: 0, UNSEEN: 1, NULL: 2}


def test_values_outside_a_top_list_go_to_other_when_the_reference_had_a_tail() -> None:
    many = np.array([f"c{i}" for i in range(150)] * 3, dtype=object)
    bins = ReferenceBins.from_profile(Profile(rows=450, inputs={"c": categorical_profile(many)}))
    sketch = WindowSketch(bins)
    sketch.update({"c": np.array(["c149", "never-seen"], dtype=object)})
    field = bins.fields["c"]
    labels = field.labels()
    assert field.reference is not None and field.reference[labels.index(OTHER)] == 150
    assert sketch.counts["c"][labels.index(OTHER)] == 2
    assert sketch.counts["c"][labels.index(UNSEEN)] == 0


def test_integer_and_bool_categories_match_their_profile_keys() -> None:
    profile = Profile(
        rows=4,
        inputs={
            "n": categorical_profile(np.array([1, 2, 2, 3])),
            "b": categorical_profile(np.array([True, False, True, True])),
        },
    )
    bins = ReferenceBins.from_profile(profile)
    sketch = WindowSketch(bins)
    sketch.update({"n": np.array([2, 2, 9]), "b": np.array([False, False, True])})
    n = dict(zip(bins.fields["n"].labels(), sketch.counts["n"].tolist(), strict=True))
    assert n == {"1": 0, "2": 2, "3": 0, OTHER: 0, UNSEEN: 1, NULL: 0}
    b = dict(zip(bins.fields["b"].labels(), sketch.counts["b"].tolist(), strict=True))
    assert b == {"True": 1, "False": 2, OTHER: 0, UNSEEN: 0, NULL: 0}


def test_constant_and_all_nan_reference_columns_stay_binnable(bins: ReferenceBins) -> None:
    assert bins.fields["constant"].edges == (2.5, 3.5)
    assert bins.fields["empty"].reference == (0, 5_000)  # [values, null]
    sketch = WindowSketch(bins)
    sketch.update({"constant": np.array([3.0, 3.0, 9.0]), "empty": np.array([1.0, np.nan])})
    assert sketch.counts["constant"].tolist() == [0, 2, 1, 0]
    assert sketch.counts["empty"].tolist() == [1, 1]
    assert sketch.quantiles("empty", [0.5]) == {"0.5": 1.0}


def test_unknown_keys_are_ignored_and_non_numbers_are_a_schema_error(bins: ReferenceBins) -> None:
    sketch = WindowSketch(bins)
    sketch.update({"not-in-profile": np.arange(3), "x": [1.0, None, 2.0]})
    assert sketch.counts["x"].sum() == 3 and sketch.counts["x"][-1] == 1
    with pytest.raises(SchemaError, match="non-numeric") as caught:
        sketch.update({"x": np.array(["a", "b"], dtype=object)})
    assert caught.value.hint


def test_empty_window_is_well_defined(bins: ReferenceBins) -> None:
    sketch = WindowSketch(bins)
    sketch.update({"x": np.array([], dtype=float), "colour": np.array([], dtype=object)})
    assert sketch.rows == 0 and sketch.counts["x"].sum() == 0
    assert sketch.quantiles("x", [0.5]) is None
    assert json.loads(json.dumps(sketch.to_json()))["rows"] == 0


def test_kll_quantiles_track_numpy(bins: ReferenceBins) -> None:
    live = RNG.normal(10.0, 2.0, size=200_000)
    sketch = WindowSketch(bins)
    sketch.update({"x": live})
    got = sketch.quantiles("x", [0.05, 0.5, 0.95])
    assert got is not None
    for rank, value in got.items():
        # KLL with k=200: rank error about 1.3%, i.e. 0.013 * density^-1 in value.
        assert abs(float(np.mean(live <= value)) - float(rank)) < 0.02


def test_merge_equals_one_sketch_of_everything(bins: ReferenceBins) -> None:
    a, b = RNG.normal(10, 2, 3_000), RNG.normal(12, 2, 4_000)
    left, right = WindowSketch(bins, start=0, end=60), WindowSketch(bins, start=60, end=120)
    whole = WindowSketch(bins)
    left.update({"x": a})
    right.update({"x": b})
    whole.update({"x": np.concatenate([a, b])})
    merged = left.merge(right)
    np.testing.assert_array_equal(merged.counts["x"], whole.counts["x"])
    assert merged.rows == 7_000 and (merged.start, merged.end) == (0, 120)
    assert merged.kll["x"].n == 7_000
    assert left.rows == 3_000  # inputs unchanged


def test_merging_many_buckets_at_once_equals_one_sketch_of_everything(
    bins: ReferenceBins,
) -> None:
    parts = [RNG.normal(10 + i / 10, 2, 500) for i in range(60)]
    buckets = []
    for i, values in enumerate(parts):
        bucket = WindowSketch(bins, start=5.0 * i, end=5.0 * (i + 1))
        bucket.update({"x": values, "colour": np.array(["rot", "青"] * 5, dtype=object)})
        buckets.append(bucket)
    whole = WindowSketch(bins)
    whole.update({"x": np.concatenate(parts)})
    merged = merge_all(buckets)
    np.testing.assert_array_equal(merged.counts["x"], whole.counts["x"])
    assert merged.counts["colour"].sum() == 600
    assert merged.rows == 30_000 and (merged.start, merged.end) == (0.0, 300.0)
    assert merged.kll["x"].n == 30_000
    assert merged.quantiles("x", [0.5]) == pytest.approx(whole.quantiles("x", [0.5]), rel=0.02)
    # Counts only: the same counts, no quantiles; a window given its own span keeps it.
    counted = merge_all(buckets, start=10.0, end=20.0, quantiles=False)
    np.testing.assert_array_equal(counted.counts["x"], whole.counts["x"])
    assert counted.kll == {} and counted.quantiles("x", [0.5]) is None
    assert (counted.start, counted.end) == (10.0, 20.0)
    assert buckets[0].rows == 500 and buckets[0].kll["x"].n == 500  # inputs unchanged


def test_json_round_trip_is_plain_json(bins: ReferenceBins) -> None:
    sketch = WindowSketch(bins, start=1.5, end=61.5)
    sketch.update({"x": RNG.normal(10, 2, 1_000), "colour": np.array(["rot"] * 10, dtype=object)})
    text = json.dumps(sketch.to_json(), allow_nan=False)
    back = WindowSketch.from_json(json.loads(text), bins)
    for key in bins.fields:
        np.testing.assert_array_equal(back.counts[key], sketch.counts[key])
    assert back.rows == 1_000 and back.start == 1.5
    assert back.quantiles("x", [0.5]) == sketch.quantiles("x", [0.5])


def test_sketches_of_different_references_refuse_to_mix(bins: ReferenceBins) -> None:
    other = ReferenceBins.from_profile(Profile(rows=3, inputs={"x": numeric_profile([1, 2, 3])}))
    with pytest.raises(ConflictError):
        WindowSketch(bins).merge(WindowSketch(other))
    with pytest.raises(ConflictError):
        WindowSketch.from_json(WindowSketch(other).to_json(), bins)


@pytest.mark.parametrize(
    "broken",
    [{}, {"format": 99, "fingerprint": "x", "rows": 0, "fields": {}}, {"rows": "many"}],
)
def test_malformed_json_is_a_schema_error(bins: ReferenceBins, broken: dict) -> None:
    with pytest.raises(SchemaError):
        WindowSketch.from_json(broken, bins)


def test_wrong_number_of_counts_is_a_schema_error(bins: ReferenceBins) -> None:
    data = WindowSketch(bins).to_json()
    data["fields"]["x"]["counts"] = [1, 2, 3]
    with pytest.raises(SchemaError, match="bins"):
        WindowSketch.from_json(data, bins)


def test_served_frame_batch_becomes_profile_keyed_columns() -> None:
    schema = Schema(
        layout="frame",
        inputs=[
            FieldSpec(name="age", dtype="float64"),
            FieldSpec(name="city", dtype="category"),
            FieldSpec(name="note", dtype="string", nullable=True),
        ],
        outputs=[
            FieldSpec(name="label", dtype="int64"),
            FieldSpec(name="probabilities", dtype="float64", shape=[3]),
        ],
    )
    batch = pd.DataFrame({"age": [30.0, 40.0], "city": ["Lisboa", "Zürich"], "note": ["hé", None]})
    outputs = {
        "label": np.array([0, 2]),
        "probabilities": np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]),
    }
    columns = sketch_columns(schema, batch, outputs)
    assert set(columns) == {"age", "city", "note", "label", "probabilities[0]",
                            "probabilities[1]", "probabilities[2]", *CONFIDENCE_KEYS}
    np.testing.assert_array_equal(columns["note"], [2.0, np.nan])
    np.testing.assert_allclose(columns["confidence.top"], [0.7, 0.6])
    np.testing.assert_allclose(columns["confidence.margin"], [0.5, 0.3])
    # The same keys as the profile that bundle/profile.py builds for this schema.
    profile = build_profile(schema, batch, outputs)
    bins = ReferenceBins.from_profile(profile)
    assert set(columns) == set(bins.fields)
    sketch = WindowSketch(bins)
    sketch.update(columns)
    assert sketch.rows == 2 and all(sketch.counts[k].sum() == 2 for k in columns)


def test_array_and_text_layouts_and_output_key_collisions() -> None:
    array_schema = Schema(
        layout="array",
        inputs=[FieldSpec(name="x", dtype="float32", shape=[3])],
        outputs=[FieldSpec(name="x", dtype="float64")],
    )
    batch = np.arange(6, dtype=np.float32).reshape(2, 3)
    columns = sketch_columns(array_schema, batch, {"x": np.array([0.5, 0.25])})
    assert set(columns) == {"x[0]", "x[1]", "x[2]", "x"}  # "x" is free: inputs are x[i]
    text = Schema(layout="text", inputs=[FieldSpec(name="text", dtype="string")],
                  outputs=[FieldSpec(name="text", dtype="float64")])
    columns = sketch_columns(text, ["añb", "", "longer one"], {"text": np.ones(3)})
    np.testing.assert_array_equal(columns["text"], [3, 0, 10])
    np.testing.assert_array_equal(columns["output.text"], [1, 1, 1])


def test_confidence_of_a_single_probability_column_is_binary() -> None:
    got = confidence_columns(np.array([0.9, 0.2, 0.5]))
    np.testing.assert_allclose(got["confidence.top"], [0.9, 0.8, 0.5])
    np.testing.assert_allclose(got["confidence.margin"], [0.8, 0.6, 0.0])
    assert confidence_columns(np.empty((0, 2)))["confidence.top"].size == 0


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(
        st.lists(
            st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-50, 50)),
            max_size=40,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_chunking_never_changes_the_counts(chunks: list[list[float]]) -> None:
    bins = ReferenceBins.from_profile(Profile(rows=5_000, inputs={"x": numeric_profile(REFERENCE)}))
    pieces, whole = WindowSketch(bins), WindowSketch(bins)
    for chunk in chunks:
        pieces.update({"x": np.asarray(chunk, dtype=np.float64)})
    everything = np.asarray([v for chunk in chunks for v in chunk], dtype=np.float64)
    whole.update({"x": everything})
    np.testing.assert_array_equal(pieces.counts["x"], whole.counts["x"])
    assert pieces.counts["x"].sum() == everything.size
