"""Leases on work shared by several service replicas (a pushed study, a job, an outbox delivery): one row per item
being worked on, with its holder and the time its lease runs out (``twin_imaging.twin.leases``).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "work_lease",
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("item", sa.String(255), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("kind", "item", name=op.f("pk_work_lease")),
    )


def downgrade() -> None:
    op.drop_table("work_lease")
