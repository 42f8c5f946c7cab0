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
    Boolean,
    CheckConstraint,
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
    text,
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

# Rollouts (migration 0002). At most one active rollout per deployment, decided by the
# database itself: two `start`s racing past the write lock (a writer outside shipyard) still
# cannot both commit. Both dialects take the same partial-index predicate.
ROLLOUT_STATUSES = ("running", "paused", "promoted", "rolled_back", "aborted", "failed")
ACTIVE_STATUSES = ("running", "paused")
ACTIVE_PREDICATE = "status IN ('running', 'paused')"

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("deployment_id", Integer, ForeignKey("deployments.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("strategy", String(32), nullable=False),
    Column("plan", Text, nullable=False),
    Column("step", Integer, nullable=False),
    Column("step_started_at", UTCDateTime, nullable=False),
    # The revision number live when the rollout started: what a rollback re-applies.
    Column("baseline_revision", Integer, nullable=False),
    # The newest revision this rollout applied (the baseline until it applies one).
    Column("revision", Integer, nullable=False),
    Column("candidate", String(200), nullable=False),
    Column("candidate_digest", DIGEST, nullable=False),
    Column("champion", String(200), nullable=True),
    Column("champion_digest", DIGEST, nullable=True),
    # The controller's own memory (latched rules, failure counts, approvals), kept here so a
    # restarted controller continues where the dead one stopped.
    Column("state", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", ACTOR, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("updated_by", ACTOR, nullable=False),
    Column("generation", Integer, nullable=False),
    Column("lease_owner", ACTOR, nullable=True),
    Column("lease_until", UTCDateTime, nullable=True),
    Column("final_reason", Text, nullable=True),
    CheckConstraint(
        "status IN ('running', 'paused', 'promoted', 'rolled_back', 'aborted', 'failed')",
        name="ck_rollouts_status",
    ),
    Index(
        "uq_rollouts_active",
        "deployment_id",
        unique=True,
        sqlite_where=text(ACTIVE_PREDICATE),
        postgresql_where=text(ACTIVE_PREDICATE),
    ),
    Index("ix_rollouts_deployment_id", "deployment_id"),
)

# Append-only, like the audit log (triggers refuse UPDATE and DELETE).
rollout_decisions = Table(
    "rollout_decisions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("rollout_id", Integer, ForeignKey("rollouts.id"), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("step", Integer, nullable=False),
    Column("rule", String(200), nullable=False),
    Column("outcome", String(32), nullable=False),
    Column("measured", Text, nullable=False),
    Column("samples", Text, nullable=False),
    Column("dry_run", Boolean, nullable=False),
    Column("actor", ACTOR, nullable=False),
    Column("champion", String(200), nullable=True),
    Column("champion_digest", DIGEST, nullable=True),
    Column("candidate", String(200), nullable=False),
    Column("candidate_digest", DIGEST, nullable=True),
    Column("reason", Text, nullable=False),
    Index("ix_rollout_decisions_rollout_id", "rollout_id"),
)

# API keys (migration 0003): the records behind `shipyard.security.keys.KeyStore`. The id is
# the key's public id; `hash` is "sha256:<hex>" of the whole key, never the key itself.
# `deployments` is canonical JSON text of a sorted list of names, NULL for every deployment.
# A revocation is the only change a row ever sees.
api_keys = Table(
    "api_keys",
    metadata,
    Column("id", NAME, primary_key=True),
    Column("name", ACTOR, nullable=False),
    Column("role", String(16), nullable=False),
    Column("deployments", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", ACTOR, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revoked_by", ACTOR, nullable=True),
    Column("hash", String(100), nullable=False),
)
