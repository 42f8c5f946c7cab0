"""Reference parsing: the three forms, and every malformed reference refused by name."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shipyard.errors import BadReferenceError
from shipyard.registry.refs import Ref, check_name, parse_ref

NAMES = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True)
VERSIONS = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}", fullmatch=True)


def test_a_bare_name_means_latest() -> None:
    assert parse_ref("iris") == Ref("iris")


def test_colon_names_a_version_and_at_names_an_alias() -> None:
    assert parse_ref("iris:1.0.2") == Ref("iris", version="1.0.2")
    assert parse_ref("iris@production") == Ref("iris", alias="production")


@given(name=NAMES, version=VERSIONS, alias=NAMES)
def test_every_valid_reference_round_trips_through_str(name: str, version: str, alias: str) -> None:
    for text in (name, f"{name}:{version}", f"{name}@{alias}"):
        assert str(parse_ref(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Iris",
        "../etc/passwd",
        "iris:",
        "iris@",
        "iris:1.0@prod",
        "iris:../../x",
        "iris@Prod",
        "iris:1.0:2",
        "a" * 65,
        "iris/1.0",
        "iris@sha256:" + "0" * 64,
        "iris\n",
        "iris:1.0\n",
        "iris@production\n",
    ],
)
def test_malformed_references_name_the_expected_forms(text: str) -> None:
    with pytest.raises(BadReferenceError) as caught:
        parse_ref(text)
    message = str(caught.value)
    assert "Expected NAME, NAME:VERSION or NAME@ALIAS" in message
    assert "shipyard list" in caught.value.hint


def test_a_huge_reference_is_echoed_truncated() -> None:
    with pytest.raises(BadReferenceError) as caught:
        parse_ref("x" * 10_000 + ":")
    assert len(str(caught.value)) < 600


def test_non_text_is_refused_without_echoing_it() -> None:
    with pytest.raises(BadReferenceError):
        parse_ref(42)  # type: ignore[arg-type]


def test_check_name_explains_the_pattern() -> None:
    with pytest.raises(BadReferenceError, match=r"Got 'Bad Name' for the alias"):
        check_name("Bad Name", what="alias")
    assert check_name("production", what="alias") == "production"
