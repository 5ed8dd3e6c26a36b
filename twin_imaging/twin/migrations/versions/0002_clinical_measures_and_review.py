"""Measures named for what they are, and the quality review: measurement.max_diameter_mm becomes
greatest_extent_mm (it is the distance between the two farthest voxels: the aorta's length, not its diameter); the
extents along the principal axes and the tubular short axis are added; analysis.review_reasons holds the review
(NULL for analyses attached before it existed).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NEW_MEASURES = ("major_axis_mm", "minor_axis_mm", "perpendicular_axis_mm", "short_axis_mm")


def upgrade() -> None:
    with op.batch_alter_table("measurement") as batch:
        batch.alter_column("max_diameter_mm", new_column_name="greatest_extent_mm", existing_type=sa.Double())
        for name in _NEW_MEASURES:
            batch.add_column(sa.Column(name, sa.Double(), nullable=True))
    with op.batch_alter_table("analysis") as batch:
        batch.add_column(sa.Column("review_reasons", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("analysis") as batch:
        batch.drop_column("review_reasons")
    with op.batch_alter_table("measurement") as batch:
        for name in _NEW_MEASURES:
            batch.drop_column(name)
        batch.alter_column("greatest_extent_mm", new_column_name="max_diameter_mm", existing_type=sa.Double())
