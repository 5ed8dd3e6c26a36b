"""The twin's alert rules, evaluated inside every change that could trigger them (in its transaction).

volume_loss: a structure's volume falls by more than the threshold between a study before a procedure and one after
it (before the next procedure), or, with no procedure recorded, between consecutive studies. A finding already
alerted (same structure and analyses) is not alerted again.
"""

from __future__ import annotations

from datetime import date
from itertools import pairwise

from sqlalchemy import select
from sqlalchemy.orm import Session

from twin_imaging.twin.audit import audit
from twin_imaging.twin.queries import changes, study_order
from twin_imaging.twin.schema import Alert, Analysis, Patient, Procedure, Study


def evaluate_alerts(session: Session, patient: Patient, actor: str, *, volume_loss_percent: float) -> None:
    """Add the alerts the patient's rows now call for (see the module's rules), each with its audit row."""
    threshold = volume_loss_percent
    session.flush()
    session.expire_all()  # collections loaded before this change's rows were added are read again
    for study_a, study_b in _compared_pairs(session, patient):
        for change in changes(study_a, study_b) or ():
            if change.change_percent is None or -change.change_percent <= threshold:
                continue
            id_a, id_b = (
                session.scalar(select(Analysis.id).where(Analysis.public_id == public))
                for public in (change.analysis_a_id, change.analysis_b_id)
            )
            dedup_key = f"volume_loss:{change.structure}:{id_a}:{id_b}"  # internal ids, as since the first alert
            if session.scalar(select(Alert.id).where(Alert.patient_id == patient.id, Alert.dedup_key == dedup_key)):
                continue
            alert = Alert(
                patient_id=patient.id,
                analysis_id=id_b,
                rule="volume_loss",
                severity="warning",
                structure=change.structure,
                message=(
                    f"{change.structure} volume fell {-change.change_percent:.1f} % "
                    f"({change.volume_a_ml:.1f} mL on {change.study_a_date} to {change.volume_b_ml:.1f} mL on "
                    f"{change.study_b_date}), more than the {threshold:g} % threshold "
                    f"({change.model_id} {change.model_version})"
                ),
                dedup_key=dedup_key,
            )
            session.add(alert)
            session.flush()
            audit(session, actor, "create_alert", patient.patient_key, "alert", alert.id, alert.rule)


def _compared_pairs(session: Session, patient: Patient) -> list[tuple[Study, Study]]:
    """(before, after) studies around each procedure, or consecutive studies where no procedure is recorded."""
    studies = sorted(
        (s for s in session.scalars(select(Study).where(Study.patient_id == patient.id)) if s.study_date),
        key=study_order,
    )
    days = sorted(
        {p.performed_on for p in session.scalars(select(Procedure).where(Procedure.patient_id == patient.id))}
    )
    pairs: list[tuple[Study, Study]] = []
    if days:
        for i, day in enumerate(days):
            before = [s for s in studies if s.study_date < day]
            if before:
                until = days[i + 1] if i + 1 < len(days) else date.max
                pairs += [(before[-1], s) for s in studies if day < s.study_date < until]
    else:
        pairs = list(pairwise(studies))
    return pairs
