"""The twin's read side: a patient's rows in clinical order, and the views derived from them (summary, timeline,
latest measurements, change between two studies per structure, an observation's trend).

Everything here reads within the caller's session; the store opens the transaction and writes the audit row.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from twin_imaging.twin import views as v
from twin_imaging.twin.mapping import (
    alert_view,
    analysis_view,
    observation_view,
    patient_view,
    prediction_view,
    procedure_view,
    study_view,
)
from twin_imaging.twin.schema import Alert, Analysis, Observation, Patient, Prediction, Procedure, Series, Study

TIMELINE_RANK = {
    "procedure": 0,
    "study": 1,
    "analysis": 2,
    "expert_segmentation": 3,
    "observation": 4,
    "prediction": 5,
    "alert": 6,
}


# --- rows ------------------------------------------------------------------------------------------------------


def load_studies(session: Session, patient: Patient) -> list[Study]:
    query = (
        select(Study)
        .where(Study.patient_id == patient.id)
        .options(
            selectinload(Study.series)
            .selectinload(Series.analyses)
            .options(selectinload(Analysis.measurements), selectinload(Analysis.artifacts))
        )
    )
    return sorted(session.scalars(query), key=study_order)


def load_observations(session: Session, patient: Patient, *, code: str | None = None) -> list[Observation]:
    query = select(Observation).where(Observation.patient_id == patient.id)
    if code is not None:
        query = query.where(Observation.code == code)
    return list(session.scalars(query.order_by(Observation.effective_at, Observation.id)))


def load_procedures(session: Session, patient: Patient) -> list[Procedure]:
    query = select(Procedure).where(Procedure.patient_id == patient.id)
    return list(session.scalars(query.order_by(Procedure.performed_on, Procedure.id)))


def load_predictions(session: Session, patient: Patient) -> list[Prediction]:
    query = select(Prediction).where(Prediction.patient_id == patient.id)
    return list(session.scalars(query.order_by(Prediction.created_at, Prediction.id)))


def load_alerts(session: Session, patient: Patient) -> list[Alert]:
    query = select(Alert).where(Alert.patient_id == patient.id)
    return list(session.scalars(query.order_by(Alert.created_at, Alert.id)))


# --- views -----------------------------------------------------------------------------------------------------


def summary_of(session: Session, patient: Patient) -> v.TwinSummary:
    studies = load_studies(session, patient)
    return v.TwinSummary(
        patient=patient_view(patient),
        studies=tuple(study_view(s) for s in studies),
        analyses=tuple(analysis_view(a, s, se) for s, se, a in analyses_of(studies)),
        observations=tuple(observation_view(o) for o in load_observations(session, patient)),
        procedures=tuple(procedure_view(p) for p in load_procedures(session, patient)),
        predictions=tuple(prediction_view(p) for p in load_predictions(session, patient)),
        alerts=tuple(alert_view(a) for a in load_alerts(session, patient)),
    )


def timeline_of(session: Session, patient: Patient) -> list[v.TimelineEvent]:
    studies = load_studies(session, patient)
    events = [v.TimelineEvent(study_at(s), "study", study_summary(s), s.study_instance_uid) for s in studies]
    analysis_at: dict[int, datetime] = {}
    for study, series, a in analyses_of(studies):
        analysis_at[a.id] = study_at(study)
        text = f"{a.model_id} {a.model_version} on series {series.series_number}: {len(a.measurements)} structures"
        events.append(v.TimelineEvent(analysis_at[a.id], "analysis", text, a.public_id))
        for x in a.expert_segmentations:  # when it arrived: a radiologist reads after the scan
            used = ", ".join(s["structure"] for s in x.segments if s.get("structure"))
            said = f"radiologist's SEG by {x.author} (via {x.received_via}) for analysis {a.public_id}: {used}"
            events.append(v.TimelineEvent(x.created_at, "expert_segmentation", said, x.public_id))
    for o in load_observations(session, patient):
        events.append(v.TimelineEvent(o.effective_at, "observation", f"{o.display}: {o.value:g} {o.unit}", str(o.id)))
    for p in load_procedures(session, patient):
        at = datetime.combine(p.performed_on, time(0), tzinfo=UTC)
        events.append(v.TimelineEvent(at, "procedure", p.display, str(p.id)))
    for p in load_predictions(session, patient):
        said = f"{p.probability:.2f}" if p.probability is not None else f"{p.value:.1f} {p.unit}"
        text = f"{p.target} under {p.scenario}: {said}"
        events.append(v.TimelineEvent(p.created_at, "prediction", text, str(p.id)))
    for a in load_alerts(session, patient):
        events.append(v.TimelineEvent(analysis_at.get(a.analysis_id, a.created_at), "alert", a.message, str(a.id)))
    return sorted(events, key=lambda e: (e.at, TIMELINE_RANK[e.kind]))  # stable: ties keep their order


def latest_analysis(session: Session, patient: Patient, model_id: str | None) -> v.AnalysisView | None:
    found = [
        (s, se, a)
        for s, se, a in analyses_of(load_studies(session, patient))
        if a.status == "completed" and a.superseded_by_id is None and (model_id is None or a.model_id == model_id)
    ]
    if not found:
        return None
    study, series, analysis = max(found, key=lambda f: (study_order(f[0]), finished(f[2]), f[2].id))
    return analysis_view(analysis, study, series)


def observation_trend_of(code: str, rows: list[Observation]) -> v.ObservationTrend:
    if not rows:
        return v.ObservationTrend(code=code, display="", unit="")
    units = {o.unit for o in rows}
    unit = units.pop() if len(units) == 1 else ""
    views = tuple(observation_view(o) for o in rows)
    if not unit or len(rows) < 2:
        return v.ObservationTrend(code=code, display=rows[-1].display, unit=unit, observations=views)
    first, last = rows[0].value, rows[-1].value
    return v.ObservationTrend(
        code=code,
        display=rows[-1].display,
        unit=unit,
        observations=views,
        change=last - first,
        change_percent=(last - first) / first * 100.0 if first else None,
        slope_per_year=slope_per_year([(o.effective_at, o.value) for o in rows]),
    )


def changes(
    study_a: Study, study_b: Study, model_id: str | None = None, model_version: str | None = None
) -> list[v.StructureChange] | None:
    """Changes a → b by the model both share (the latest, or the one named); None if they share none."""
    latest_a, latest_b = latest_by_model(study_a), latest_by_model(study_b)
    common = [
        m
        for m in latest_a.keys() & latest_b.keys()
        if (model_id is None or m[0] == model_id) and (model_version is None or m[1] == model_version)
    ]
    if not common:
        return None
    chosen = max(common, key=lambda m: (max(finished(latest_a[m]), finished(latest_b[m])), m))
    a, b = latest_a[chosen], latest_b[chosen]
    volumes_a = {m.structure: m for m in a.measurements}
    volumes_b = {m.structure: m for m in b.measurements}
    found = []
    for name in [*volumes_a, *(n for n in volumes_b if n not in volumes_a)]:
        measured_a, measured_b = volumes_a.get(name), volumes_b.get(name)
        if measured_a is None and name not in a.structures_not_found:
            continue  # the model did not report on it in a
        if measured_b is None and name not in b.structures_not_found:
            continue
        va = measured_a.volume_ml if measured_a else 0.0
        vb = measured_b.volume_ml if measured_b else 0.0
        found.append(
            v.StructureChange(
                structure=name,
                snomed_code=(measured_a or measured_b).snomed_code,
                volume_a_ml=va,
                volume_b_ml=vb,
                change_ml=vb - va,
                change_percent=(vb - va) / va * 100.0 if va > 0 else None,
                study_a_uid=study_a.study_instance_uid,
                study_b_uid=study_b.study_instance_uid,
                study_a_date=study_a.study_date,
                study_b_date=study_b.study_date,
                model_id=chosen[0],
                model_version=chosen[1],
                analysis_a_id=a.public_id,
                analysis_b_id=b.public_id,
            )
        )
    return found


# --- ordering --------------------------------------------------------------------------------------------------


def slope_per_year(points: list[tuple[datetime, float]]) -> float | None:
    """Least-squares slope of value against time, per year; None where all times are equal."""
    years = [(at - points[0][0]).total_seconds() / (365.25 * 86400) for at, _ in points]
    values = [value for _, value in points]
    mean_t, mean_v = sum(years) / len(years), sum(values) / len(values)
    spread = sum((t - mean_t) ** 2 for t in years)
    if spread == 0:
        return None
    return sum((t - mean_t) * (x - mean_v) for t, x in zip(years, values, strict=True)) / spread


def study_order(study: Study) -> tuple:
    return (study.study_date or date.min, study.study_time or time(0), study.id)


def study_at(study: Study) -> datetime:
    if study.study_date is None:
        return study.created_at
    return datetime.combine(study.study_date, study.study_time or time(0), tzinfo=UTC)


def study_summary(study: Study) -> str:
    modalities = "/".join(sorted({s.modality for s in study.series if s.modality}))
    return f"{modalities or 'imaging'} study: {study.description}".rstrip(": ")


def finished(analysis: Analysis) -> datetime:
    return analysis.finished_at or analysis.started_at


def analyses_of(studies: Sequence[Study]) -> list[tuple[Study, Series, Analysis]]:
    found = [(s, se, a) for s in studies for se in s.series for a in se.analyses]
    return sorted(found, key=lambda f: (study_order(f[0]), finished(f[2]), f[2].id))


def latest_by_model(study: Study) -> dict[tuple[str, str], Analysis]:
    latest: dict[tuple[str, str], Analysis] = {}
    for _, _, a in analyses_of([study]):
        if a.status == "completed" and a.superseded_by_id is None:  # superseded analyses saw part of a series
            latest[(a.model_id, a.model_version)] = a  # sorted by finish time: the last one wins
    return latest


def models_of(study: Study) -> set[str]:
    return {f"{m} {ver}" for m, ver in latest_by_model(study)}
