"""Tenants kept apart: analyses get an unguessable public id (128 random bits; the integer id stays internal), and
analysis_grant records which API callers sent each analysis, filled for existing analyses from the audit log.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("analysis") as batch:
        batch.add_column(sa.Column("public_id", sa.String(32), nullable=True))
    connection = op.get_bind()
    for (analysis_id,) in connection.execute(sa.text("SELECT id FROM analysis")).all():
        connection.execute(
            sa.text("UPDATE analysis SET public_id = :public WHERE id = :id"),
            {"public": secrets.token_hex(16), "id": analysis_id},
        )
    with op.batch_alter_table("analysis") as batch:
        batch.alter_column("public_id", existing_type=sa.String(32), nullable=False)
        batch.create_unique_constraint(op.f("uq_analysis_public_id"), ["public_id"])
    op.create_table(
        "analysis_grant",
        sa.Column("analysis_id", sa.Integer(), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["analysis_id"], ["analysis.id"], name=op.f("fk_analysis_grant_analysis_id_analysis"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("analysis_id", "actor", name=op.f("pk_analysis_grant")),
    )
    # who sent what so far: every attach, and every "already attached" answer, is in the audit log
    connection.execute(
        sa.text(
            "INSERT INTO analysis_grant (analysis_id, actor, created_at) "
            "SELECT a.id, l.actor, MIN(l.at) FROM audit_log l JOIN analysis a "
            "ON l.object_type = 'analysis' AND l.object_id = CAST(a.id AS VARCHAR(32)) "
            "WHERE l.action = 'attach_analysis' OR (l.action = 'read_analysis' AND l.detail LIKE 'attach:%') "
            "GROUP BY a.id, l.actor"
        )
    )


def downgrade() -> None:
    op.drop_table("analysis_grant")
    with op.batch_alter_table("analysis") as batch:
        batch.drop_constraint(op.f("uq_analysis_public_id"), type_="unique")
        batch.drop_column("public_id")
