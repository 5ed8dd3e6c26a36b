"""Who read or changed the twin: every store call names its actor, and writes an audit row in its transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from twin_imaging.errors import TwinError
from twin_imaging.twin.schema import AuditEntry


def check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip():
        raise TwinError("every read and change of the twin names its actor (who)")
    if len(actor) > 128:
        raise TwinError("an actor name has at most 128 characters")
    return actor.strip()


def audit(
    session: Session,
    actor: str,
    action: str,
    patient_key: str | None,
    object_type: str,
    object_id: object = None,
    detail: str | None = None,
) -> None:
    object_id = None if object_id is None else str(object_id)[:255]
    session.add(
        AuditEntry(
            actor=actor,
            action=action,
            patient_key=patient_key,
            object_type=object_type,
            object_id=object_id,
            detail=detail,
        )
    )
