"""What drove each prediction: prediction.explanation holds, as JSON, the model's strongest contributions
({"feature", "value", "logit"}: + raises the risk) and the clinical inputs that were missing and imputed, so that the
twin page can show a scenario's drivers beside its probability. NULL for predictions made before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("prediction") as batch:
        batch.add_column(sa.Column("explanation", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("prediction") as batch:
        batch.drop_column("explanation")
