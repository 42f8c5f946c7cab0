"""A SQLite-backed KeyStore (a real database, standing in for the registry's) and its contract.

Other test modules import `SQLiteKeyStore` from here; the registry's own store should pass
the same contract tests when it arrives.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shipyard.errors import ConflictError, NotFoundError
from shipyard.security.keys import KeyRecord, KeyStore, create_key, hash_key
from shipyard.security.principals import Role

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    deployments TEXT,
    created_at TEXT NOT NULL,
    created_by TEXT NOT NULL,
    expires_at TEXT,
    revoked_at TEXT,
    revoked_by TEXT,
    hash TEXT NOT NULL
)
"""
_COLUMNS = (
    "id",
    "name",
    "role",
    "deployments",
    "created_at",
    "created_by",
    "expires_at",
    "revoked_at",
    "revoked_by",
    "hash",
)


class SQLiteKeyStore:
    """KeyStore over one SQLite file; `clock` stamps revocations."""

    def __init__(self, path: Path, clock=lambda: datetime.now(UTC)) -> None:
        self.path = path
        self.clock = clock
        with self._connect() as conn:
            conn.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path)

    def add(self, record: KeyRecord) -> None:
        row = record.to_row()
        row["deployments"] = None if row["deployments"] is None else json.dumps(row["deployments"])
        try:
            with self._connect() as conn:
                conn.execute(
                    f"INSERT INTO api_keys ({', '.join(_COLUMNS)}) "
                    f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                    [row[c] for c in _COLUMNS],
                )
        except sqlite3.IntegrityError as exc:
            raise ConflictError("An API key with this id exists.", hint="Create another.") from exc

    def get(self, key_id: str) -> KeyRecord | None:
        with self._connect() as conn:
            found = conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM api_keys WHERE id = ?", (key_id,)
            ).fetchone()
        return None if found is None else _record(found)

    def revoke(self, key_id: str, actor: str) -> KeyRecord:
        with self._connect() as conn:
            conn.execute(
                "UPDATE api_keys SET revoked_at = ?, revoked_by = ? "
                "WHERE id = ? AND revoked_at IS NULL",
                (self.clock().isoformat(), actor, key_id),
            )
        record = self.get(key_id)
        if record is None:
            raise NotFoundError("No such API key.", hint="List keys with: shipyard keys list")
        return record

    def list(self) -> list[KeyRecord]:
        with self._connect() as conn:
            rows = conn.execute(
                f"SELECT {', '.join(_COLUMNS)} FROM api_keys ORDER BY created_at, id"
            ).fetchall()
        return [_record(r) for r in rows]


def _record(found: tuple) -> KeyRecord:
    row = dict(zip(_COLUMNS, found, strict=True))
    if row["deployments"] is not None:
        row["deployments"] = json.loads(row["deployments"])
    return KeyRecord.from_row(row)


NOW = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.fixture
def store(tmp_path: Path) -> SQLiteKeyStore:
    return SQLiteKeyStore(tmp_path / "keys.db", clock=lambda: NOW)


def test_the_sqlite_store_satisfies_the_protocol(store):
    typed: KeyStore = store  # mypy-style check that the shape matches
    assert typed is store


def test_a_record_round_trips_through_the_database(store):
    _, record = create_key(
        store,
        Role.PREDICTOR,
        ["fraud", "churn"],
        timedelta(days=3),
        "alice",
        name="ci deploys",
        now=NOW,
    )
    assert store.get(record.id) == record
    assert store.list() == [record]
    assert record.deployments == frozenset({"fraud", "churn"})
    assert record.expires_at == NOW + timedelta(days=3)


def test_adding_an_existing_id_is_a_conflict(store):
    _, record = create_key(store, Role.VIEWER, None, None, "alice", now=NOW)
    with pytest.raises(ConflictError):
        store.add(record)


def test_get_of_an_unknown_id_is_none(store):
    assert store.get("000000000000") is None
    assert store.get("x'; DROP TABLE api_keys; --") is None
    assert store.list() == []


def test_revoke_stamps_time_and_actor_once(store):
    _, record = create_key(store, Role.ADMIN, None, None, "alice", now=NOW)
    first = store.revoke(record.id, "bob")
    assert first.revoked_at == NOW and first.revoked_by == "bob"
    store.clock = lambda: NOW + timedelta(hours=1)
    again = store.revoke(record.id, "carol")
    assert again.revoked_at == NOW and again.revoked_by == "bob"


def test_revoking_an_unknown_key_is_not_found(store):
    with pytest.raises(NotFoundError):
        store.revoke("nope", "bob")


def test_the_database_never_holds_the_plaintext(store, tmp_path):
    plaintext, _ = create_key(store, Role.ADMIN, None, None, "alice", now=NOW)
    secret = plaintext.rsplit("_", 1)[1]
    raw = (tmp_path / "keys.db").read_bytes()
    assert secret.encode() not in raw
    assert plaintext.encode() not in raw
    assert hash_key(plaintext).encode() in raw


def test_list_keeps_revoked_and_expired_keys(store):
    _, a = create_key(store, Role.VIEWER, None, timedelta(seconds=1), "alice", now=NOW)
    _, b = create_key(store, Role.VIEWER, None, None, "alice", now=NOW + timedelta(seconds=1))
    store.revoke(b.id, "alice")
    assert [r.id for r in store.list()] == [a.id, b.id]
