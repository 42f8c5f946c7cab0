"""API key records in the registry database: the queries behind `Registry`'s key methods.

`shipyard.security.keys` makes and checks keys; it reads and writes their records through its
`KeyStore` protocol, which `RegistryKeyStore` implements over a `Registry`. Only the record is
stored: the public id, the scope and "sha256:<hex>" of the whole key, never the key itself.
The functions here run inside a transaction the `Registry` opens; it also writes the audit
entry of every add and revocation in that same transaction.

Errors never echo a key id given by the caller: someone may paste a whole key (secret
included) where an id was expected, and an error message ends up in logs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, select

from shipyard.errors import ConflictError, NotFoundError, UserError
from shipyard.registry.audit import canonical_json
from shipyard.registry.rollouts import ACTOR_LIMIT, check_text
from shipyard.registry.tables import api_keys
from shipyard.security.keys import HASH_SCHEME, ID_LENGTH, KeyRecord

if TYPE_CHECKING:
    from shipyard.registry.registry import Registry

_ID = re.compile(rf"[0-9A-Za-z]{{{ID_LENGTH}}}")
_HASH = re.compile(rf"{HASH_SCHEME}:[0-9a-f]{{64}}")
_LIST_HINT = "List keys with: shipyard keys list"
_TIMES = ("created_at", "expires_at", "revoked_at")


def is_key_id(value: object) -> bool:
    """True for a well-formed public key id (anything else cannot name a stored key)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def audit_target(key_id: str) -> str:
    """The audit log's target for a key: `key/<id>`, which no model or deployment name can be."""
    return f"key/{key_id}"


def insert(conn: Connection, record: KeyRecord) -> None:
    """Store a new record; ConflictError when the id exists. Call under the write lock."""
    values = _values(record)
    if get(conn, record.id) is not None:
        raise conflict()
    conn.execute(api_keys.insert().values(**values))


def get(conn: Connection, key_id: str) -> KeyRecord | None:
    """The record with this id, revoked or not; None for an unknown or malformed id."""
    if not is_key_id(key_id):
        return None  # never sent to the database: a NUL or a huge string would be an error
    row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
    return None if row is None else _record(row)


def revoke(conn: Connection, key_id: str, actor: str, at: datetime) -> tuple[KeyRecord, bool]:
    """Revoke the key at `at` by `actor`; `(record, changed)`, changed False when it already
    was revoked (the first revocation stands). NotFoundError when there is no such key."""
    before = get(conn, key_id)
    if before is None:
        raise not_found()
    if before.revoked_at is not None:
        return before, False
    conn.execute(
        api_keys.update()
        .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
        .values(revoked_at=at, revoked_by=actor)
    )
    after = get(conn, key_id)
    assert after is not None  # rows are never deleted, and we hold the write lock
    return after, True


def list_all(conn: Connection) -> list[KeyRecord]:
    """Every record, revoked and expired ones included, oldest first."""
    query = select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id)
    return [_record(row) for row in conn.execute(query)]


def created_details(record: KeyRecord) -> dict[str, Any]:
    """What the audit log says about a new key: its scope, never its hash."""
    return {
        "id": record.id,
        "name": record.name,
        "role": record.role.value,
        "deployments": None if record.deployments is None else sorted(record.deployments),
        "expires_at": None if record.expires_at is None else record.expires_at.isoformat(),
    }


def revoked_details(record: KeyRecord) -> dict[str, Any]:
    return {"id": record.id, "name": record.name, "role": record.role.value}


def conflict() -> ConflictError:
    return ConflictError(
        "Got a new API key whose id is already taken.",
        hint="Create the key again: a fresh key gets a fresh random id.",
    )


def not_found() -> NotFoundError:
    return NotFoundError("Got an API key id that the registry does not know.", hint=_LIST_HINT)


def check_actor(actor: object) -> str:
    return check_text(actor, "the actor", limit=ACTOR_LIMIT, empty=False)


class RegistryKeyStore:
    """`shipyard.security.keys.KeyStore` over a `Registry`: what `Registry.keys()` returns.

    `clock` stamps revocations (injectable for tests); the registry's own clock otherwise.
    """

    def __init__(self, registry: Registry, clock: Callable[[], datetime] | None = None) -> None:
        self.registry = registry
        self.clock = clock

    def add(self, record: KeyRecord) -> None:
        self.registry.add_key(record)

    def get(self, key_id: str) -> KeyRecord | None:
        return self.registry.get_key(key_id)

    def revoke(self, key_id: str, actor: str) -> KeyRecord:
        now = None if self.clock is None else self.clock()
        return self.registry.revoke_key(key_id, actor=actor, now=now)

    def list(self) -> list[KeyRecord]:
        return self.registry.list_keys()

    def __repr__(self) -> str:
        return f"RegistryKeyStore({self.registry!r})"


def _values(record: KeyRecord) -> dict[str, Any]:
    """The row for `record`, checked so that both databases store exactly what was given."""
    if not isinstance(record, KeyRecord):
        raise UserError(
            f"Got {type(record).__name__} for an API key record. Expected a KeyRecord.",
            hint="Make keys with shipyard.security.keys.create_key.",
        )
    if not is_key_id(record.id):
        raise UserError(
            "Got an API key record with a malformed id.",
            hint=f"Ids are {ID_LENGTH} base62 characters; make keys with create_key.",
        )
    if not isinstance(record.hash, str) or _HASH.fullmatch(record.hash) is None:
        # Also the guard against a plaintext key handed over in place of its hash.
        raise UserError(
            "Got an API key record whose hash is not a sha256 digest.",
            hint="Store hash_key(plaintext), never the key itself; use create_key.",
        )
    row = record.to_row()
    check_text(row["name"], "the key name", limit=ACTOR_LIMIT, empty=False)
    check_actor(row["created_by"])
    if row["revoked_by"] is not None:
        check_actor(row["revoked_by"])
    for name in row["deployments"] or ():
        check_text(name, "a deployment name", limit=ACTOR_LIMIT, empty=False)
    for name in _TIMES:
        moment = getattr(record, name)
        if moment is not None and (not isinstance(moment, datetime) or moment.tzinfo is None):
            raise UserError(
                f"Got an API key record whose {name} has no time zone.",
                hint="Use aware datetimes, e.g. datetime.now(UTC).",
            )
        row[name] = moment  # the column type stores datetimes, not to_row's ISO text
    if row["deployments"] is not None:
        row["deployments"] = canonical_json(row["deployments"])
    return row


def _record(row: Row[Any]) -> KeyRecord:
    values = dict(row._mapping)
    if values["deployments"] is not None:
        values["deployments"] = json.loads(values["deployments"])
    return KeyRecord.from_row(values)
