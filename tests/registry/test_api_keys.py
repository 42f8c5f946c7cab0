"""API keys in the registry: the KeyStore contract on both databases, and what it must never keep.

The contract tests are the very functions of tests/security/test_keys_store.py (written
against its reference SQLite store), run here with `store` bound to `Registry.keys()`.
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import inspect, select

from shipyard.errors import NotFoundError, UnauthorizedError, UserError
from shipyard.registry import Registry
from shipyard.registry.database import MIGRATIONS, SCHEMA_HEAD
from shipyard.registry.keys import RegistryKeyStore, audit_target
from shipyard.registry.tables import metadata
from shipyard.security.keys import KeyStore, authenticate_key, create_key, hash_key
from shipyard.security.principals import PrincipalKind, Role
from shipyard.settings import Settings


def _contract() -> ModuleType:
    # Loaded by path under a name of its own: tests/ has no packages, and this folder is not
    # on sys.path when tests/registry runs alone.
    path = Path(__file__).parents[1] / "security" / "test_keys_store.py"
    spec = importlib.util.spec_from_file_location("_shipyard_key_contract", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CONTRACT = _contract()
NOW: datetime = _CONTRACT.NOW

# The shared contract; pytest collects these names here and gives them this module's `store`.
test_contract_round_trip = _CONTRACT.test_a_record_round_trips_through_the_database
test_contract_duplicate_id = _CONTRACT.test_adding_an_existing_id_is_a_conflict
test_contract_unknown_id = _CONTRACT.test_get_of_an_unknown_id_is_none
test_contract_revoke_once = _CONTRACT.test_revoke_stamps_time_and_actor_once
test_contract_revoke_unknown = _CONTRACT.test_revoking_an_unknown_key_is_not_found
test_contract_list_keeps_all = _CONTRACT.test_list_keeps_revoked_and_expired_keys


@pytest.fixture
def store(registry: Registry) -> RegistryKeyStore:
    return registry.keys(clock=lambda: NOW)


def _stored_text(registry: Registry) -> str:
    """Every row of every registry table, as text."""
    chunks: list[str] = []
    with registry.database.read() as conn:
        for table in metadata.sorted_tables:
            chunks.extend(repr(tuple(row)) for row in conn.execute(select(table)))
    return "\n".join(chunks)


def test_the_registry_store_satisfies_the_protocol(registry: Registry) -> None:
    typed: KeyStore = registry.keys()
    assert isinstance(typed, RegistryKeyStore) and typed.registry is registry


def test_the_database_never_holds_the_plaintext(registry: Registry) -> None:
    plaintext, record = create_key(registry.keys(), Role.ADMIN, ["fraud"], None, "alice")
    registry.revoke_key(record.id, actor="bob")
    secret = plaintext.rsplit("_", 1)[1]
    stored = _stored_text(registry)
    assert hash_key(plaintext) in stored  # the dump does reach the key's row
    assert secret not in stored and plaintext not in stored
    if registry.database.is_sqlite:  # the raw files too: free pages, the WAL
        home = registry.settings.home
        raw = b"".join(p.read_bytes() for p in home.glob("registry.db*") if p.is_file())
        assert hash_key(plaintext).encode() in raw
        assert secret.encode() not in raw
    for entry in registry.audit():  # the audit log names the key but holds no hash
        text = repr(entry.details)
        assert secret not in text and hash_key(plaintext) not in text
        assert "hash" not in entry.details


def test_create_then_authenticate_through_the_registry(registry: Registry) -> None:
    keys = registry.keys()
    plaintext, record = create_key(
        keys, "deployer", ["fraud", "churn"], timedelta(days=1), "alice", name="ci"
    )
    principal = authenticate_key(keys, plaintext, datetime.now(UTC))
    assert principal.kind is PrincipalKind.KEY and principal.role is Role.DEPLOYER
    assert principal.name == "ci" and principal.key_id == record.id
    assert principal.deployments == frozenset({"fraud", "churn"})
    # A new handle on the same database sees the same key (nothing lives in the adapter).
    assert registry.get_key(record.id) == record
    near_miss = plaintext[:-1] + ("a" if plaintext[-1] != "a" else "b")
    with pytest.raises(UnauthorizedError):
        authenticate_key(keys, near_miss, datetime.now(UTC))
    with pytest.raises(UnauthorizedError):
        authenticate_key(keys, plaintext, record.created_at + timedelta(days=2))  # expired
    registry.revoke_key(record.id, actor="bob")
    with pytest.raises(UnauthorizedError) as caught:
        authenticate_key(keys, plaintext, datetime.now(UTC))
    assert plaintext not in str(caught.value)


def test_create_and_revoke_are_audited_with_the_actor(registry: Registry) -> None:
    _, record = create_key(registry.keys(), Role.VIEWER, None, None, "alice", name="board")
    revoked = registry.keys().revoke(record.id, "bob")
    assert revoked.revoked_by == "bob" and revoked.revoked_at is not None
    again = registry.revoke_key(record.id, actor="carol")  # a no-op: nothing to audit
    assert again == revoked
    entries = registry.audit(target=audit_target(record.id))
    assert [(e.action, e.actor) for e in entries] == [
        ("key.revoke", "bob"),
        ("key.create", "alice"),
    ]
    created = entries[1].details
    assert created == {
        "id": record.id,
        "name": "board",
        "role": "viewer",
        "deployments": None,
        "expires_at": None,
    }
    assert entries[0].details == {"id": record.id, "name": "board", "role": "viewer"}
    assert registry.verify_audit().ok


def test_revoke_defaults_to_the_settings_actor_and_the_current_time(registry: Registry) -> None:
    _, record = create_key(registry.keys(), Role.VIEWER, None, None, "alice")
    before = datetime.now(UTC)
    revoked = registry.revoke_key(record.id)
    assert revoked.revoked_by == registry.settings.resolved_actor
    assert revoked.revoked_at is not None and revoked.revoked_at >= before - timedelta(seconds=1)


def test_a_key_and_its_audit_entry_commit_together(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("audit unavailable")

    _, kept = create_key(registry.keys(), Role.VIEWER, None, None, "alice")
    monkeypatch.setattr(registry, "_record", broken)
    with pytest.raises(RuntimeError):
        create_key(registry.keys(), Role.ADMIN, None, None, "mallory")
    with pytest.raises(RuntimeError):
        registry.revoke_key(kept.id, actor="mallory")
    assert registry.list_keys() == [kept]  # neither the new key nor the revocation landed


@pytest.mark.parametrize(
    "change",
    [
        {"hash": "sy_" + "a" * 12 + "_" + "b" * 43},  # a plaintext where the hash belongs
        {"hash": "md5:" + "0" * 32},
        {"id": "short"},
        {"id": "a" * 11 + "\x00"},
        {"name": "n" * 201},
        {"created_by": "a\x00b"},
        {"created_by": ""},
        {"created_at": datetime(2030, 1, 1)},  # naive
        {"expires_at": datetime(2031, 1, 1)},
    ],
    ids=lambda change: next(iter(change)),
)
def test_a_bad_record_is_refused_before_it_is_stored(
    registry: Registry, change: dict[str, Any]
) -> None:
    _, good = create_key(registry.keys(), Role.VIEWER, None, None, "alice")
    bad = replace(good, **({"id": "B" * 12} | change))
    with pytest.raises(UserError) as caught:
        registry.add_key(bad)
    assert "\x00" not in str(caught.value) and "sy_" not in str(caught.value)
    assert registry.list_keys() == [good]
    assert [e.action for e in registry.audit()] == ["key.create"]


@pytest.mark.parametrize(
    "key_id",
    ["", "\x00", "a" * 11 + "\x00", "é" * 12, "x" * 100_000, "sy_" + "a" * 12 + "_" + "b" * 43],
    ids=["empty", "nul", "nul-inside", "unicode", "huge", "whole-key"],
)
def test_nasty_ids_are_unknown_and_never_echoed(registry: Registry, key_id: str) -> None:
    assert registry.get_key(key_id) is None
    with pytest.raises(NotFoundError) as caught:
        registry.revoke_key(key_id, actor="bob")
    assert key_id not in str(caught.value) or key_id == ""
    assert registry.audit() == []


def test_scopes_and_times_round_trip_exactly(registry: Registry) -> None:
    at = datetime(2030, 6, 1, 12, 0, 0, 123456, tzinfo=UTC)
    _, record = create_key(
        registry.keys(), Role.PREDICTOR, ["b-two", "a.one"], at + timedelta(days=90), "al", now=at
    )
    stored = registry.get_key(record.id)
    assert stored == record
    assert stored is not None and stored.created_at.tzinfo is not None
    assert stored.deployments == frozenset({"a.one", "b-two"})


def test_keys_survive_reopening(settings: Settings) -> None:
    with Registry.open(settings) as registry:
        plaintext, record = create_key(registry.keys(), Role.ADMIN, None, None, "alice")
    with Registry.open(settings) as registry:
        assert registry.list_keys() == [record]
        assert authenticate_key(registry.keys(), plaintext, datetime.now(UTC)).key_id == record.id


def test_migration_0003_adds_and_drops_only_the_key_table(settings: Settings) -> None:
    assert SCHEMA_HEAD == "0003"
    with Registry.open(settings) as registry:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with registry.database.read() as conn:
            before = set(inspect(conn).get_table_names())
        assert "api_keys" in before
        with registry.database.write() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0002")
        with registry.database.read() as conn:
            assert set(inspect(conn).get_table_names()) == before - {"api_keys"}
        assert registry.database.schema_revisions() == ["0002"]
        registry.database.migrate()
        assert registry.database.schema_revisions() == [SCHEMA_HEAD]
        assert registry.list_keys() == []
