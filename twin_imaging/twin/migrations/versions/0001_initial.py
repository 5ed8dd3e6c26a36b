"""The twin's first schema: patient, imaging study and series, analysis with measurements and artifacts,
observations, procedures, predictions, alerts and the audit log.

Revision ID: 0001
Revises:
Create Date: 2025-06-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UID, KEY, NAME, TEXT = 64, 64, 128, 255


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _utc(name: str, *, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _parent(table: str, column: str, parent: str, *, ondelete: str = "CASCADE") -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        [column], [f"{parent}.id"], name=op.f(f"fk_{table}_{column}_{parent}"), ondelete=ondelete
    )


def _unique(table: str, *columns: str) -> sa.UniqueConstraint:
    return sa.UniqueConstraint(*columns, name=op.f(f"uq_{table}_{'_'.join(columns)}"))


def _index(table: str, *columns: str) -> None:
    op.create_index(op.f(f"ix_{table}_{'_'.join(columns)}"), table, list(columns), unique=False)


def upgrade() -> None:
    op.create_table(
        "patient",
        _id(),
        sa.Column("patient_key", sa.String(KEY), nullable=False),
        sa.Column("pseudonymous", sa.Boolean(), nullable=False),
        sa.Column("sex", sa.String(1), nullable=True),
        sa.Column("birth_year", sa.Integer(), nullable=True),
        _utc("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient")),
        _unique("patient", "patient_key"),
    )
    op.create_table(
        "imaging_study",
        _id(),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(UID), nullable=False),
        sa.Column("study_date", sa.Date(), nullable=True),
        sa.Column("study_time", sa.Time(), nullable=True),
        sa.Column("description", sa.String(TEXT), nullable=False),
        _utc("created_at"),
        _parent("imaging_study", "patient_id", "patient"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_study")),
        _unique("imaging_study", "study_instance_uid"),
    )
    _index("imaging_study", "patient_id")
    _index("imaging_study", "study_date")
    op.create_table(
        "imaging_series",
        _id(),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("series_instance_uid", sa.String(UID), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("series_number", sa.Integer(), nullable=True),
        sa.Column("series_description", sa.String(TEXT), nullable=False),
        sa.Column("n_instances", sa.Integer(), nullable=False),
        _parent("imaging_series", "study_id", "imaging_study"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imaging_series")),
        _unique("imaging_series", "series_instance_uid"),
    )
    _index("imaging_series", "study_id")
    op.create_table(
        "analysis",
        _id(),
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.String(NAME), nullable=False),
        sa.Column("model_version", sa.String(NAME), nullable=False),
        sa.Column("onnx_sha256", sa.String(64), nullable=False),
        sa.Column("code_version", sa.String(NAME), nullable=False),
        sa.Column("input_uids", sa.JSON(), nullable=False),
        sa.Column("structures_not_found", sa.JSON(), nullable=False),
        _utc("started_at"),
        _utc("finished_at", nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        _utc("created_at"),
        sa.CheckConstraint("status IN ('completed', 'failed')", name=op.f("ck_analysis_status")),
        _parent("analysis", "series_id", "imaging_series"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_analysis")),
        _unique("analysis", "series_id", "model_id", "model_version"),
    )
    _index("analysis", "finished_at")
    op.create_table(
        "measurement",
        _id(),
        sa.Column("analysis_id", sa.Integer(), nullable=False),
        sa.Column("structure", sa.String(NAME), nullable=False),
        sa.Column("label", sa.Integer(), nullable=False),
        sa.Column("snomed_code", sa.String(32), nullable=False),
        sa.Column("snomed_meaning", sa.String(TEXT), nullable=False),
        sa.Column("laterality", sa.String(32), nullable=True),
        sa.Column("voxel_count", sa.Integer(), nullable=False),
        sa.Column("volume_ml", sa.Double(), nullable=False),
        sa.Column("hu_mean", sa.Double(), nullable=True),
        sa.Column("hu_std", sa.Double(), nullable=True),
        sa.Column("max_diameter_mm", sa.Double(), nullable=True),
        _parent("measurement", "analysis_id", "analysis"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_measurement")),
        _unique("measurement", "analysis_id", "structure"),
    )
    op.create_table(
        "artifact",
        _id(),
        sa.Column("analysis_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("name", sa.String(TEXT), nullable=False),
        sa.Column("uri", sa.String(TEXT), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(NAME), nullable=False),
        sa.Column("sop_instance_uid", sa.String(UID), nullable=True),
        _parent("artifact", "analysis_id", "analysis"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifact")),
        _unique("artifact", "analysis_id", "name"),
    )
    _index("artifact", "sha256")
    op.create_table(
        "observation",
        _id(),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(NAME), nullable=False),
        sa.Column("code_system", sa.String(TEXT), nullable=False),
        sa.Column("display", sa.String(TEXT), nullable=False),
        sa.Column("value", sa.Double(), nullable=False),
        sa.Column("unit", sa.String(NAME), nullable=False),
        _utc("effective_at"),
        sa.Column("source", sa.String(NAME), nullable=False),
        _utc("created_at"),
        _parent("observation", "patient_id", "patient"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_observation")),
        _unique("observation", "patient_id", "code_system", "code", "effective_at"),
    )
    _index("observation", "patient_id", "code", "effective_at")
    op.create_table(
        "procedure",
        _id(),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("code", sa.String(NAME), nullable=False),
        sa.Column("code_system", sa.String(TEXT), nullable=False),
        sa.Column("display", sa.String(TEXT), nullable=False),
        sa.Column("performed_on", sa.Date(), nullable=False),
        sa.Column("laterality", sa.String(32), nullable=True),
        sa.Column("source", sa.String(NAME), nullable=False),
        _utc("created_at"),
        _parent("procedure", "patient_id", "patient"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_procedure")),
        _unique("procedure", "patient_id", "code_system", "code", "performed_on"),
    )
    _index("procedure", "performed_on")
    op.create_table(
        "prediction",
        _id(),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("analysis_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(NAME), nullable=False),
        sa.Column("scenario", sa.String(NAME), nullable=False),
        sa.Column("probability", sa.Double(), nullable=False),
        sa.Column("lower", sa.Double(), nullable=True),
        sa.Column("upper", sa.Double(), nullable=True),
        sa.Column("model_id", sa.String(NAME), nullable=False),
        sa.Column("model_version", sa.String(NAME), nullable=False),
        _utc("created_at"),
        sa.CheckConstraint("probability >= 0 AND probability <= 1", name=op.f("ck_prediction_probability")),
        _parent("prediction", "analysis_id", "analysis", ondelete="SET NULL"),
        _parent("prediction", "patient_id", "patient"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction")),
    )
    _index("prediction", "analysis_id")
    _index("prediction", "created_at")
    _index("prediction", "patient_id")
    op.create_table(
        "alert",
        _id(),
        sa.Column("patient_id", sa.Integer(), nullable=False),
        sa.Column("analysis_id", sa.Integer(), nullable=True),
        sa.Column("rule", sa.String(NAME), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("structure", sa.String(NAME), nullable=True),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("dedup_key", sa.String(TEXT), nullable=False),
        _utc("created_at"),
        sa.CheckConstraint("severity IN ('info', 'warning', 'critical')", name=op.f("ck_alert_severity")),
        _parent("alert", "analysis_id", "analysis"),
        _parent("alert", "patient_id", "patient"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert")),
        _unique("alert", "patient_id", "dedup_key"),
    )
    _index("alert", "analysis_id")
    op.create_table(
        "audit_log",
        _id(),
        _utc("at"),
        sa.Column("actor", sa.String(NAME), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("patient_key", sa.String(KEY), nullable=True),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(TEXT), nullable=True),
        sa.Column("detail", sa.String(TEXT), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    _index("audit_log", "at")
    _index("audit_log", "patient_key")


def downgrade() -> None:
    for table in (
        "audit_log",
        "alert",
        "prediction",
        "procedure",
        "observation",
        "artifact",
        "measurement",
        "analysis",
        "imaging_series",
        "imaging_study",
        "patient",
    ):
        op.drop_table(table)  # a table's indexes go with it
