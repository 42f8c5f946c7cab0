"""A batch's outputs are checked against the output schema per request: one caller whose input
drives the model outside its output range gets a 422, its batch-mates their answers."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from shipyard.bundle.manifest import FieldSpec
from shipyard.bundle.schema import OutputTypeError, check_outputs
from shipyard.serving.variant import InputRejected, ModelFailure, Variant

SPECS = [FieldSpec(name="score", dtype="float64", minimum=0.0, maximum=1.0),
         FieldSpec(name="label", dtype="int64")]


def checked(scores: list[float], sizes: list[int]) -> list[object]:
    owner = SimpleNamespace(outputs_spec=SPECS)
    outputs = {"score": np.array(scores), "label": np.arange(len(scores))}
    batches = [np.zeros((size, 2)) for size in sizes]
    return Variant._checked(owner, outputs, batches)  # type: ignore[arg-type]


def test_a_clean_batch_is_split_by_request() -> None:
    parts = checked([0.1, 0.2, 0.3], [1, 2])
    assert [p["score"].tolist() for p in parts] == [[0.1], [0.2, 0.3]]  # type: ignore[index]
    assert [p["label"].tolist() for p in parts] == [[0], [1, 2]]  # type: ignore[index]


@pytest.mark.parametrize(("sizes", "bad", "row"), [
    ([1, 1, 1], 1, 0),
    ([2, 1], 0, 1),
    ([1, 2], 1, 0),
])
def test_only_the_request_whose_answer_breaks_the_schema_fails(
    sizes: list[int], bad: int, row: int
) -> None:
    scores = [0.5] * sum(sizes)
    scores[sum(sizes[:bad]) + row] = 7.0
    parts = checked(scores, sizes)
    for index, part in enumerate(parts):
        if index == bad:
            assert isinstance(part, InputRejected)
            assert part.details["field"] == "score" and part.details["row"] == row
            assert part.details["rule"] == "range"
            assert "broke its output schema" in part.message
        else:
            assert part["score"].tolist() == [0.5] * sizes[index]  # type: ignore[index]


def test_a_lone_request_gets_the_same_answer_as_in_a_batch() -> None:
    alone = checked([0.5, float("nan")], [2])
    batched = checked([0.2, 0.5, float("nan")], [1, 2])
    assert isinstance(alone[0], InputRejected) and isinstance(batched[1], InputRejected)
    assert alone[0].details == batched[1].details
    assert alone[0].details["rule"] == "nullable" and alone[0].details["row"] == 1
    assert batched[0]["score"].tolist() == [0.2]  # type: ignore[index]


@pytest.mark.parametrize("scores", [
    np.array(["0.5", "0.25"]),                      # text, even text that reads as numbers
    np.array([0.5, "card 4111 1111 1111 1111"], dtype=object),
    np.array([0.5, {"x": 1}], dtype=object),
])
def test_text_where_the_schema_says_number_is_the_models_failure(scores: np.ndarray) -> None:
    """Not a 422 for the caller (no input of theirs caused it), not a 500 either: the model
    failed, so the fallback answers or the server says 503."""
    owner = SimpleNamespace(outputs_spec=SPECS)
    outputs = {"score": scores, "label": np.arange(len(scores))}
    with pytest.raises(ModelFailure, match="where the schema says float64") as failure:
        Variant._checked(owner, outputs, [np.zeros((1, 2)), np.zeros((1, 2))])  # type: ignore[arg-type]
    assert "4111" not in failure.value.args[0]  # the value itself is never quoted


def test_numbers_and_nulls_as_python_objects_still_pass() -> None:
    nullable = [FieldSpec(name="score", dtype="float64", nullable=True)]
    owner = SimpleNamespace(outputs_spec=nullable)
    outputs = {"score": np.array([0.5, None], dtype=object)}
    parts = Variant._checked(owner, outputs, [np.zeros((2, 2))])  # type: ignore[arg-type]
    assert parts[0]["score"].tolist() == [0.5, None]  # type: ignore[index]


def test_a_type_error_is_found_behind_another_fields_range_error() -> None:
    """Kinds are checked before values: a score out of range in one field must not turn the
    model's text in another into a 422 for the caller."""
    owner = SimpleNamespace(outputs_spec=SPECS)
    outputs = {"score": np.array([7.0, 0.5]), "label": np.array([1, "x"], dtype=object)}
    with pytest.raises(ModelFailure, match="'label' at row 1"):
        Variant._checked(owner, outputs, [np.zeros((1, 2)), np.zeros((1, 2))])  # type: ignore[arg-type]


def test_an_empty_object_array_does_not_crash_the_check() -> None:
    check_outputs({"score": np.array([], dtype=object)}, [FieldSpec(name="score", dtype="float64")])


def test_text_in_rows_of_several_values_is_refused_with_its_row() -> None:
    values = np.array([[0.1, 0.2], [0.3, "x"]], dtype=object)
    with pytest.raises(OutputTypeError) as refused:
        check_outputs({"score": values}, [FieldSpec(name="score", dtype="float64")])
    assert refused.value.details["row"] == 1
