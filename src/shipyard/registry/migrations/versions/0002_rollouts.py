"""Rollouts and their decision records.

Revision ID: 0002
Revises: 0001

Written by hand and frozen. At most one active (running or paused) rollout per deployment is
a partial unique index, so the database itself settles two starts racing; decision records
are append-only with triggers, like the audit log, because they are the evidence of why
traffic moved.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ACTOR = sa.String(200)
DIGEST = sa.String(64)
REF = sa.String(200)
ACTIVE = "status IN ('running', 'paused')"
STATUSES = "status IN ('running', 'paused', 'promoted', 'rolled_back', 'aborted', 'failed')"


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("deployment_id", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("step_started_at", _when(), nullable=False),
        sa.Column("baseline_revision", sa.Integer, nullable=False),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("candidate", REF, nullable=False),
        sa.Column("candidate_digest", DIGEST, nullable=False),
        sa.Column("champion", REF, nullable=True),
        sa.Column("champion_digest", DIGEST, nullable=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", _when(), nullable=False),
        sa.Column("created_by", ACTOR, nullable=False),
        sa.Column("updated_at", _when(), nullable=False),
        sa.Column("updated_by", ACTOR, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("lease_owner", ACTOR, nullable=True),
        sa.Column("lease_until", _when(), nullable=True),
        sa.Column("final_reason", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rollouts"),
        sa.ForeignKeyConstraint(
            ["deployment_id"], ["deployments.id"], name="fk_rollouts_deployment_id_deployments"
        ),
        sa.CheckConstraint(STATUSES, name="ck_rollouts_status"),
    )
    op.create_index("ix_rollouts_deployment_id", "rollouts", ["deployment_id"])
    op.create_index(
        "uq_rollouts_active",
        "rollouts",
        ["deployment_id"],
        unique=True,
        sqlite_where=sa.text(ACTIVE),
        postgresql_where=sa.text(ACTIVE),
    )
    op.create_table(
        "rollout_decisions",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("rollout_id", sa.Integer, nullable=False),
        sa.Column("at", _when(), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("rule", sa.String(200), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("measured", sa.Text, nullable=False),
        sa.Column("samples", sa.Text, nullable=False),
        sa.Column("dry_run", sa.Boolean, nullable=False),
        sa.Column("actor", ACTOR, nullable=False),
        sa.Column("champion", REF, nullable=True),
        sa.Column("champion_digest", DIGEST, nullable=True),
        sa.Column("candidate", REF, nullable=False),
        sa.Column("candidate_digest", DIGEST, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_rollout_decisions"),
        sa.ForeignKeyConstraint(
            ["rollout_id"], ["rollouts.id"], name="fk_rollout_decisions_rollout_id_rollouts"
        ),
    )
    op.create_index("ix_rollout_decisions_rollout_id", "rollout_decisions", ["rollout_id"])
    _append_only("rollout_decisions")


def _append_only(table: str) -> None:
    """Refuse UPDATE and DELETE on `table` inside the database (the same triggers as 0001)."""
    message = f"{table} is append-only"
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            f"CREATE FUNCTION {table}_append_only() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION '{message}'; END; $$ LANGUAGE plpgsql"
        )
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {table}_append_only()"
        )
        return
    for verb in ("UPDATE", "DELETE"):
        op.execute(
            f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS rollout_decisions_append_only ON rollout_decisions")
        op.execute("DROP FUNCTION IF EXISTS rollout_decisions_append_only()")
    # SQLite drops a table's triggers with the table.
    op.drop_table("rollout_decisions")
    op.drop_index("uq_rollouts_active", table_name="rollouts")
    op.drop_index("ix_rollouts_deployment_id", table_name="rollouts")
    op.drop_table("rollouts")
