"""ORM rows of the twin → the plain views (``views``) the store returns."""

from __future__ import annotations

import json

from twin_imaging.twin import views as v
from twin_imaging.twin.schema import (
    Alert,
    Analysis,
    Artifact,
    ExpertSegmentation,
    Observation,
    Patient,
    Prediction,
    Procedure,
    Series,
    Study,
)


def patient_view(p: Patient) -> v.PatientView:
    return v.PatientView(patient_key=p.patient_key, pseudonymous=p.pseudonymous, sex=p.sex, birth_year=p.birth_year)


def study_view(s: Study) -> v.StudyView:
    series = tuple(
        v.SeriesView(se.series_instance_uid, se.modality, se.series_number, se.series_description, se.n_instances)
        for se in sorted(s.series, key=lambda se: (se.series_number or 0, se.id))
    )
    modalities = tuple(sorted({se.modality for se in s.series if se.modality}))
    return v.StudyView(s.study_instance_uid, s.study_date, s.description, modalities, series)


def analysis_view(a: Analysis, study: Study, series: Series) -> v.AnalysisView:
    return v.AnalysisView(
        analysis_id=a.public_id,
        study_instance_uid=study.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
        model_id=a.model_id,
        model_version=a.model_version,
        onnx_sha256=a.onnx_sha256,
        code_version=a.code_version,
        input_uids=tuple(a.input_uids),
        started_at=a.started_at,
        finished_at=a.finished_at,
        status=a.status,
        measurements=tuple(
            v.MeasurementView(
                structure=m.structure,
                snomed_code=m.snomed_code,
                snomed_meaning=m.snomed_meaning,
                laterality=m.laterality,
                volume_ml=m.volume_ml,
                hu_mean=m.hu_mean,
                hu_std=m.hu_std,
                greatest_extent_mm=m.greatest_extent_mm,
                major_axis_mm=m.major_axis_mm,
                minor_axis_mm=m.minor_axis_mm,
                perpendicular_axis_mm=m.perpendicular_axis_mm,
                short_axis_mm=m.short_axis_mm,
            )
            for m in sorted(a.measurements, key=lambda m: m.label)
        ),
        artifacts=tuple(artifact_view(x) for x in sorted(a.artifacts, key=lambda x: x.id)),
        superseded_by=a.superseded_by.public_id if a.superseded_by is not None else None,
        supersedes=tuple(old.public_id for old in a.supersedes),
        expert_segmentations=tuple(expert_segmentation_view(x) for x in a.expert_segmentations),
        review_required=None if a.review_reasons is None else bool(a.review_reasons),
        review_reasons=None
        if a.review_reasons is None
        else tuple(v.ReviewReasonView(r["code"], tuple(r["structures"]), r["message"]) for r in a.review_reasons),
    )


def expert_segmentation_view(x: ExpertSegmentation) -> v.ExpertSegmentationView:
    return v.ExpertSegmentationView(
        expert_segmentation_id=x.public_id,
        analysis_id=x.analysis.public_id,
        sop_instance_uid=x.sop_instance_uid,
        author=x.author,
        content_label=x.content_label,
        segments=tuple(x.segments),
        received_via=x.received_via,
        received_by=x.received_by,
        received_at=x.created_at,
        artifact_sha256=x.artifact_sha256,
    )


def artifact_view(x: Artifact) -> v.ArtifactView:
    return v.ArtifactView(
        kind=x.kind, uri=x.uri, sha256=x.sha256, size_bytes=x.size_bytes, media_type=x.media_type, name=x.name
    )


def observation_view(o: Observation) -> v.ObservationView:
    return v.ObservationView(o.id, o.code, o.code_system, o.display, o.value, o.unit, o.effective_at, o.source)


def procedure_view(p: Procedure) -> v.ProcedureView:
    return v.ProcedureView(p.id, p.code, p.code_system, p.display, p.performed_on, p.laterality, p.source)


def prediction_view(p: Prediction) -> v.PredictionView:
    return v.PredictionView(
        p.id,
        p.target,
        p.scenario,
        p.probability,
        p.lower,
        p.upper,
        p.model_id,
        p.model_version,
        p.analysis.public_id if p.analysis is not None else None,
        p.created_at,
        p.value,
        p.unit,
        p.mask_source,
        *_explanation(p.explanation),
    )


def _explanation(text: str | None) -> tuple[tuple[dict, ...], tuple[str, ...]]:
    if not text:
        return (), ()
    found = json.loads(text)
    return tuple(found.get("drivers", ())), tuple(found.get("imputed", ()))


def alert_view(a: Alert) -> v.AlertView:
    return v.AlertView(a.id, a.rule, a.severity, a.message, a.created_at, a.structure)
