"""Training jobs count their attempts, so a job that kills its runner again and again fails
instead of looping forever; lookups by name and kind get indexes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(
            sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    op.create_index("ix_training_jobs_name", "training_jobs", ["name"])
    op.create_index("ix_training_jobs_kind", "training_jobs", ["kind"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_kind", table_name="training_jobs")
    op.drop_index("ix_training_jobs_name", table_name="training_jobs")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("attempts")
