"""The registry's tables, as SQLAlchemy Core metadata.

This is the live description the queries use. The schema itself is created and changed only
by the Alembic migrations in `migrations/versions/`; a test checks that the two agree.

Every timestamp is UTC. JSON payloads (audit details, revision specs) are stored as canonical
JSON text rather than a JSON column type, so the bytes hashed into the audit chain are the
bytes stored, on SQLite and PostgreSQL alike (JSONB would reorder keys).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)

# Version table of the migrations; not `alembic_version`, so shipyard can share a PostgreSQL
# schema with an application that uses Alembic itself.
VERSION_TABLE = "shipyard_schema_version"

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every backend (SQLite drops the zone on its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValueError(f"Got {value!r}. Expected a timezone-aware datetime.")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


NAME = String(64)
ACTOR = String(200)
DIGEST = String(64)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", NAME, nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", ACTOR, nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("version", NAME, nullable=False),
    Column("digest", DIGEST, nullable=False),
    Column("manifest", Text, nullable=False),
    Column("signature", LargeBinary, nullable=True),
    Column("size", BigInteger, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", ACTOR, nullable=False),
    # The race between two pushes of one version is decided here, not in Python.
    UniqueConstraint("model_id", "version", name="uq_versions_model_version"),
    Index("ix_versions_digest", "digest"),
)

files = Table(
    "files",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id"), primary_key=True),
    Column("path", String(1024), primary_key=True),
    Column("sha256", DIGEST, nullable=False),
    Column("size", BigInteger, nullable=False),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    Column("alias", NAME, primary_key=True),
    Column("version_id", Integer, ForeignKey("versions.id"), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", ACTOR, nullable=False),
)

alias_events = Table(
    "alias_events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("alias", NAME, nullable=False),
    Column("from_version", NAME, nullable=True),
    Column("to_version", NAME, nullable=False),
    Column("actor", ACTOR, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Index("ix_alias_events_model_alias", "model_id", "alias"),
)

# Append-only (triggers refuse UPDATE and DELETE); `seq` is assigned under the write lock and
# `prev_hash` is unique, so the chain cannot fork even if a writer skipped the lock.
audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("at", UTCDateTime, nullable=False),
    Column("actor", ACTOR, nullable=False),
    Column("origin", String(300), nullable=False),
    Column("action", String(64), nullable=False),
    Column("target", String(300), nullable=False),
    Column("details", Text, nullable=False),
    Column("prev_hash", DIGEST, nullable=False, unique=True),
    Column("hash", DIGEST, nullable=False, unique=True),
    Index("ix_audit_log_target", "target"),
)

deployments = Table(
    "deployments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", NAME, nullable=False, unique=True),
    Column("owner", ACTOR, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", ACTOR, nullable=False),
)

revisions = Table(
    "revisions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("deployment_id", Integer, ForeignKey("deployments.id"), nullable=False),
    Column("number", Integer, nullable=False),
    Column("spec", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("actor", ACTOR, nullable=False),
    Column("reason", Text, nullable=False),
    UniqueConstraint("deployment_id", "number", name="uq_revisions_deployment_number"),
)
