"""The twin's tables (SQLAlchemy 2 declarative models). Migrations in ``migrations/versions`` create exactly these.

patient ─┬─ imaging_study ── imaging_series ── analysis ─┬─ measurement
         │                                               ├─ artifact
         │                                               └─ analysis_grant (which API keys sent it)
         ├─ observation, procedure, prediction, alert
audit_log (by patient_key, outliving the rows it names)

Children are deleted with their parent (ON DELETE CASCADE). Times are stored as UTC (``UTCDateTime``); a patient is
stored under its key only (a pseudonym where configured), never with its name or full birth date.
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Date,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    Time,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
UID = 64  # DICOM UI: at most 64 characters
KEY = 64  # patient_key: a PatientID (LO, 64) or a hex pseudonym
NAME = 128
TEXT = 255


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_public_id() -> str:
    return secrets.token_hex(16)


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored in UTC: TIMESTAMP WITH TIME ZONE on PostgreSQL, naive UTC text on SQLite."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"a naive datetime ({value.isoformat()}) cannot be stored; give it a time zone")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _parent(target: str) -> Mapped[int]:
    return mapped_column(ForeignKey(target, ondelete="CASCADE"), nullable=False)


class Patient(Base):
    __tablename__ = "patient"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_key: Mapped[str] = mapped_column(String(KEY), unique=True)
    pseudonymous: Mapped[bool]
    sex: Mapped[str | None] = mapped_column(String(1))
    birth_year: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)

    studies: Mapped[list[Study]] = relationship(
        back_populates="patient", cascade="all, delete-orphan", passive_deletes=True
    )


class Study(Base):
    __tablename__ = "imaging_study"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = _parent("patient.id")
    study_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    study_date: Mapped[date | None] = mapped_column(Date, index=True)
    study_time: Mapped[time | None] = mapped_column(Time)
    description: Mapped[str] = mapped_column(String(TEXT), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)

    patient: Mapped[Patient] = relationship(back_populates="studies")
    series: Mapped[list[Series]] = relationship(
        back_populates="study", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (Index(None, "patient_id"),)


class Series(Base):
    __tablename__ = "imaging_series"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = _parent("imaging_study.id")
    series_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    series_number: Mapped[int | None]
    series_description: Mapped[str] = mapped_column(String(TEXT), default="")
    n_instances: Mapped[int] = mapped_column(default=0)

    study: Mapped[Study] = relationship(back_populates="series")
    analyses: Mapped[list[Analysis]] = relationship(
        back_populates="series", cascade="all, delete-orphan", passive_deletes=True
    )

    __table_args__ = (Index(None, "study_id"),)


class Analysis(Base):
    """One model run on one series: at most one per model id and version and set of input instances. When more
    instances of an analysed series arrive, the analysis of all of them supersedes the earlier one, which stays in
    the history (``superseded_by_id``)."""

    __tablename__ = "analysis"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)  # internal; never shown outside the store
    # the id the API, CLI and FHIR name it by: 128 random bits, so one tenant cannot enumerate another's analyses
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    series_id: Mapped[int] = _parent("imaging_series.id")
    model_id: Mapped[str] = mapped_column(String(NAME))
    model_version: Mapped[str] = mapped_column(String(NAME))
    onnx_sha256: Mapped[str] = mapped_column(String(64))
    code_version: Mapped[str] = mapped_column(String(NAME))
    input_uids: Mapped[list[str]] = mapped_column(JSON)  # SOP Instance UIDs analysed, in slice order
    input_set_sha256: Mapped[str] = mapped_column(String(64))  # of the sorted input UIDs: the idempotence key's part
    superseded_by_id: Mapped[int | None] = mapped_column(ForeignKey("analysis.id", ondelete="SET NULL"))
    structures_not_found: Mapped[list[str]] = mapped_column(JSON)  # model structures absent from the image
    # the quality review: [{code, structures, message}], [] when nothing needs a look; NULL for analyses attached
    # before the review existed (unknown, not "fine")
    review_reasons: Mapped[list[dict] | None] = mapped_column(JSON)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)

    series: Mapped[Series] = relationship(back_populates="analyses")
    measurements: Mapped[list[Measurement]] = relationship(
        back_populates="analysis", cascade="all, delete-orphan", passive_deletes=True, order_by="Measurement.label"
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="analysis", cascade="all, delete-orphan", passive_deletes=True, order_by="Artifact.id"
    )
    grants: Mapped[list[AnalysisGrant]] = relationship(cascade="all, delete-orphan", passive_deletes=True)
    superseded_by: Mapped[Analysis | None] = relationship(
        remote_side=[id], foreign_keys=[superseded_by_id], back_populates="supersedes"
    )
    supersedes: Mapped[list[Analysis]] = relationship(
        foreign_keys=[superseded_by_id], back_populates="superseded_by", order_by="Analysis.id"
    )
    expert_segmentations: Mapped[list[ExpertSegmentation]] = relationship(
        back_populates="analysis", cascade="all, delete-orphan", passive_deletes=True, order_by="ExpertSegmentation.id"
    )

    __table_args__ = (
        UniqueConstraint("series_id", "model_id", "model_version", "input_set_sha256"),
        CheckConstraint("status IN ('completed', 'failed')", name="status"),
    )


class ExpertSegmentation(Base):
    """A radiologist's DICOM SEG of the analysed series (kidneys, renal tumour, cyst), preferred over the model's
    masks for the surgical scenarios. The SEG file itself is in the artifact store (``artifact_sha256``)."""

    __tablename__ = "expert_segmentation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True, default=new_public_id)
    analysis_id: Mapped[int] = _parent("analysis.id")  # the analysis of its series current when it arrived
    sop_instance_uid: Mapped[str] = mapped_column(String(UID), unique=True)
    author: Mapped[str] = mapped_column(String(TEXT))  # Content Creator's Name, as the SEG gives it
    content_label: Mapped[str] = mapped_column(String(NAME), default="")
    segments: Mapped[list[dict]] = mapped_column(JSON)  # [{number, label, code, meaning, structure}]
    received_via: Mapped[str] = mapped_column(String(16))  # stow-rs, c-store, api
    received_by: Mapped[str] = mapped_column(String(NAME))  # the audit actor that handed it in
    artifact_sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)

    analysis: Mapped[Analysis] = relationship(back_populates="expert_segmentations")

    __table_args__ = (
        Index(None, "analysis_id"),
        CheckConstraint("received_via IN ('stow-rs', 'c-store', 'api')", name="received_via"),
    )


class AnalysisGrant(Base):
    """An API caller (audit actor, e.g. ``api:router-a``) that sent this analysis' study, and so may read it even
    where its key's scope is "own"."""

    __tablename__ = "analysis_grant"

    analysis_id: Mapped[int] = mapped_column(ForeignKey("analysis.id", ondelete="CASCADE"), primary_key=True)
    actor: Mapped[str] = mapped_column(String(NAME), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)


class Measurement(Base):
    __tablename__ = "measurement"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    analysis_id: Mapped[int] = _parent("analysis.id")
    structure: Mapped[str] = mapped_column(String(NAME))
    label: Mapped[int]
    snomed_code: Mapped[str] = mapped_column(String(32))
    snomed_meaning: Mapped[str] = mapped_column(String(TEXT))
    laterality: Mapped[str | None] = mapped_column(String(32))
    voxel_count: Mapped[int]
    volume_ml: Mapped[float] = mapped_column(Double)
    hu_mean: Mapped[float | None] = mapped_column(Double)
    hu_std: Mapped[float | None] = mapped_column(Double)
    greatest_extent_mm: Mapped[float | None] = mapped_column(Double)  # between two voxel centres; not a diameter
    major_axis_mm: Mapped[float | None] = mapped_column(Double)  # extents along the principal axes
    minor_axis_mm: Mapped[float | None] = mapped_column(Double)
    perpendicular_axis_mm: Mapped[float | None] = mapped_column(Double)
    short_axis_mm: Mapped[float | None] = mapped_column(Double)  # tubular structures: largest axial short axis

    analysis: Mapped[Analysis] = relationship(back_populates="measurements")

    __table_args__ = (UniqueConstraint("analysis_id", "structure"),)


class Artifact(Base):
    """A file an analysis produced, kept in the artifact store under its sha256 (``uri``)."""

    __tablename__ = "artifact"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    analysis_id: Mapped[int] = _parent("analysis.id")
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(TEXT))
    uri: Mapped[str] = mapped_column(String(TEXT))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(NAME))
    sop_instance_uid: Mapped[str | None] = mapped_column(String(UID))

    analysis: Mapped[Analysis] = relationship(back_populates="artifacts")

    __table_args__ = (UniqueConstraint("analysis_id", "name"),)


class Observation(Base):
    __tablename__ = "observation"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = _parent("patient.id")
    code: Mapped[str] = mapped_column(String(NAME))
    code_system: Mapped[str] = mapped_column(String(TEXT))
    display: Mapped[str] = mapped_column(String(TEXT))
    value: Mapped[float] = mapped_column(Double)
    unit: Mapped[str] = mapped_column(String(NAME))
    effective_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source: Mapped[str] = mapped_column(String(NAME))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)

    __table_args__ = (
        UniqueConstraint("patient_id", "code_system", "code", "effective_at"),
        Index(None, "patient_id", "code", "effective_at"),
    )


class Procedure(Base):
    __tablename__ = "procedure"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = _parent("patient.id")
    code: Mapped[str] = mapped_column(String(NAME))
    code_system: Mapped[str] = mapped_column(String(TEXT))
    display: Mapped[str] = mapped_column(String(TEXT))
    performed_on: Mapped[date] = mapped_column(Date, index=True)
    laterality: Mapped[str | None] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(NAME))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)

    __table_args__ = (UniqueConstraint("patient_id", "code_system", "code", "performed_on"),)


class Prediction(Base):
    __tablename__ = "prediction"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = _parent("patient.id")
    analysis_id: Mapped[int | None] = mapped_column(ForeignKey("analysis.id", ondelete="SET NULL"), index=True)
    analysis: Mapped[Analysis | None] = relationship()
    target: Mapped[str] = mapped_column(String(NAME))
    scenario: Mapped[str] = mapped_column(String(NAME))
    probability: Mapped[float | None] = mapped_column(Double)  # a probability, or NULL where ``value`` is set
    value: Mapped[float | None] = mapped_column(Double)  # a predicted quantity (e.g. new-baseline eGFR) in ``unit``
    unit: Mapped[str | None] = mapped_column(String(NAME))
    # the masks it was computed from: "model", "expert_seg:<SOP Instance UID>"; NULL: an uploaded mask
    mask_source: Mapped[str | None] = mapped_column(String(TEXT))
    lower: Mapped[float | None] = mapped_column(Double)
    upper: Mapped[float | None] = mapped_column(Double)
    model_id: Mapped[str] = mapped_column(String(NAME))
    model_version: Mapped[str] = mapped_column(String(NAME))
    # JSON {"drivers": [{"feature", "value", "logit"}], "imputed": ["field = value (source)"]}; NULL: none recorded
    explanation: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, index=True)

    __table_args__ = (
        Index(None, "patient_id"),
        CheckConstraint(
            "(value IS NULL AND unit IS NULL AND probability IS NOT NULL AND probability >= 0 AND probability <= 1) "
            "OR (probability IS NULL AND value IS NOT NULL AND unit IS NOT NULL)",
            name="probability_or_value",
        ),
    )


class Alert(Base):
    """A rule's finding. ``dedup_key`` names the finding (rule, structure, analyses), so re-evaluation adds none."""

    __tablename__ = "alert"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = _parent("patient.id")
    analysis_id: Mapped[int | None] = mapped_column(ForeignKey("analysis.id", ondelete="CASCADE"), index=True)
    rule: Mapped[str] = mapped_column(String(NAME))
    severity: Mapped[str] = mapped_column(String(16))
    structure: Mapped[str | None] = mapped_column(String(NAME))
    message: Mapped[str] = mapped_column(Text)
    dedup_key: Mapped[str] = mapped_column(String(TEXT))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now)

    __table_args__ = (
        UniqueConstraint("patient_id", "dedup_key"),
        CheckConstraint("severity IN ('info', 'warning', 'critical')", name="severity"),
    )


class AuditEntry(Base):
    """Who read or changed what, when. Keyed by patient_key (no foreign key): the record outlives deletions."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utc_now, index=True)
    actor: Mapped[str] = mapped_column(String(NAME))
    action: Mapped[str] = mapped_column(String(64))
    patient_key: Mapped[str | None] = mapped_column(String(KEY), index=True)
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str | None] = mapped_column(String(TEXT))
    detail: Mapped[str | None] = mapped_column(String(TEXT))


class WorkLease(Base):
    """A replica's hold on an item of shared work (``twin_imaging.twin.leases``): gone when the work is done,
    takeable by another replica once ``expires_at`` has passed."""

    __tablename__ = "work_lease"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)  # inbox_study, job, outbox_item
    item: Mapped[str] = mapped_column(String(TEXT), primary_key=True)
    holder: Mapped[str] = mapped_column(String(NAME))  # host:pid:nonce of the process that holds it
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    taken: Mapped[int] = mapped_column(Integer)  # how many times it was taken: > 1 after a holder died
