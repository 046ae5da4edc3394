"""Training jobs record who submitted them (a fingerprint of the API key, never the key), so
queued jobs are claimed round-robin by key: one key's hundred jobs never starve another's.

`owner` is '' for jobs submitted without a key (auth off, or before this revision); the
index serves the claim query's "when was this owner last served" lookup.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("training_jobs") as batch:
        batch.add_column(
            sa.Column("owner", sa.String(64), nullable=False, server_default=sa.text("''"))
        )
    op.create_index("ix_training_jobs_owner_started", "training_jobs", ["owner", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_training_jobs_owner_started", table_name="training_jobs")
    with op.batch_alter_table("training_jobs") as batch:
        batch.drop_column("owner")
