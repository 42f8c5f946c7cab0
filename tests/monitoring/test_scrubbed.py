"""What the monitor hands the record writer: PII scrubbed from text, numbers passed as they are."""

from __future__ import annotations

import numpy as np
import pandas as pd

from shipyard.monitoring.monitor import scrubbed
from shipyard.monitoring.recordstore import count_rows

EMAIL = "write to jane.doe@example.com"


def test_numeric_outputs_pass_untouched_and_uncopied() -> None:
    outputs = {"label": np.array([1]), "probabilities": np.array([[0.2, 0.8]]),
               "flag": np.array([True])}
    assert scrubbed(outputs) is outputs


def test_text_anywhere_in_outputs_is_scrubbed() -> None:
    for outputs in (
        {"label": np.array([1]), "reply": np.array([EMAIL])},
        {"reply": np.array([EMAIL], dtype=object), "label": np.array([1])},
        {"label": np.array([1]), "reply": [EMAIL]},
        {"label": np.array([1]), "reply": EMAIL},
    ):
        cleaned = scrubbed(outputs)
        assert "jane.doe@example.com" not in repr(cleaned)
        assert np.array_equal(cleaned["label"], [1])
        assert "jane.doe@example.com" in repr(outputs)  # the caller's answer is not changed


def test_inputs_of_every_layout_are_scrubbed() -> None:
    frame = pd.DataFrame({"x": [1.0], "note": [EMAIL]})
    for batch in (frame, np.array([[EMAIL]]), [EMAIL], [{"note": EMAIL}], {"note": [EMAIL]}):
        assert "jane.doe@example.com" not in repr(scrubbed(batch))
    numbers = np.zeros((2, 3))
    assert scrubbed(numbers) is numbers


def test_rows_are_counted_in_every_layout() -> None:
    assert count_rows(np.zeros((3, 2))) == 3
    assert count_rows(np.array(1.5)) == 1
    assert count_rows(np.zeros((0, 4))) == 0
    assert count_rows(None) == 0
    assert count_rows({"a": [1, 2]}) == 2
    assert count_rows({}) == 0
    assert count_rows(pd.DataFrame({"a": [1, 2, 3]})) == 3
    assert count_rows(["a", "b"]) == 2


def test_a_frame_comes_back_as_is_or_as_its_rows_with_text_redacted() -> None:
    clean = pd.DataFrame({"x": [1.0, 2.0], "note": ["hello", None], "n": [1, 2]})
    assert scrubbed(clean) is clean  # nothing to redact: no copy (once per record)
    frame = pd.DataFrame({
        "x": [1.0, 2.0],
        "note": [EMAIL, "fine"],
        "typed": pd.array(["call +1 415 555 0100", None], dtype="string"),
        "kind": pd.Categorical([EMAIL, "b"]),  # categories hold text too
        "mixed": [{"k": "v"}, 3],  # not text: passes as it is
        7: [1, 2],  # a column name that is not a string
    })
    rows = scrubbed(frame)
    assert rows[0]["note"] == "write to [EMAIL]" and rows[1]["note"] == "fine"
    assert rows[0]["typed"] == "call [PHONE]" and pd.isna(rows[1]["typed"])
    assert rows[0]["kind"] == "write to [EMAIL]"
    assert [r["mixed"] for r in rows] == [{"k": "v"}, 3]
    assert [r["x"] for r in rows] == [1.0, 2.0] and [r["7"] for r in rows] == [1, 2]
    assert frame["note"][0] == EMAIL  # the caller's frame is not changed

