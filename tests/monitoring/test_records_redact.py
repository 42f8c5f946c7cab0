"""Redaction: each policy, the key file, and the invariants that keep PII out of storage."""

from __future__ import annotations

import json
import math
import os
import stat
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import ConfigError
from shipyard.monitoring.redact import HASH_PREFIX, Redactor, load_key, mask, plain
from shipyard.routing import RecordsConfig

KEY = bytes(range(32))

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.text()
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)


def redactor(**policies: str) -> Redactor:
    default = policies.pop("default", "keep")
    return Redactor(RecordsConfig(redact=policies, default_policy=default), KEY)  # type: ignore[arg-type]


def test_each_policy_applies_to_its_field() -> None:
    row = {"age": 41, "email": "ana@example.com", "name": "Ana Lima Souza", "ssn": "123-45"}
    out = redactor(email="hash", name="mask", ssn="drop").row(row)
    assert out["age"] == 41
    assert out["email"].startswith(HASH_PREFIX) and len(out["email"]) == 2 + 32
    assert out["name"] == "***za"
    assert "ssn" not in out


def test_default_policy_covers_fields_not_named() -> None:
    out = redactor(default="drop", age="keep").row({"age": 3, "secret": "x", "other": 1.5})
    assert out == {"age": 3}


def test_mask_keeps_a_type_hint_and_at_most_two_characters() -> None:
    assert mask("short") == "***"  # under 8 characters nothing shows
    assert mask("abcdefgh") == "***gh"
    assert mask(7) == "***int"
    assert mask(7.5) == "***float"
    assert mask(True) == "***bool"
    assert mask([1, 2]) == "***list"
    assert mask({"a": 1}) == "***object"
    assert mask(None) is None


def test_hash_depends_on_the_key_and_on_the_type() -> None:
    one, other = redactor(x="hash"), Redactor(RecordsConfig(redact={"x": "hash"}), KEY[::-1])
    assert one.hash("a@b.c") == one.hash("a@b.c")
    assert one.hash("a@b.c") != other.hash("a@b.c")
    assert one.hash(1) != one.hash("1")
    assert one.hash(None) is None


def test_the_key_never_shows_in_a_repr() -> None:
    assert KEY.hex() not in repr(redactor(x="hash"))
    assert str(KEY) not in repr(redactor(x="hash"))


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ConfigError):
        Redactor(RecordsConfig(), b"short")


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_redacted_rows_keep_no_original_value_of_hashed_or_dropped_fields(row: dict) -> None:
    policies = {name: ("hash" if i % 2 else "drop") for i, name in enumerate(row)}
    out = Redactor(RecordsConfig(redact=policies), KEY).row(row)
    for name, policy in policies.items():
        if policy == "drop":
            assert name not in out
        elif row[name] is not None:
            assert out[name].startswith(HASH_PREFIX) and out[name] != row[name]
    json.dumps(out, allow_nan=False)  # stays JSON


@given(st.text())
def test_masked_strings_reveal_at_most_two_trailing_characters(value: str) -> None:
    masked = mask(value)
    assert masked is not None and masked.startswith("***")
    shown = masked[3:]
    assert len(shown) <= 2 and value.endswith(shown)
    if len(value) < 8:
        assert shown == ""


@given(json_values)
def test_keep_everything_is_the_identity(value: object) -> None:
    assert redactor().row({"v": value}) == {"v": value}


def test_plain_turns_numpy_and_non_finite_floats_into_json() -> None:
    values = {
        "a": np.float32(1.5),
        "b": np.array([1, 2]),
        "c": math.nan,
        "d": -math.inf,
        "e": np.int64(3),
        "f": (1, "x"),
        "g": b"\x01",
    }
    out = plain(values)
    assert out == {"a": 1.5, "b": [1, 2], "c": None, "d": None, "e": 3, "f": [1, "x"], "g": "01"}
    json.dumps(out, allow_nan=False)


def test_load_key_creates_a_private_key_once(tmp_path: Path) -> None:
    key = load_key(tmp_path / "records")
    path = tmp_path / "records" / "redact.key"
    assert len(key) == 32 and load_key(tmp_path / "records") == key
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["redact.key"]  # no temp file left


def test_racing_processes_agree_on_one_key(tmp_path: Path) -> None:
    keys: list[bytes] = []
    threads = [threading.Thread(target=lambda: keys.append(load_key(tmp_path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1


def test_a_corrupt_key_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "redact.key").write_bytes(b"too short")
    with pytest.raises(ConfigError, match="32 bytes"):
        load_key(tmp_path)
