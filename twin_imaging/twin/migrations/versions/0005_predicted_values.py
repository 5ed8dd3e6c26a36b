"""Predictions that are values, not probabilities: the new-baseline eGFR per surgical scenario (mL/min/1.73 m²).
prediction.value and prediction.unit are added and prediction.probability may be NULL; a row holds exactly one of a
probability in [0, 1] (with its interval in [0, 1]) or a value with its unit. Existing rows are probabilities.
prediction.mask_source says which masks a prediction was made from ("model", or "expert_seg:<SOP Instance UID>" for
a radiologist's DICOM SEG); NULL for predictions made before (from an uploaded mask).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_CHECK = "probability >= 0 AND probability <= 1"
NEW_CHECK = (
    "(value IS NULL AND unit IS NULL AND probability IS NOT NULL AND probability >= 0 AND probability <= 1) "
    "OR (probability IS NULL AND value IS NOT NULL AND unit IS NOT NULL)"
)


def upgrade() -> None:
    with op.batch_alter_table("prediction") as batch:
        batch.add_column(sa.Column("value", sa.Double(), nullable=True))
        batch.add_column(sa.Column("unit", sa.String(128), nullable=True))
        batch.add_column(sa.Column("mask_source", sa.String(255), nullable=True))
        batch.alter_column("probability", existing_type=sa.Double(), nullable=True)
        batch.drop_constraint(op.f("ck_prediction_probability"), type_="check")
        batch.create_check_constraint(op.f("ck_prediction_probability_or_value"), NEW_CHECK)


def downgrade() -> None:
    connection = op.get_bind()
    values = connection.execute(sa.text("SELECT COUNT(*) FROM prediction WHERE value IS NOT NULL")).scalar()
    if values:  # the old table holds probabilities only: those rows would be lost
        raise RuntimeError(f"{values} predicted value(s) in the twin: downgrading below 0005 would lose them")
    with op.batch_alter_table("prediction") as batch:
        batch.drop_constraint(op.f("ck_prediction_probability_or_value"), type_="check")
        batch.alter_column("probability", existing_type=sa.Double(), nullable=False)
        batch.drop_column("mask_source")
        batch.drop_column("unit")
        batch.drop_column("value")
        batch.create_check_constraint(op.f("ck_prediction_probability"), OLD_CHECK)
