"""Model placements: which version each replica actually serves, and why not the desired one.

The desired version stays `model_versions.is_active`; each replica writes only its own rows
here, so a local failure never changes what the fleet should serve.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_placements",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("replica_id", sa.String(200), nullable=False),
        sa.Column(
            "model_id",
            sa.Integer(),
            sa.ForeignKey("models.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("desired_version", sa.Integer(), nullable=True),
        sa.Column("served_version", sa.Integer(), nullable=True),
        sa.Column("workers", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("replica_id", "model_id", name="uq_model_placements_replica_model"),
    )
    op.create_index("ix_model_placements_model_id", "model_placements", ["model_id"])


def downgrade() -> None:
    op.drop_index("ix_model_placements_model_id", table_name="model_placements")
    op.drop_table("model_placements")
