"""Clinical records in the twin: observations (labs), procedures and outcome predictions, validated, each with its
audit row, in the caller's transaction. Recording the same observation or procedure again returns its row.
"""

from __future__ import annotations

import json
import math
from datetime import date, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from twin_imaging.errors import TwinConflictError, TwinError
from twin_imaging.twin import views as v
from twin_imaging.twin.audit import audit
from twin_imaging.twin.ingest import utc
from twin_imaging.twin.observation_units import check_effective_at, checked_unit
from twin_imaging.twin.schema import Analysis, Observation, Patient, Prediction, Procedure, Series, Study


def add_observation(session: Session, patient: Patient, o: v.ObservationInput, actor: str) -> Observation:
    if not (o.code.strip() and o.code_system.strip()):
        raise TwinError("an observation needs a code and a code system")
    if isinstance(o.value, bool) or not isinstance(o.value, int | float) or not math.isfinite(o.value):
        raise TwinError(f"observation {o.code} needs a finite numeric value, got {o.value!r}")
    if not isinstance(o.effective_at, datetime):
        raise TwinError(f"observation {o.code} needs effective_at as a datetime, got {o.effective_at!r}")
    at = utc(o.effective_at)
    check_effective_at(o.code, at)
    unit = checked_unit(o.code_system, o.code, o.unit)
    row = session.scalar(
        select(Observation).where(
            Observation.patient_id == patient.id,
            Observation.code_system == o.code_system,
            Observation.code == o.code,
            Observation.effective_at == at,
        )
    )
    if row is not None:
        if row.value != float(o.value) or row.unit != unit:
            raise TwinConflictError(
                f"observation {o.code} at {at.isoformat()} is already recorded as {row.value:g} "
                f"{row.unit}, not {o.value:g} {unit}"
            )
        return row
    row = Observation(
        patient_id=patient.id,
        code=o.code,
        code_system=o.code_system,
        display=o.display,
        value=float(o.value),
        unit=unit,
        effective_at=at,
        source=o.source,
    )
    session.add(row)
    session.flush()
    audit(session, actor, "record_observation", patient.patient_key, "observation", row.id)
    return row


def add_procedure(session: Session, patient: Patient, p: v.ProcedureInput, actor: str) -> Procedure:
    if not (p.code.strip() and p.code_system.strip()):
        raise TwinError("a procedure needs a code and a code system")
    if not isinstance(p.performed_on, date):
        raise TwinError(f"procedure {p.code} needs performed_on as a date, got {p.performed_on!r}")
    day = p.performed_on.date() if isinstance(p.performed_on, datetime) else p.performed_on
    row = session.scalar(
        select(Procedure).where(
            Procedure.patient_id == patient.id,
            Procedure.code_system == p.code_system,
            Procedure.code == p.code,
            Procedure.performed_on == day,
        )
    )
    if row is not None:
        return row
    row = Procedure(
        patient_id=patient.id,
        code=p.code,
        code_system=p.code_system,
        display=p.display,
        performed_on=day,
        laterality=p.laterality,
        source=p.source,
    )
    session.add(row)
    session.flush()
    audit(session, actor, "record_procedure", patient.patient_key, "procedure", row.id)
    return row


def check_prediction(p: v.PredictionInput) -> None:
    """TwinError unless the prediction is a probability in [0, 1] or a finite value with a unit (exactly one), its
    interval holds it, and it names what it is."""
    if (p.probability is None) == (p.value is None):
        raise TwinError("a prediction is either a probability or a value with its unit, exactly one of them")
    if p.value is not None:
        for name, value in (("value", p.value), ("lower", p.lower), ("upper", p.upper)):
            if value is not None and not math.isfinite(value):
                raise TwinError(f"prediction {name} must be a finite number, got {value}")
        if not (p.unit or "").strip():
            raise TwinError("a predicted value needs its unit")
    else:
        if p.unit is not None:
            raise TwinError("a probability has no unit")
        for name, value in (("probability", p.probability), ("lower", p.lower), ("upper", p.upper)):
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise TwinError(f"prediction {name} must be a probability in [0, 1], got {value}")
    point = p.probability if p.probability is not None else p.value
    if (p.lower is not None and p.lower > point) or (p.upper is not None and p.upper < point):
        raise TwinError(f"prediction interval [{p.lower}, {p.upper}] does not contain {point}")
    for name in ("target", "scenario", "model_id", "model_version"):
        if not getattr(p, name).strip():
            raise TwinError(f"a prediction needs a {name}")


def prediction_explanation(p: v.PredictionInput) -> str | None:
    """The prediction's drivers and imputed inputs as the JSON of ``Prediction.explanation`` (None where neither)."""
    if not p.drivers and not p.imputed:
        return None
    drivers = [
        {"feature": str(d["feature"]), "value": float(d["value"]), "logit": round(float(d["logit"]), 4)}
        for d in p.drivers
    ]
    return json.dumps({"drivers": drivers, "imputed": [str(i) for i in p.imputed]}, allow_nan=False)


def add_prediction(session: Session, patient: Patient, p: v.PredictionInput, actor: str) -> Prediction:
    """The prediction's row (after check_prediction); its analysis, if it names one, must be this patient's."""
    analysis = None if p.analysis_id is None else _analysis_of(session, patient, p.analysis_id)
    if p.analysis_id is not None and analysis is None:
        raise TwinError(f"analysis {p.analysis_id} is not in this patient's twin")
    row = Prediction(
        patient_id=patient.id,
        analysis_id=None if analysis is None else analysis.id,
        target=p.target,
        scenario=p.scenario,
        probability=p.probability,
        value=p.value,
        unit=p.unit,
        mask_source=p.mask_source,
        lower=p.lower,
        upper=p.upper,
        model_id=p.model_id,
        model_version=p.model_version,
        explanation=prediction_explanation(p),
    )
    session.add(row)
    session.flush()
    audit(session, actor, "record_prediction", patient.patient_key, "prediction", row.id)
    return row


def _analysis_of(session: Session, patient: Patient, analysis_id: str) -> Analysis | None:
    query = select(Analysis).join(Analysis.series).join(Series.study).where(Analysis.public_id == analysis_id)
    return session.scalar(query.where(Study.patient_id == patient.id))
