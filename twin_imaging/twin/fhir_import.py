"""Clinical Observations and Procedures of one patient into the twin, from a FHIR Bundle (or one resource).

records = parse_bundle(document)         # ImportedRecords: ObservationInputs, ProcedureInputs, skipped reasons

Import takes a Bundle of any type, or one Observation or Procedure. Every resource is validated with fhir.resources
(R5, then R4B for R4 senders); an invalid one is an InputError naming it and the field. Observations need a coded
code (LOINC preferred), a status final/amended/corrected/appended, a valueQuantity with a value, a unit and no
comparator (">90" is not 90), and a time (effectiveDateTime / Instant / Period.start, else issued; a date alone is
midnight UTC); Procedures need status completed, a code (SNOMED preferred) and an occurrence (R4: performed) date.
Others, and twin-imaging's own imaging measurements, are listed in ``skipped`` with the reason. A bundle that covers
more than one patient is refused.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime, timezone
from typing import Any

from fhir.resources import get_fhir_model_class
from fhir.resources.R4B import get_fhir_model_class as get_r4b_model_class
from pydantic import ValidationError

from twin_imaging.errors import InputError
from twin_imaging.twin.fhir_codes import (
    LOINC,
    MEASUREMENT_SYSTEM,
    PATIENT_KEY_SYSTEM,
    SKIP_OWN_MEASUREMENT,
    SNOMED,
    UCUM,
)
from twin_imaging.twin.views import ImportedRecords, ObservationInput, ProcedureInput

_LATERALITY_BY_CODE = {"7771000": "Left", "24028007": "Right", "51440002": "Bilateral"}
_OBSERVATION_STATUSES = {"final", "amended", "corrected", "appended"}
_REFERENCE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")
_NOT_PATIENT = object()


def parse_bundle(document: dict | str | bytes) -> ImportedRecords:
    """Clinical Observations and Procedures of one patient from a FHIR Bundle (or a single resource).

    Raises InputError for invalid JSON, an invalid resource (naming it and the field) or a bundle that covers
    several patients; resources that are valid but not imported are listed in ``skipped`` with the reason.
    """
    items = _resources(_load(document))
    kinds = {}
    for _label, full_url, model in items:
        rtype = model.get_resource_type()
        kinds.update({key: rtype for key in (full_url, f"{rtype}/{model.id}" if model.id else None) if key})
    patients = _Patients([item for item in items if item[2].get_resource_type() == "Patient"], kinds)

    observations, procedures, skipped = [], [], []
    for label, _url, model in items:
        rtype = model.get_resource_type()
        if rtype == "Patient":
            continue
        if rtype not in ("Observation", "Procedure"):
            skipped.append(f"{label}: resource type not imported")
            continue
        subject = patients.add_subject(getattr(model, "subject", None))
        if subject is _NOT_PATIENT:
            skipped.append(f"{label}: subject is not a patient")
            continue
        result = _observation(model) if rtype == "Observation" else _procedure_input(model)
        if isinstance(result, str):
            skipped.append(f"{label}: {result}")
        else:
            (observations if rtype == "Observation" else procedures).append(result)
    if len(patients.identities) > 1:
        raise InputError(
            f"the bundle covers {len(patients.identities)} different patients; import one patient's records at a time"
        )
    return ImportedRecords(patients.identifier(), tuple(observations), tuple(procedures), tuple(skipped))


def _load(document: dict | str | bytes) -> dict:
    if isinstance(document, bytes):
        try:
            document = document.decode("utf-8-sig")
        except UnicodeDecodeError as error:
            raise InputError(f"the FHIR document is not UTF-8 text ({error.reason} at byte {error.start})") from None
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError as error:
            raise InputError(f"the FHIR document is not valid JSON: {error.msg} at line {error.lineno}") from None
    if not isinstance(document, dict):
        raise InputError(f"a FHIR document is a JSON object, not {type(document).__name__}")
    return document


def _resources(document: dict) -> list[tuple[str, str | None, Any]]:
    """(label, fullUrl, validated model) for the document, or each resource of a Bundle."""
    rtype = document.get("resourceType")
    if rtype in ("Observation", "Procedure"):
        return [(_label(document, None), None, _validate(document, _label(document, None)))]
    if rtype != "Bundle":
        raise InputError(f"expected a FHIR Bundle, Observation or Procedure, got resourceType {rtype!r}")
    entries = document.get("entry") or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise InputError("Bundle: 'entry' must be a list of objects")
    shell = {**document, "entry": [{k: v for k, v in e.items() if k != "resource"} for e in entries]}
    _validate(shell, "Bundle")
    items = []
    for index, entry in enumerate(entries):
        resource = entry.get("resource")
        if resource is None:
            continue
        if not isinstance(resource, dict):
            raise InputError(f"Bundle entry {index}: 'resource' must be an object")
        label = _label(resource, index)
        full_url = entry.get("fullUrl") if isinstance(entry.get("fullUrl"), str) else None
        items.append((label, full_url, _validate(resource, label)))
    return items


def _label(resource: dict, index: int | None) -> str:
    rtype = str(resource.get("resourceType") or "resource")[:40]
    rid = resource.get("id")
    if isinstance(rid, str) and rid:
        return f"{rtype} {rid[:64]!r}"
    return f"{rtype} (entry {index})" if index is not None else rtype


def _validate(resource: dict, label: str):
    """The fhir.resources model of ``resource``: R5, else R4B; an InputError naming the first bad field."""
    rtype = resource.get("resourceType")
    if not isinstance(rtype, str) or not rtype:
        raise InputError(f"{label}: no resourceType")
    first_error: ValidationError | None = None
    for lookup in (get_fhir_model_class, get_r4b_model_class):
        try:
            model_class = lookup(rtype)
        except (ValueError, KeyError):
            continue
        try:
            return model_class.model_validate(resource)
        except ValidationError as error:
            first_error = first_error or error
    if first_error is None:
        raise InputError(f"{label}: unknown FHIR resource type {rtype!r}")
    problems = first_error.errors()
    where = ".".join(str(part) for part in problems[0]["loc"]) or "(resource)"
    message = " ".join(str(problems[0]["msg"]).removeprefix("Value error, ").split())[:200]
    more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
    raise InputError(f"{label} is not valid FHIR: field {where!r}: {message}{more}")


class _Patients:
    """Which patient each Patient resource and subject reference names; collects the distinct ones."""

    def __init__(self, patients: list[tuple[str, str | None, Any]], kinds: dict[str, str]) -> None:
        self.kinds = kinds
        self.aliases: dict[str, str] = {}
        self.identities: set[str] = set()
        self.patient_identifiers: list[str] = []
        self.subject_identifiers: list[str] = []
        for label, full_url, patient in patients:
            identifiers = [i for i in patient.identifier or [] if i.value]
            chosen = _preferred_identifier(identifiers)
            keys = [f"{i.system or ''}|{i.value}" for i in identifiers]
            local = f"Patient/{patient.id}" if patient.id else None
            identity = keys[identifiers.index(chosen)] if chosen else (full_url or local or label)
            self.aliases.update({key: identity for key in (full_url, local, *keys) if key})
            self.identities.add(identity)
            if chosen:
                self.patient_identifiers.append(chosen.value)

    def add_subject(self, reference) -> object:
        """Record the patient a subject reference names; _NOT_PATIENT where it names something else."""
        if reference is None:
            return None
        identity = None
        if reference.reference:
            target = reference.reference
            match = _REFERENCE.search(target)
            rtype = self.kinds.get(target) or (match.group(1) if match else reference.type)
            if rtype and rtype != "Patient":
                return _NOT_PATIENT
            identity = self.aliases.get(target) or (self.aliases.get(f"Patient/{match.group(2)}") if match else None)
            identity = identity or (f"Patient/{match.group(2)}" if match else target)
        elif reference.type and reference.type != "Patient":
            return _NOT_PATIENT
        if reference.identifier is not None and reference.identifier.value:
            key = f"{reference.identifier.system or ''}|{reference.identifier.value}"
            identity = identity or self.aliases.get(key, key)
            self.subject_identifiers.append(reference.identifier.value)
        if identity:
            self.identities.add(identity)
        return identity

    def identifier(self) -> str | None:
        found = self.patient_identifiers or self.subject_identifiers
        return found[0] if found else None


def _preferred_identifier(identifiers: list):
    """The twin's key, else a medical record number, else the first identifier."""
    for identifier in identifiers:
        if identifier.system == PATIENT_KEY_SYSTEM:
            return identifier
    for identifier in identifiers:
        codings = identifier.type.coding if identifier.type and identifier.type.coding else []
        if any(c.code == "MR" for c in codings):
            return identifier
    return identifiers[0] if identifiers else None


def _observation(model) -> ObservationInput | str:
    """The ObservationInput of an Observation, or why it is not imported."""
    codings = [c for c in (model.code.coding or []) if c.code and c.system]
    if any(c.system == MEASUREMENT_SYSTEM for c in codings):
        return SKIP_OWN_MEASUREMENT
    if model.status not in _OBSERVATION_STATUSES:
        return f"status {model.status}"
    if not codings:
        return "no coded code (a coding with system and code)"
    coding = next((c for c in codings if c.system == LOINC), codings[0])
    quantity = model.valueQuantity
    if quantity is None or quantity.value is None:
        return "no valueQuantity value"
    if quantity.comparator:
        return f"valueQuantity has comparator {quantity.comparator!r} (a censored value is not stored as exact)"
    unit = quantity.code if quantity.code and quantity.system == UCUM else quantity.unit or quantity.code
    if not unit:
        return "valueQuantity has no unit"
    when = (
        model.effectiveDateTime
        or getattr(model, "effectiveInstant", None)
        or (model.effectivePeriod.start if model.effectivePeriod else None)
        or model.issued
    )
    effective_at = _datetime(when)
    if effective_at is None:
        return "no effective time precise to the day" if when else "no effective time"
    return ObservationInput(
        code=coding.code,
        display=coding.display or model.code.text or coding.code,
        value=float(quantity.value),
        unit=unit,
        effective_at=effective_at,
        code_system=coding.system,
        source="fhir-import",
    )


def _procedure_input(model) -> ProcedureInput | str:
    """The ProcedureInput of a Procedure (R5 occurrence[x], R4 performed[x]), or why it is not imported."""
    if model.status != "completed":
        return f"status {model.status}"
    codings = [c for c in ((model.code.coding or []) if model.code else []) if c.code and c.system]
    if not codings:
        return "no coded code (a coding with system and code)"
    coding = next((c for c in codings if c.system == SNOMED), codings[0])
    when = None
    for prefix in ("occurrence", "performed"):
        period = getattr(model, f"{prefix}Period", None)
        when = when or getattr(model, f"{prefix}DateTime", None) or (period.start if period else None)
    performed_on = when.date() if isinstance(when, datetime) else when if isinstance(when, date) else None
    if performed_on is None:
        return "no performed date precise to the day" if when else "no performed date"
    return ProcedureInput(
        code=coding.code,
        display=coding.display or (model.code.text if model.code else None) or coding.code,
        performed_on=performed_on,
        code_system=coding.system,
        laterality=_laterality(model.bodySite or []),
        source="fhir-import",
    )


def _laterality(sites: list) -> str | None:
    """Left / Right / Bilateral from SNOMED laterality qualifiers in bodySite (or a laterality extension on it)."""
    concepts = list(sites)
    for site in sites:
        concepts += [e.valueCodeableConcept for e in site.extension or [] if "aterality" in (e.url or "")]
    for concept in concepts:
        for coding in (concept.coding if concept else None) or []:
            if coding.system == SNOMED and coding.code in _LATERALITY_BY_CODE:
                return _LATERALITY_BY_CODE[coding.code]
    return None


def _datetime(value: datetime | date | str | None) -> datetime | None:
    """An aware datetime (a date alone is midnight UTC); None for a partial date such as '2024-03'."""
    if isinstance(value, datetime):
        offset = value.utcoffset()
        return value.replace(tzinfo=timezone(offset)) if offset is not None else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    return None
