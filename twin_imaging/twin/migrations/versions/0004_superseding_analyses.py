"""More instances of an analysed series make a new analysis that supersedes the old: the idempotence key becomes
(series, model id, model version, set of input instances), and analysis.superseded_by_id points from the old
analysis to the one that replaced it. Existing analyses get their input set's hash and stay current.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_KEY = "uq_analysis_series_id_model_id_model_version"
_NEW_KEY = "uq_analysis_series_id_model_id_model_version_input_set_sha256"


def input_set_sha256(uids: list[str]) -> str:
    """As ``twin_imaging.twin.ingest.input_set_sha256`` at this revision (a migration never imports the code)."""
    return hashlib.sha256("\n".join(sorted(set(uids))).encode("utf-8")).hexdigest()


def upgrade() -> None:
    with op.batch_alter_table("analysis") as batch:
        batch.add_column(sa.Column("input_set_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("superseded_by_id", sa.Integer(), nullable=True))
    connection = op.get_bind()
    for analysis_id, uids in connection.execute(sa.text("SELECT id, input_uids FROM analysis")).all():
        uids = json.loads(uids) if isinstance(uids, str) else uids
        connection.execute(
            sa.text("UPDATE analysis SET input_set_sha256 = :digest WHERE id = :id"),
            {"digest": input_set_sha256(uids or []), "id": analysis_id},
        )
    with op.batch_alter_table("analysis") as batch:
        batch.alter_column("input_set_sha256", existing_type=sa.String(64), nullable=False)
        batch.drop_constraint(op.f(_OLD_KEY), type_="unique")
        batch.create_unique_constraint(op.f(_NEW_KEY), ["series_id", "model_id", "model_version", "input_set_sha256"])
        batch.create_foreign_key(
            op.f("fk_analysis_superseded_by_id_analysis"),
            "analysis",
            ["superseded_by_id"],
            ["id"],
            ondelete="SET NULL",
        )


def downgrade() -> None:
    connection = op.get_bind()
    superseded = connection.execute(sa.text("SELECT COUNT(*) FROM analysis WHERE superseded_by_id IS NOT NULL"))
    if superseded.scalar():  # the old key allows one analysis per series and model: history would be lost
        raise RuntimeError("the twin holds superseded analyses; revision 0003 cannot hold them, so no downgrade")
    with op.batch_alter_table("analysis") as batch:
        batch.drop_constraint(op.f("fk_analysis_superseded_by_id_analysis"), type_="foreignkey")
        batch.drop_constraint(op.f(_NEW_KEY), type_="unique")
        batch.create_unique_constraint(op.f(_OLD_KEY), ["series_id", "model_id", "model_version"])
        batch.drop_column("superseded_by_id")
        batch.drop_column("input_set_sha256")
