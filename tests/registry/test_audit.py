"""The audit log: who/when/what/where on every write, append-only, and a verifiable chain."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from shipyard.registry import Registry
from shipyard.registry.audit import GENESIS, canonical_json, entry_hash

MakeBundle = Callable[..., Path]


def _fill(registry: Registry, make_bundle: MakeBundle) -> None:
    registry.push(make_bundle(version="1.0"), actor="ana")
    registry.push(make_bundle(version="2.0", content=b"v2"), actor="bo")
    registry.set_alias("iris", "production", "1.0", actor="ana")
    registry.set_alias("iris", "production", "2.0", actor="bo")


def test_every_write_records_who_when_what_and_from_where(
    registry: Registry, make_bundle: MakeBundle
) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    _fill(registry, make_bundle)
    entries = registry.audit()
    assert [(e.seq, e.action, e.target, e.actor) for e in entries] == [
        (4, "alias.set", "iris@production", "bo"),
        (3, "alias.set", "iris@production", "ana"),
        (2, "push", "iris:2.0", "bo"),
        (1, "push", "iris:1.0", "ana"),
    ]
    assert entries[0].details == {"from": "1.0", "to": "2.0"}
    assert entries[3].details["files"] == 1
    assert all(e.at.tzinfo is not None and e.at >= before for e in entries)
    assert all("pid=" in e.origin for e in entries)
    assert entries[-1].prev_hash == GENESIS
    assert [e.prev_hash for e in entries[:-1]] == [e.hash for e in entries[1:]]


def test_audit_filters_by_target_and_limits(registry: Registry, make_bundle: MakeBundle) -> None:
    _fill(registry, make_bundle)
    assert [e.seq for e in registry.audit(target="iris@production")] == [4, 3]
    assert [e.seq for e in registry.audit(limit=1)] == [4]


def test_the_actor_defaults_to_the_settings_actor(
    registry: Registry, make_bundle: MakeBundle
) -> None:
    registry.push(make_bundle())
    assert registry.audit()[0].actor == registry.settings.resolved_actor


def test_an_intact_chain_verifies(registry: Registry, make_bundle: MakeBundle) -> None:
    assert registry.verify_audit().ok and registry.verify_audit().entries == 0
    _fill(registry, make_bundle)
    check = registry.verify_audit()
    assert check and check.entries == 4 and check.first_bad is None


@pytest.mark.parametrize(
    "statement", ["UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"]
)
def test_the_database_refuses_to_rewrite_history(
    registry: Registry, make_bundle: MakeBundle, statement: str
) -> None:
    _fill(registry, make_bundle)
    with pytest.raises(DBAPIError, match="append-only"), registry.database.write() as conn:
        conn.execute(text(statement))
    assert registry.verify_audit().entries == 4


def _drop_guard(registry: Registry) -> None:
    with registry.database.write() as conn:
        if registry.database.is_sqlite:
            conn.execute(text("DROP TRIGGER audit_log_no_update"))
            conn.execute(text("DROP TRIGGER audit_log_no_delete"))
        else:
            conn.execute(text("DROP TRIGGER audit_log_append_only ON audit_log"))


@pytest.mark.parametrize(
    ("statement", "first_bad", "problem"),
    [
        ("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2", 2, "changed after"),
        ('UPDATE audit_log SET details = \'{"to":"9.9"}\' WHERE seq = 3', 3, "changed after"),
        ("DELETE FROM audit_log WHERE seq = 2", 3, "entry 2 is missing"),
        ("UPDATE audit_log SET prev_hash = hash WHERE seq = 4", 4, "does not link"),
    ],
)
def test_tampering_is_found_at_the_first_broken_link(
    fresh_registry: Registry, make_bundle: MakeBundle, statement: str, first_bad: int, problem: str
) -> None:
    registry = fresh_registry  # its own schema: this test drops the append-only triggers
    _fill(registry, make_bundle)
    _drop_guard(registry)
    with registry.database.write() as conn:
        conn.execute(text(statement))
    check = registry.verify_audit()
    assert not check.ok
    assert check.first_bad == first_bad and problem in check.problem


def test_the_hash_covers_every_field_in_canonical_form() -> None:
    at = datetime(2025, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    fields = {"seq": 1, "at": at, "actor": "ana", "origin": "h pid=1", "action": "push"}
    base = entry_hash(GENESIS, target="iris:1", details={"b": 1, "a": [1, 2]}, **fields)
    assert base == entry_hash(GENESIS, target="iris:1", details={"a": [1, 2], "b": 1}, **fields)
    assert base != entry_hash(GENESIS, target="iris:2", details={"a": [1, 2], "b": 1}, **fields)
    assert base != entry_hash("1" * 64, target="iris:1", details={"b": 1, "a": [1, 2]}, **fields)
    assert canonical_json({"é": 1, "a": None}) == '{"a":null,"é":1}'


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(details=st.dictionaries(st.text(max_size=8), JSON, max_size=4), actor=st.text(max_size=20))
def test_the_hash_is_a_function_of_the_content_not_of_its_encoding(
    details: dict[str, object], actor: str
) -> None:
    at = datetime(2025, 1, 2, tzinfo=UTC)
    fields = {"seq": 7, "at": at, "origin": "h", "action": "push", "target": "t"}
    digest = entry_hash(GENESIS, actor=actor, details=details, **fields)
    reordered = dict(reversed(list(details.items())))
    round_tripped = json.loads(canonical_json(details))
    assert entry_hash(GENESIS, actor=actor, details=reordered, **fields) == digest
    assert entry_hash(GENESIS, actor=actor, details=round_tripped, **fields) == digest
    assert entry_hash(GENESIS, actor=actor + "x", details=details, **fields) != digest
