"""API keys: `sy_<id>_<secret>`, shown once, stored only as a hash, revocable, expiring.

The id is public (it names the key in listings and the audit log); the secret is 43 base62
characters drawn with `secrets` (256 bits). Such a key is too random for a dictionary attack,
so one sha256 is the right hash: a slow password hash would only slow every request down.
The registry keeps the records through the `KeyStore` protocol; this module never sees a
database.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import string
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from shipyard.errors import UnauthorizedError, UserError
from shipyard.security.principals import Principal, PrincipalKind, Role

log = logging.getLogger("shipyard.security")

PREFIX = "sy"
ALPHABET = string.digits + string.ascii_letters  # base62: no `_`, so the separator is unique
ID_LENGTH = 12  # 71 bits: ids never collide in practice, and a collision is a ConflictError
SECRET_LENGTH = 43  # 62**43 > 2**256
HASH_SCHEME = "sha256"
# fullmatch on an exact shape: no trailing newline, no unicode digits, nothing but ASCII.
_KEY_SHAPE = re.compile(rf"sy_([0-9A-Za-z]{{{ID_LENGTH}}})_([0-9A-Za-z]{{{SECRET_LENGTH}}})")
_KEY_LENGTH = len(PREFIX) + 2 + ID_LENGTH + SECRET_LENGTH
# Deployment names follow the manifest's rule (bundle/manifest.py is a floor above us).
_DEPLOYMENT_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_MAX_LABEL = 128

_INVALID_KEY = "The API key is not valid."
_INVALID_KEY_HINT = (
    "Check that the whole key was sent, or ask an admin for a new one: "
    "shipyard keys create --role ROLE"
)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """What the store keeps about a key: everything but the secret."""

    id: str
    name: str
    role: Role
    deployments: frozenset[str] | None  # None: every deployment
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    hash: str = field(repr=False)  # "sha256:<hex>" of the whole plaintext key
    revoked_by: str | None = None

    def is_active(self, now: datetime) -> bool:
        """Neither revoked nor expired at `now`."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at

    def revoked(self, actor: str, now: datetime) -> KeyRecord:
        """This record revoked by `actor`; revoking twice keeps the first revocation."""
        if self.revoked_at is not None:
            return self
        return replace(self, revoked_at=now, revoked_by=actor)

    def to_row(self) -> dict[str, Any]:
        """A flat dict of strings and None, for a database row or JSON."""
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role.value,
            "deployments": None if self.deployments is None else sorted(self.deployments),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
            "revoked_by": self.revoked_by,
            "hash": self.hash,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> KeyRecord:
        """The inverse of `to_row`; datetimes may come back as strings or datetimes."""
        deployments = row["deployments"]
        return cls(
            id=row["id"],
            name=row["name"],
            role=Role.parse(row["role"]),
            deployments=None if deployments is None else frozenset(deployments),
            created_at=_required_time(row["created_at"]),
            created_by=row["created_by"],
            expires_at=_parse_time(row["expires_at"]),
            revoked_at=_parse_time(row["revoked_at"]),
            hash=row["hash"],
            revoked_by=row.get("revoked_by"),
        )


class KeyStore(Protocol):
    """Where key records live; the registry implements it over its database."""

    def add(self, record: KeyRecord) -> None:
        """Store a new record; ConflictError when the id exists."""
        ...

    def get(self, key_id: str) -> KeyRecord | None:
        """The record with this id, revoked or not; None when there is none."""
        ...

    def revoke(self, key_id: str, actor: str) -> KeyRecord:
        """Mark the key revoked now by `actor` (idempotent); NotFoundError when unknown."""
        ...

    def list(self) -> list[KeyRecord]:
        """Every record, revoked and expired ones included, oldest first."""
        ...


def create_key(
    store: KeyStore,
    role: Role | str,
    deployments: Iterable[str] | None,
    expires: datetime | timedelta | None,
    actor: str,
    *,
    name: str | None = None,
    now: datetime | None = None,
) -> tuple[str, KeyRecord]:
    """Make a key, store its record, and return `(plaintext, record)`.

    The plaintext exists only in the return value: show it to the user once, never log it.
    """
    now = _aware(now or datetime.now(UTC))
    key_id = _random(ID_LENGTH)
    plaintext = f"{PREFIX}_{key_id}_{_random(SECRET_LENGTH)}"
    record = KeyRecord(
        id=key_id,
        name=_label(name, "key name") if name is not None else f"key-{key_id}",
        role=Role.parse(role),
        deployments=_scope(deployments),
        created_at=now,
        created_by=_label(actor, "actor"),
        expires_at=_expiry(expires, now),
        revoked_at=None,
        hash=hash_key(plaintext),
    )
    store.add(record)
    return plaintext, record


def authenticate_key(store: KeyStore, presented: str, now: datetime) -> Principal:
    """The principal of a presented key; one UnauthorizedError for every way it can be bad.

    Unknown, malformed, revoked and expired keys all get the same message, which never
    contains the key: a caller learns nothing about which keys exist.
    """
    now = _aware(now)
    key_id = parse_key_id(presented)
    if key_id is None:  # the shape is public knowledge; nothing to hide by going on
        raise UnauthorizedError(_INVALID_KEY, hint=_INVALID_KEY_HINT)
    record = store.get(key_id)
    # Compare even when there is no record, so both paths do the same work.
    expected = record.hash if record is not None else _DUMMY_HASH
    matches = hmac.compare_digest(expected.encode(), hash_key(presented).encode())
    if record is None or not matches:
        raise UnauthorizedError(_INVALID_KEY, hint=_INVALID_KEY_HINT)
    if not record.is_active(now):
        # The id is real and public, so naming it in our own log reveals nothing.
        log.info("api key %s refused: %s", record.id, "revoked" if record.revoked_at else "expired")
        raise UnauthorizedError(_INVALID_KEY, hint=_INVALID_KEY_HINT)
    return Principal(
        name=record.name,
        kind=PrincipalKind.KEY,
        role=record.role,
        deployments=record.deployments,
        key_id=record.id,
    )


def parse_key_id(presented: str) -> str | None:
    """The id of a well-formed key, or None for anything else (never raises)."""
    if not isinstance(presented, str) or len(presented) != _KEY_LENGTH:
        return None
    match = _KEY_SHAPE.fullmatch(presented)
    return match.group(1) if match else None


def looks_like_key(presented: str) -> bool:
    """True for anything that claims to be a shipyard key, well formed or not."""
    return presented.startswith(f"{PREFIX}_")


def hash_key(plaintext: str) -> str:
    """The stored form of a key: sha256 of the whole key, so the id is bound to the secret."""
    digest = hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{HASH_SCHEME}:{digest}"


_DUMMY_HASH = hash_key("sy_" + "0" * (ID_LENGTH + 1 + SECRET_LENGTH))


def _random(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def _scope(deployments: Iterable[str] | None) -> frozenset[str] | None:
    if deployments is None:
        return None
    if isinstance(deployments, str):  # a lone name would otherwise become its characters
        deployments = [deployments]
    names = frozenset(deployments)
    if not names:
        raise UserError(
            "Got an empty deployment scope for a key.",
            hint="Name at least one deployment with --deployment, or none for all of them.",
        )
    for item in names:
        if not isinstance(item, str) or not _DEPLOYMENT_NAME.fullmatch(item):
            raise UserError(
                "Got a deployment name that is not valid for a key scope.",
                hint="Deployment names match ^[a-z0-9][a-z0-9._-]{0,63}$.",
            )
    return names


def _label(value: str, what: str) -> str:
    """A name or actor that will be shown and logged: short, printable, one line."""
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_LABEL:
        raise UserError(
            f"Got an empty or over-long {what}.",
            hint=f"Use 1 to {_MAX_LABEL} printable characters.",
        )
    if not value.isprintable():
        raise UserError(
            f"Got a {what} with control or invisible characters.",
            hint="Use printable characters only.",
        )
    return value


def _expiry(expires: datetime | timedelta | None, now: datetime) -> datetime | None:
    if expires is None:
        return None
    at = now + expires if isinstance(expires, timedelta) else _aware(expires)
    if at <= now:
        raise UserError(
            "Got an expiry time that is already past.",
            hint="Give a future time, or a duration such as --expires 90d.",
        )
    return at


def _aware(moment: datetime) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise UserError(
            "Got a time without a time zone.", hint="Pass an aware datetime, e.g. in UTC."
        )
    return moment.astimezone(UTC)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _required_time(value: datetime | str) -> datetime:
    moment = _parse_time(value)
    if moment is None:
        raise UserError("Got a key record without a creation time.", hint="Repair the row.")
    return moment


def _parse_time(value: datetime | str | None) -> datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(value)
    # SQLite and some drivers drop the zone; times are always written in UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
