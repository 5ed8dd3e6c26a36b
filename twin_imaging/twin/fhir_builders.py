"""The FHIR R5 resources of the twin's export, one builder per resource type, each from the plain views.

Builders return plain dicts that may hold None and empty values; ``compact`` drops those (FHIR allows no empty
elements) before the bundle is validated. References (``patient``, ``device``, ...) come from the bundle's assembly.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from twin_imaging.twin.fhir_codes import (
    ALERT_RULE_SYSTEM,
    DCM,
    FLAG_PRIORITY_URL,
    LATERALITY_URL,
    LOINC,
    MEASUREMENT_SYSTEM,
    PATIENT_KEY_SYSTEM,
    PREDICTED_INTERVAL_URL,
    PREDICTED_VALUE_URL,
    PREDICTION_TARGET_SYSTEM,
    PROBABILITY_INTERVAL_URL,
    RESEARCH_ONLY,
    SCENARIO_URL,
    SNOMED,
    UCUM,
)
from twin_imaging.twin.views import (
    AlertView,
    AnalysisView,
    MeasurementView,
    ObservationView,
    PatientView,
    PredictionView,
    ProcedureView,
    StudyView,
)

_IMAGING = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}]}
_GENDER = {"M": "male", "F": "female", "O": "other"}
_LATERALITY = {"left": ("7771000", "Left"), "right": ("24028007", "Right"), "bilateral": ("51440002", "Right and left")}
_MODALITY = {"CT": "Computed Tomography", "MR": "Magnetic Resonance", "PT": "Positron emission tomography",
             "US": "Ultrasound", "SEG": "Segmentation", "SR": "SR Document", "OT": "Other"}  # fmt: skip
_PRIORITY = {"info": ("PL", "Low priority"), "warning": ("PM", "Medium priority"), "critical": ("PH", "High priority")}
_COMPONENTS = (  # MeasurementView field, local code, display, SNOMED CT code or None, UCUM code, unit
    ("hu_mean", "hu_mean", "Mean attenuation", None, "[hnsf'U]", "HU"),
    ("hu_std", "hu_std", "Attenuation standard deviation", None, "[hnsf'U]", "HU"),
    ("greatest_extent_mm", "greatest_extent", "Greatest extent (between the two farthest voxels)", None, "mm", "mm"),
    ("major_axis_mm", "major_axis", "Major axis", "131187009", "mm", "mm"),
    ("minor_axis_mm", "minor_axis", "Minor axis", "131188004", "mm", "mm"),
    ("perpendicular_axis_mm", "perpendicular_axis", "Perpendicular axis", "131189007", "mm", "mm"),
    ("short_axis_mm", "short_axis", "Short axis (largest of the axial sections)", "103340004", "mm", "mm"),
)


def patient(p: PatientView) -> dict:
    kind = "pseudonymous twin key" if p.pseudonymous else "twin key (PACS PatientID)"
    pseudonym = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "PSEUDED"}
    return {
        "resourceType": "Patient",
        "meta": {"security": [pseudonym]} if p.pseudonymous else None,
        "identifier": [{"type": {"text": kind}, "system": PATIENT_KEY_SYSTEM, "value": p.patient_key}],
        "gender": _GENDER.get((p.sex or "").upper(), "unknown") if p.sex else None,
        "birthDate": f"{p.birth_year:04d}" if p.birth_year else None,
    }


def device(model_id: str, version: str, *, kind: str, sha256: list[str]) -> dict:
    return {
        "resourceType": "Device",
        "identifier": [{"system": "urn:twin-imaging:onnx-sha256", "value": s} for s in sha256],
        "displayName": f"{model_id} {version}",
        "name": [{"value": model_id, "type": "user-friendly-name"}],
        "type": [{"text": kind}],
        "version": [{"value": version}],
    }


def imaging_study(study: StudyView, patient: dict) -> dict:
    modalities = study.modalities or tuple(dict.fromkeys(s.modality for s in study.series))
    return {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study.study_instance_uid}"}],
        "status": "available",
        "modality": [{"coding": [_modality(m)]} for m in modalities],
        "subject": patient,
        "started": study.study_date.isoformat() if study.study_date else None,
        "description": study.description,
        "numberOfSeries": len(study.series) if study.series else None,
        "numberOfInstances": sum(s.n_instances for s in study.series) if study.series else None,
        "series": [
            {
                "uid": s.series_instance_uid,
                "number": s.series_number,
                "modality": {"coding": [_modality(s.modality)]},
                "description": s.series_description,
                "numberOfInstances": s.n_instances,
            }
            for s in study.series
        ],
    }


def measurement(
    a: AnalysisView, m: MeasurementView, study: StudyView, *, patient: dict, device: dict, study_ref: dict
) -> dict:
    volume = _finite(m.volume_ml)
    components = []
    for field, code, display, snomed, ucum, unit in _COMPONENTS:
        value = _finite(getattr(m, field))
        if value is not None:
            coding = [{"system": MEASUREMENT_SYSTEM, "code": code, "display": display}]
            if snomed:
                coding.append({"system": SNOMED, "code": snomed})
            components.append({"code": {"coding": coding}, "valueQuantity": _quantity(value, unit, ucum)})
    review = [r.message for r in a.review_reasons or () if m.structure in r.structures]
    laterality = _laterality_concept(m.laterality)
    site_text = f"{m.snomed_meaning}, {m.laterality.lower()}" if m.laterality else m.snomed_meaning
    absent = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-a-number"}]
    }
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:twin-imaging:analysis-measurement", "value": f"{a.analysis_id}/{m.structure}"}],
        # superseded: measured on part of a series whose other instances arrived later
        "status": "preliminary" if a.superseded_by else "final",
        "category": [_IMAGING],
        "code": {
            "coding": [
                {"system": MEASUREMENT_SYSTEM, "code": "volume", "display": "Volume"},
                {"system": SNOMED, "code": "118565006", "display": "Volume"},
            ],
            "text": f"{m.structure} volume",
        },
        "subject": patient,
        "effectiveDateTime": _effective(study, a),
        "issued": _instant(a.finished_at or a.started_at),
        "bodySite": {
            "extension": [{"url": LATERALITY_URL, "valueCodeableConcept": laterality}] if laterality else None,
            "coding": [{"system": SNOMED, "code": m.snomed_code, "display": m.snomed_meaning}],
            "text": site_text,
        },
        "device": device,
        "derivedFrom": [study_ref],
        "valueQuantity": _quantity(volume, "mL", "mL") if volume is not None else None,
        "dataAbsentReason": absent if volume is None else None,
        "component": components,
        "note": [{"text": f"Review required: {message}."} for message in review] or None,
    }


def report(a: AnalysisView, study: StudyView, results: list[dict], patient: dict, study_url: str) -> dict:
    provenance = (
        f"Analysis {a.analysis_id} of series {a.series_instance_uid} ({len(a.input_uids)} instances) by model "
        f"{a.model_id} {a.model_version}, twin-imaging {a.code_version}."
    )
    return {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": "urn:twin-imaging:analysis", "value": str(a.analysis_id)}],
        "status": "partial" if a.superseded_by else "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0074", "code": "RAD"}]}],
        "code": {
            "coding": [{"system": LOINC, "code": "18748-4", "display": "Diagnostic imaging study"}],
            "text": f"Automated organ segmentation and measurement ({a.model_id} {a.model_version})",
        },
        "subject": patient,
        "effectiveDateTime": _effective(study, a),
        "issued": _instant(a.finished_at or a.started_at),
        "study": [{"reference": study_url}],
        "result": results,
        "note": [
            {"text": provenance},
            *({"text": f"Review required: {r.message}."} for r in a.review_reasons or ()),
            *_history_notes(a),
        ],
        "conclusion": _conclusion(a),
    }


def _history_notes(a: AnalysisView) -> list[dict]:
    notes = []
    if a.superseded_by:
        notes.append(
            {"text": f"Superseded by analysis {a.superseded_by}: more instances of the series arrived after this one."}
        )
    if a.supersedes:
        notes.append({"text": f"Supersedes analysis {', '.join(a.supersedes)}, made from fewer instances."})
    return notes


def _conclusion(a: AnalysisView) -> str:
    if a.review_required is None:
        return f"Not quality-reviewed (attached before the review existed). {RESEARCH_ONLY}"
    if a.review_required:
        return f"Review required before use ({len(a.review_reasons or ())} reasons in the notes). {RESEARCH_ONLY}"
    return RESEARCH_ONLY


def risk(p: PredictionView, patient: dict, device: dict, basis: list[dict] | None) -> dict:
    target = {"coding": [{"system": PREDICTION_TARGET_SYSTEM, "code": p.target}], "text": p.target}
    bounds = [(name, _finite(v)) for name, v in (("lower", p.lower), ("upper", p.upper))]
    bounds = [{"url": name, "valueDecimal": v} for name, v in bounds if v is not None]
    interval = " – ".join(f"{b['url']} {b['valueDecimal']:g}" for b in bounds)
    if p.probability is not None:
        note = f"Scenario: {p.scenario}." + (f" Probability interval: {interval}." if bounds else "")
        said = {"probabilityDecimal": _finite(p.probability)}
        extensions = [{"url": PROBABILITY_INTERVAL_URL, "extension": bounds} if bounds else None]
    else:
        # FHIR R4's RiskAssessment has no element for a predicted quantity: an extension carries it (and its
        # interval, in the same unit), and the rationale says it in words
        unit = p.unit or ""
        note = f"Scenario: {p.scenario}. Predicted {p.target}: {p.value:g} {unit}" + (
            f" (interval: {interval} {unit})." if bounds else "."
        )
        said = {}
        extensions = [
            {"url": PREDICTED_VALUE_URL, "valueQuantity": _quantity(p.value, unit, unit)},
            {"url": PREDICTED_INTERVAL_URL, "extension": bounds} if bounds else None,
        ]
    return {
        "resourceType": "RiskAssessment",
        "identifier": [{"system": "urn:twin-imaging:prediction", "value": str(p.prediction_id)}],
        "status": "final",
        "code": target,
        "method": {"text": f"{p.model_id} {p.model_version}"},
        "subject": patient,
        "occurrenceDateTime": _instant(p.created_at),
        "performer": device,
        "basis": basis,
        "prediction": [
            {
                "extension": [{"url": SCENARIO_URL, "valueString": p.scenario}, *extensions],
                "outcome": target,
                **said,
                "rationale": f"scenario: {p.scenario}",
            }
        ],
        "note": [{"text": note + " Research use only; not for clinical decisions."}],
    }


def clinical_observation(o: ObservationView, patient: dict) -> dict:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:twin-imaging:observation", "value": str(o.observation_id)}],
        "status": "final",
        "code": {"coding": [{"system": o.code_system, "code": o.code, "display": o.display}], "text": o.display},
        "subject": patient,
        "effectiveDateTime": _instant(o.effective_at),
        "valueQuantity": _quantity(o.value, o.unit, o.unit),
    }


def procedure(p: ProcedureView, patient: dict) -> dict:
    laterality = _laterality_concept(p.laterality)
    return {
        "resourceType": "Procedure",
        "identifier": [{"system": "urn:twin-imaging:procedure", "value": str(p.procedure_id)}],
        "status": "completed",
        "code": {"coding": [{"system": p.code_system, "code": p.code, "display": p.display}], "text": p.display},
        "subject": patient,
        "occurrenceDateTime": p.performed_on.isoformat(),
        "bodySite": [laterality] if laterality else None,
    }


def flag(alert: AlertView, patient: dict) -> dict:
    code, display = _PRIORITY.get(alert.severity, ("PN", "No alarm"))
    priority = {"coding": [{"system": "http://hl7.org/fhir/flag-priority-code", "code": code, "display": display}]}
    return {
        "resourceType": "Flag",
        "extension": [{"url": FLAG_PRIORITY_URL, "valueCodeableConcept": priority}],
        "identifier": [{"system": "urn:twin-imaging:alert", "value": str(alert.alert_id)}],
        "status": "active",
        "category": [{"text": f"twin-imaging alert ({alert.severity})"}],
        "code": {"coding": [{"system": ALERT_RULE_SYSTEM, "code": alert.rule}], "text": alert.message},
        "subject": patient,
        "period": {"start": _instant(alert.created_at)},
    }


def _modality(code: str) -> dict:
    return {"system": DCM, "code": code, "display": _MODALITY.get(code)}


def _laterality_concept(laterality: str | None) -> dict | None:
    if not laterality:
        return None
    known = _LATERALITY.get(laterality.strip().lower())
    coding = [{"system": SNOMED, "code": known[0], "display": known[1]}] if known else None
    return {"coding": coding, "text": laterality}


def _quantity(value: float, unit: str, ucum: str) -> dict:
    return {"value": value, "unit": unit, "system": UCUM if ucum else None, "code": ucum}


def _effective(study: StudyView, a: AnalysisView) -> str:
    return study.study_date.isoformat() if study.study_date else _instant(a.started_at)


def _instant(value: datetime) -> str:
    aware = value if value.tzinfo else value.replace(tzinfo=UTC)
    return aware.isoformat().replace("+00:00", "Z")


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def compact(value: Any) -> Any:
    """Drop None, empty strings, lists and dicts (FHIR allows no empty elements), recursively."""
    if isinstance(value, dict):
        items = ((k, compact(v)) for k, v in value.items())
        return {k: v for k, v in items if v is not None and v != "" and v != [] and v != {}}
    if isinstance(value, list):
        items = (compact(v) for v in value)
        return [v for v in items if v is not None and v != "" and v != [] and v != {}]
    return value


# ----------------------------------------------------------------------------------------------------------- import
