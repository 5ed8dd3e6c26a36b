"""A radiologist's DICOM SEG of an analysed series: expert_segmentation records who made it, how it came in, how its
segments map to kidney, renal tumour and cyst, and the SEG file's sha256 in the artifact store.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "expert_segmentation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(32), nullable=False),
        sa.Column("analysis_id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", sa.String(64), nullable=False),
        sa.Column("author", sa.String(255), nullable=False),
        sa.Column("content_label", sa.String(128), nullable=False),
        sa.Column("segments", sa.JSON(), nullable=False),
        sa.Column("received_via", sa.String(16), nullable=False),
        sa.Column("received_by", sa.String(128), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "received_via IN ('stow-rs', 'c-store', 'api')", name=op.f("ck_expert_segmentation_received_via")
        ),
        sa.ForeignKeyConstraint(
            ["analysis_id"],
            ["analysis.id"],
            name=op.f("fk_expert_segmentation_analysis_id_analysis"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_expert_segmentation")),
        sa.UniqueConstraint("public_id", name=op.f("uq_expert_segmentation_public_id")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_expert_segmentation_sop_instance_uid")),
    )
    op.create_index(op.f("ix_expert_segmentation_analysis_id"), "expert_segmentation", ["analysis_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_expert_segmentation_analysis_id"), table_name="expert_segmentation")
    op.drop_table("expert_segmentation")
