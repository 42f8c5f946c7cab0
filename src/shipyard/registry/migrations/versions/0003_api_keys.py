"""API keys: the registry's store behind `shipyard.security.keys.KeyStore`.

Revision ID: 0003
Revises: 0002

Written by hand and frozen. One row per key, named by its public id; the secret is never
stored, only "sha256:<hex>" of the whole key. Rows are never deleted: a revoked or expired key
stays listed, so the audit log's references to it keep meaning something.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ACTOR = sa.String(200)


def _when() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("name", ACTOR, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("deployments", sa.Text, nullable=True),
        sa.Column("created_at", _when(), nullable=False),
        sa.Column("created_by", ACTOR, nullable=False),
        sa.Column("expires_at", _when(), nullable=True),
        sa.Column("revoked_at", _when(), nullable=True),
        sa.Column("revoked_by", ACTOR, nullable=True),
        sa.Column("hash", sa.String(100), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_api_keys"),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
