"""Read models of the patient twin: plain, immutable values the store returns and FHIR export consumes.

The store (``twin_imaging.twin.store``, through ``mapping``) builds these from the database; nothing here touches
SQLAlchemy, so FHIR export, the CLI and the API can be written and tested against plain values.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PatientView:
    patient_key: str  # the twin's key: a pseudonym where configured, else the PACS PatientID
    pseudonymous: bool
    sex: str | None = None  # DICOM PatientSex: M, F, O
    birth_year: int | None = None  # never the full birth date


@dataclass(frozen=True)
class SeriesView:
    series_instance_uid: str
    modality: str
    series_number: int | None
    series_description: str
    n_instances: int


@dataclass(frozen=True)
class StudyView:
    study_instance_uid: str
    study_date: date | None
    description: str
    modalities: tuple[str, ...]
    series: tuple[SeriesView, ...]


@dataclass(frozen=True)
class MeasurementView:
    structure: str
    snomed_code: str
    snomed_meaning: str
    laterality: str | None
    volume_ml: float
    hu_mean: float | None
    hu_std: float | None
    greatest_extent_mm: float | None  # between the two farthest voxels: a tubular structure's length, not a diameter
    major_axis_mm: float | None = None  # extents along the principal axes
    minor_axis_mm: float | None = None
    perpendicular_axis_mm: float | None = None
    short_axis_mm: float | None = None  # tubular structures: the largest axial short-axis diameter


@dataclass(frozen=True)
class ReviewReasonView:
    code: str  # one of twin_imaging.quality_review.REVIEW_CODES
    structures: tuple[str, ...]
    message: str


@dataclass(frozen=True)
class ArtifactView:
    kind: str  # labels_nifti, dicom_seg, dicom_sr, overlay_png, results_json
    uri: str
    sha256: str
    size_bytes: int
    media_type: str
    name: str = ""  # the file's name in the analysis output folder, e.g. overlay_axial.png


@dataclass(frozen=True)
class ExpertSegmentationView:
    """A radiologist's DICOM SEG of the analysed series (kidneys, renal tumour, cyst)."""

    expert_segmentation_id: str  # public id
    analysis_id: str  # public id of the analysis it was recorded against
    sop_instance_uid: str
    author: str
    content_label: str
    segments: tuple[dict, ...]  # {number, label, code, meaning, structure}
    received_via: str  # stow-rs, c-store, api
    received_by: str
    received_at: datetime
    artifact_sha256: str


@dataclass(frozen=True)
class AnalysisView:
    analysis_id: str  # the public id: 32 hex digits, unguessable
    study_instance_uid: str
    series_instance_uid: str
    model_id: str
    model_version: str
    onnx_sha256: str
    code_version: str
    input_uids: tuple[str, ...]  # SOP instance UIDs analysed
    started_at: datetime
    finished_at: datetime | None
    status: str  # completed, failed
    measurements: tuple[MeasurementView, ...] = ()
    # the quality review: None where the analysis predates it (unknown), () when nothing needs a look
    review_required: bool | None = None
    review_reasons: tuple[ReviewReasonView, ...] | None = None
    # more instances of the series arrived and were analysed: the analysis (public id) that replaced this one
    superseded_by: str | None = None
    supersedes: tuple[str, ...] = ()  # the analyses this one replaced
    artifacts: tuple[ArtifactView, ...] = ()
    expert_segmentations: tuple[ExpertSegmentationView, ...] = ()  # radiologists' SEGs of this series, oldest first


@dataclass(frozen=True)
class PredictionView:
    prediction_id: int
    target: str  # e.g. major_complication
    scenario: str  # e.g. partial_nephrectomy
    probability: float | None  # None where the prediction is a value (``value``, ``unit``)
    lower: float | None
    upper: float | None
    model_id: str
    model_version: str
    analysis_id: str | None  # public id
    created_at: datetime
    value: float | None = None  # a predicted quantity, e.g. the new-baseline eGFR
    unit: str | None = None
    mask_source: str | None = None  # "model", "expert_seg:<SOP Instance UID>"; None: an uploaded mask
    drivers: tuple[dict, ...] = ()  # the strongest contributions {"feature", "value", "logit"} (+ raises the risk)
    imputed: tuple[str, ...] = ()  # clinical inputs missing from the twin, imputed: "field = value (source)"

    @property
    def point(self) -> float:
        """The probability, or the predicted value."""
        return self.probability if self.probability is not None else self.value


@dataclass(frozen=True)
class ObservationView:
    observation_id: int
    code: str  # LOINC where one exists
    code_system: str  # http://loinc.org, or the project's local system
    display: str
    value: float
    unit: str  # UCUM
    effective_at: datetime
    source: str  # manual, fhir-import, ...


@dataclass(frozen=True)
class ProcedureView:
    procedure_id: int
    code: str
    code_system: str
    display: str
    performed_on: date
    laterality: str | None
    source: str


@dataclass(frozen=True)
class AlertView:
    alert_id: int
    rule: str
    severity: str  # info, warning, critical
    message: str
    created_at: datetime
    structure: str | None = None


@dataclass(frozen=True)
class TwinSummary:
    patient: PatientView
    studies: tuple[StudyView, ...] = ()
    analyses: tuple[AnalysisView, ...] = ()
    observations: tuple[ObservationView, ...] = ()
    procedures: tuple[ProcedureView, ...] = ()
    predictions: tuple[PredictionView, ...] = ()
    alerts: tuple[AlertView, ...] = ()


@dataclass(frozen=True)
class ObservationInput:
    """A clinical observation to record (from JSON or an imported FHIR Observation)."""

    code: str
    display: str
    value: float
    unit: str
    effective_at: datetime
    code_system: str = "http://loinc.org"
    source: str = "manual"


@dataclass(frozen=True)
class ProcedureInput:
    code: str
    display: str
    performed_on: date
    code_system: str = "http://snomed.info/sct"
    laterality: str | None = None
    source: str = "manual"


@dataclass(frozen=True)
class ImportedRecords:
    """What a FHIR Bundle brings in for one patient."""

    patient_identifier: str | None
    observations: tuple[ObservationInput, ...] = ()
    procedures: tuple[ProcedureInput, ...] = ()
    skipped: tuple[str, ...] = field(default=())  # resources not imported, with the reason


@dataclass(frozen=True)
class PredictionInput:
    """An outcome prediction to record for a patient (per surgical scenario): a probability in [0, 1], or a value
    with its unit (``probability`` None), e.g. the new-baseline eGFR in mL/min/1.73 m²; the interval holds it."""

    target: str
    scenario: str
    probability: float | None
    model_id: str
    model_version: str
    lower: float | None = None
    upper: float | None = None
    analysis_id: str | None = None  # the (public id of the) analysis whose measurements fed the model, if any
    value: float | None = None
    unit: str | None = None
    mask_source: str | None = None  # "model", "expert_seg:<SOP Instance UID>"
    drivers: tuple[dict, ...] = ()  # {"feature": str, "value": float, "logit": float}, strongest first
    imputed: tuple[str, ...] = ()


@dataclass(frozen=True)
class TimelineEvent:
    """One dated entry of a patient's timeline."""

    at: datetime  # UTC; a date-only event (a study without time, a procedure) sits at midnight
    kind: str  # study, analysis, expert_segmentation, observation, procedure, prediction, alert
    summary: str
    ref: str  # what it points at: a StudyInstanceUID, or the id of the analysis, observation, ...


@dataclass(frozen=True)
class StructureChange:
    """A structure's volume in two studies of one patient, measured by the same model and version."""

    structure: str
    snomed_code: str
    volume_a_ml: float
    volume_b_ml: float  # 0.0 where the model looked for the structure in study b and found none
    change_ml: float  # b - a
    change_percent: float | None  # None where a is 0
    study_a_uid: str
    study_b_uid: str
    study_a_date: date | None
    study_b_date: date | None
    model_id: str
    model_version: str
    analysis_a_id: str
    analysis_b_id: str


@dataclass(frozen=True)
class ObservationTrend:
    """The values of one observation code over time (oldest first) and their change."""

    code: str
    display: str
    unit: str  # empty where the values do not share one unit (then no change is computed)
    observations: tuple[ObservationView, ...] = ()
    change: float | None = None  # last - first
    change_percent: float | None = None
    slope_per_year: float | None = None  # least-squares slope, units per year (two or more dated values)


@dataclass(frozen=True)
class ImportOutcome:
    """What ``TwinStore.import_records`` recorded (records already in the twin are returned as they are)."""

    patient_key: str
    observations: tuple[ObservationView, ...] = ()
    procedures: tuple[ProcedureView, ...] = ()
    skipped: tuple[str, ...] = ()  # passed through from ImportedRecords


def to_jsonable(value: Any) -> Any:
    """Views (dataclasses, lists of them) as plain JSON values: dates in ISO 8601, paths as text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    return value
