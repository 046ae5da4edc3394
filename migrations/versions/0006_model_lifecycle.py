"""Model lifecycle: aliases and a traffic split per model, archived models, and lineage a
version keeps after its job, parent or dataset is deleted (names and sha256s, not foreign keys).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_aliases",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "model_id",
            sa.Integer(),
            sa.ForeignKey("models.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("model_id", "alias", name="uq_model_aliases_model_alias"),
    )
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("traffic", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("model_versions") as batch:
        batch.add_column(sa.Column("parent", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("job_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("dataset_name", sa.String(200), nullable=True))
        batch.add_column(sa.Column("dataset_sha256", sa.String(64), nullable=True))
    # what existing versions were trained from, kept by value from now on
    op.execute(
        "UPDATE model_versions SET "
        "dataset_name = (SELECT name FROM datasets WHERE datasets.id = model_versions.dataset_id),"
        " dataset_sha256 = (SELECT sha256 FROM datasets"
        " WHERE datasets.id = model_versions.dataset_id),"
        " job_id = (SELECT MIN(id) FROM training_jobs"
        " WHERE training_jobs.model_version_id = model_versions.id)"
    )


def downgrade() -> None:
    with op.batch_alter_table("model_versions") as batch:
        for column in ("dataset_sha256", "dataset_name", "job_id", "parent"):
            batch.drop_column(column)
    with op.batch_alter_table("models") as batch:
        batch.drop_column("archived_at")
        batch.drop_column("traffic")
    op.drop_table("model_aliases")
