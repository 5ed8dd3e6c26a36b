"""Patients in the twin: their keys (the PatientID, or an HMAC pseudonym of it) and their rows.

Names and birth dates are never stored: sex and birth year are.
"""

from __future__ import annotations

import hmac
from hashlib import sha256

from sqlalchemy import select
from sqlalchemy.orm import Session

from twin_imaging.errors import TwinError, UnknownPatientError
from twin_imaging.settings import Settings
from twin_imaging.twin.schema import Patient

PSEUDONYM_HEX_CHARS = 32  # 128 bits of HMAC-SHA256
KEY_MAX = 64


def pseudonym_secret(settings: Settings) -> bytes:
    secret = settings.pseudonym_secret
    return secret.get_secret_value().encode("utf-8") if secret else b""


def patient_key(settings: Settings, patient_identifier: str) -> str:
    """The twin's key of a PatientID: HMAC-SHA256 pseudonym where configured, else the PatientID itself."""
    identifier = (patient_identifier or "").strip()
    if not identifier:
        raise TwinError("a patient needs a non-empty PatientID")
    if settings.pseudonymize_patients:
        return hmac.new(pseudonym_secret(settings), identifier.encode("utf-8"), sha256).hexdigest()[
            :PSEUDONYM_HEX_CHARS
        ]
    if len(identifier) > KEY_MAX:
        raise TwinError(f"a PatientID has at most {KEY_MAX} characters, got {len(identifier)}")
    return identifier


def check_key(patient_key: str) -> str:
    if not isinstance(patient_key, str) or not patient_key.strip() or len(patient_key) > KEY_MAX:
        raise TwinError(f"a patient key is a non-empty text of at most {KEY_MAX} characters, got {patient_key!r}")
    return patient_key


def find_patient(session: Session, patient_key: str) -> Patient:
    """The patient's row; UnknownPatientError where the twin has none."""
    patient = session.scalar(select(Patient).where(Patient.patient_key == check_key(patient_key)))
    if patient is None:
        raise UnknownPatientError(patient_key)
    return patient


def ensure_patient(
    session: Session, key: str, *, pseudonymous: bool, sex: str | None, birth_year: int | None
) -> Patient:
    """The patient's row, created where missing; sex and birth year fill in what it lacks."""
    patient = session.scalar(select(Patient).where(Patient.patient_key == key))
    if patient is None:
        patient = Patient(patient_key=key, pseudonymous=pseudonymous)
        session.add(patient)
    patient.sex = patient.sex or sex
    patient.birth_year = patient.birth_year or birth_year
    session.flush()
    return patient


def normalize_sex(value: str | None) -> str | None:
    value = (value or "").strip().upper()
    return value if value in ("M", "F", "O") else None
