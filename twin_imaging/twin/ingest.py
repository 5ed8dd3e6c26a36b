"""Turning a pipeline result into the twin's rows: what an AnalysisResult says about patient, study, series and
analysis (validated before any write), and the Study, Series, Analysis, Measurement and Artifact rows it becomes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session

from twin_imaging.errors import TwinError
from twin_imaging.twin.patients import normalize_sex
from twin_imaging.twin.schema import Analysis, Artifact, Measurement, Patient, Series, Study
from twin_imaging.twin.views import ArtifactView

if TYPE_CHECKING:  # the store does not need the pipeline's imports (ONNX Runtime, highdicom) to run
    from twin_imaging.pipeline import AnalysisResult


@dataclass(frozen=True)
class Facts:
    """What an AnalysisResult says about patient, study, series and analysis, validated, before any write."""

    patient_identifier: str
    sex: str | None
    birth_year: int | None
    study_uid: str
    study_date: date | None
    study_time: time | None
    study_description: str
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str
    model_id: str
    model_version: str
    onnx_sha256: str
    code_version: str
    input_uids: list[str]
    input_set_sha256: str
    structures_not_found: list[str]
    review_reasons: list[dict]
    started_at: datetime
    finished_at: datetime
    structures: list[dict]
    outputs: list[tuple[str, str, str, str | None]]  # kind, file, sha256, SOP Instance UID


def facts_of(result: AnalysisResult, patient_identifier: str | None) -> Facts:
    info, document, report = result.input.volume.info, result.document, result.input.report
    study_uid = report.study_instance_uid or info.study_instance_uid
    series_uid = report.series_instance_uid or info.series_instance_uid
    if not (study_uid and series_uid):
        raise TwinError(
            "the analysis has no StudyInstanceUID or SeriesInstanceUID (a NIfTI input?); the twin records DICOM "
            "studies only"
        )
    identifier = (patient_identifier or info.patient_id or "").strip()
    if not identifier:
        raise TwinError("the analysed study has no PatientID: pass patient_identifier")
    birth = info.patient_birth_date.strip()
    uids = list(dict.fromkeys(s.sop_instance_uid for s in result.input.volume.sources if s.sop_instance_uid))
    finished = utc(document.created)
    timings = document.timings_s
    # "total" is the analysis' wall time; documents written before it existed give their serial stages' sum
    elapsed = timings.get("total") or sum(t for name, t in timings.items() if not name.startswith("segment."))
    structures = [
        dict(
            structure=s.name,
            label=s.label,
            snomed_code=s.snomed_code,
            snomed_meaning=s.snomed_meaning,
            laterality=s.laterality,
            voxel_count=s.voxel_count,
            volume_ml=s.volume_ml,
            hu_mean=s.hu_mean,
            hu_std=s.hu_std,
            greatest_extent_mm=s.greatest_extent_mm,
            major_axis_mm=s.principal_extents_mm.major_axis_mm,
            minor_axis_mm=s.principal_extents_mm.minor_axis_mm,
            perpendicular_axis_mm=s.principal_extents_mm.perpendicular_axis_mm,
            short_axis_mm=s.short_axis_mm,
        )
        for s in document.structures
    ]
    return Facts(
        patient_identifier=identifier,
        sex=normalize_sex(info.patient_sex),
        birth_year=int(birth[:4]) if birth[:4].isdigit() else None,
        study_uid=study_uid,
        study_date=_dicom_date(info.study_date),
        study_time=_dicom_time(info.study_time),
        study_description=info.study_description[:255],
        series_uid=series_uid,
        modality=report.modality or info.modality,
        series_number=report.series_number,
        series_description=report.series_description[:255],
        model_id=document.model.model_id,
        model_version=document.model.version,
        onnx_sha256=document.model.onnx_sha256,
        code_version=document.software.get("version", ""),
        input_uids=uids,
        input_set_sha256=input_set_sha256(uids),
        structures_not_found=list(document.structures_not_found),
        review_reasons=[r.model_dump() for r in document.review.reasons],
        started_at=finished - timedelta(seconds=elapsed),
        finished_at=finished,
        structures=structures,
        outputs=[(o.kind, o.file, o.sha256, o.sop_instance_uid) for o in document.outputs],
    )


def input_set_sha256(uids: list[str]) -> str:
    """The set of input instances as one key: the SHA-256 of their sorted, distinct UIDs."""
    return hashlib.sha256("\n".join(sorted(set(uids))).encode("utf-8")).hexdigest()


def find_analysis(session: Session, facts: Facts) -> tuple[Analysis, Series, Study, Patient] | None:
    """The analysis already attached for the facts' series, model (id and version) and input instances, with its
    parents."""
    return session.execute(
        select(Analysis, Series, Study, Patient)
        .join(Analysis.series)
        .join(Series.study)
        .join(Study.patient)
        .where(
            Series.series_instance_uid == facts.series_uid,
            Analysis.model_id == facts.model_id,
            Analysis.model_version == facts.model_version,
            Analysis.input_set_sha256 == facts.input_set_sha256,
        )
    ).first()


def supersede(session: Session, new: Analysis) -> list[Analysis]:
    """Mark the other current analyses of the new one's series and model as superseded by it, and return them;
    except where the new one saw only a part of an earlier one's instances (a partial resend): then the new one is
    the superseded one, and nothing else changes."""
    others = session.scalars(
        select(Analysis).where(
            Analysis.series_id == new.series_id,
            Analysis.model_id == new.model_id,
            Analysis.model_version == new.model_version,
            Analysis.superseded_by_id.is_(None),
            Analysis.id != new.id,
        )
    ).all()
    mine = set(new.input_uids)
    fuller = [a for a in others if mine < set(a.input_uids)]
    if fuller:
        new.superseded_by_id = fuller[0].id
        return []
    for other in others:
        other.superseded_by_id = new.id
    return list(others)


def add_analysis(
    session: Session, patient: Patient, facts: Facts, stored: list[tuple[ArtifactView, str | None]]
) -> tuple[Analysis, Study, Series]:
    """The analysis' rows under the patient, with its study and series where these are new; ``stored``: the
    artifacts already in the artifact store, each with its SOP Instance UID."""
    study = session.scalar(select(Study).where(Study.study_instance_uid == facts.study_uid))
    if study is None:
        study = Study(
            patient_id=patient.id,
            study_instance_uid=facts.study_uid,
            study_date=facts.study_date,
            study_time=facts.study_time,
            description=facts.study_description,
        )
        session.add(study)
        session.flush()
    elif study.patient_id != patient.id:
        raise TwinError(f"study {facts.study_uid} is already in the twin under another patient")
    series = session.scalar(select(Series).where(Series.series_instance_uid == facts.series_uid))
    if series is None:
        series = Series(
            study_id=study.id,
            series_instance_uid=facts.series_uid,
            modality=facts.modality,
            series_number=facts.series_number,
            series_description=facts.series_description,
            n_instances=len(facts.input_uids),
        )
        session.add(series)
        session.flush()
    elif series.study_id != study.id:
        raise TwinError(f"series {facts.series_uid} is already in the twin under another study")
    else:
        series.n_instances = max(series.n_instances, len(facts.input_uids))  # more of it arrived
    analysis = Analysis(
        series_id=series.id,
        model_id=facts.model_id,
        model_version=facts.model_version,
        onnx_sha256=facts.onnx_sha256,
        code_version=facts.code_version,
        input_uids=facts.input_uids,
        input_set_sha256=facts.input_set_sha256,
        structures_not_found=facts.structures_not_found,
        review_reasons=facts.review_reasons,
        started_at=facts.started_at,
        finished_at=facts.finished_at,
        status="completed",
    )
    analysis.measurements = [Measurement(**s) for s in facts.structures]
    analysis.artifacts = [
        Artifact(
            kind=a.kind,
            name=a.name,
            uri=a.uri,
            sha256=a.sha256,
            size_bytes=a.size_bytes,
            media_type=a.media_type,
            sop_instance_uid=sop_uid,
        )
        for a, sop_uid in stored
    ]
    session.add(analysis)
    session.flush()
    return analysis, study, series


def utc(value: datetime) -> datetime:
    """Aware UTC; a naive time is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _dicom_date(value: str) -> date | None:
    try:
        return datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _dicom_time(value: str) -> time | None:
    digits = value.strip().split(".")[0]
    if not digits.isdigit() or len(digits) not in (2, 4, 6):
        return None
    try:
        return time(*(int(digits[i : i + 2]) for i in range(0, len(digits), 2)))
    except ValueError:
        return None
