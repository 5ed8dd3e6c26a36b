"""FHIR R5 for the twin: a patient's twin out as a Bundle; clinical Observations and Procedures in from one.

bundle = export_bundle(summary)          # JSON-ready dict, every resource built and checked with fhir.resources
records = parse_bundle(document)         # ImportedRecords: ObservationInputs, ProcedureInputs, skipped reasons

Export (a Bundle of type "collection"; every entry's fullUrl is ``urn:uuid:<uuid5>`` of ``<base_url>/<type>/<twin id>``,
the resource id is that uuid, and entries reference each other by those fullUrls):
- Patient: one identifier, the twin's key (system ``urn:twin-imaging:patient-key``; type text says whether it is a
  pseudonym, and a pseudonym adds the v3 PSEUDED security label); gender from DICOM sex; birthDate as the year only.
- ImagingStudy per study (and a bare one for a study an analysis names but the summary lacks): identifier
  ``urn:oid:<StudyInstanceUID>`` in system ``urn:dicom:uid``, status available, started = study date, modalities and
  series (uid, number, modality in the DICOM DCM system, description, numberOfInstances).
- Device per model (id + version): type text "AI segmentation model" or "AI outcome prediction model", displayName,
  version, identifier = the ONNX sha256 (system ``urn:twin-imaging:onnx-sha256``) where known.
- Observation per structure measured by a completed analysis (failed analyses are not exported): category imaging,
  code ``urn:twin-imaging:measurement#volume`` (+ SNOMED 118565006 Volume; text "<structure> volume"), valueQuantity
  in mL, and components for mean and SD attenuation ([hnsf'U]) and maximum diameter (mm) in the same local system;
  bodySite = the structure's SNOMED code with laterality in the core observation-structureLaterality extension;
  device = the model's Device; derivedFrom = the ImagingStudy; identifier ``<analysis id>/<structure>`` in system
  ``urn:twin-imaging:analysis-measurement``. effectiveDateTime is the study date (when the anatomy was imaged; the
  analysis time where the date is unknown) and ``issued`` the analysis time, so a re-analysis of an old study still
  sits at that study on a timeline.
- DiagnosticReport per completed analysis: LOINC 18748-4 "Diagnostic imaging study", category RAD, study = the
  ImagingStudy, result = its Observations, a provenance note, and the research-use-only conclusion.
- RiskAssessment per prediction: code and prediction.outcome = the target (system ``urn:twin-imaging:prediction-
  target``), probabilityDecimal, the scenario in prediction.rationale and the ``urn:twin-imaging:fhir:scenario``
  extension, the interval in the ``urn:twin-imaging:fhir:probability-interval`` extension (sub-extensions lower and
  upper) and in a note (probabilityRange would exclude the decimal), performer = the prediction model's Device,
  basis = the report and Observations of its analysis where that was exported.
- Observation per clinical observation (its own code, UCUM valueQuantity, effectiveDateTime); Procedure per
  procedure (status completed, occurrenceDateTime, bodySite = the SNOMED laterality qualifier); Flag per alert (code =
  rule, text = message, the core flag-priority extension from the severity).
Naive datetimes are taken as UTC (FHIR requires an offset on times).

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
import math
import re
import uuid
from datetime import UTC, date, datetime, timezone
from typing import Any

from fhir.resources import get_fhir_model_class
from fhir.resources.R4B import get_fhir_model_class as get_r4b_model_class
from pydantic import ValidationError

from twin_imaging.errors import InputError
from twin_imaging.twin.views import (
    AlertView,
    AnalysisView,
    ImportedRecords,
    MeasurementView,
    ObservationInput,
    ObservationView,
    PatientView,
    PredictionView,
    ProcedureInput,
    ProcedureView,
    StudyView,
    TwinSummary,
)

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
UCUM = "http://unitsofmeasure.org"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
PATIENT_KEY_SYSTEM = "urn:twin-imaging:patient-key"
MEASUREMENT_SYSTEM = "urn:twin-imaging:measurement"
PREDICTION_TARGET_SYSTEM = "urn:twin-imaging:prediction-target"
ALERT_RULE_SYSTEM = "urn:twin-imaging:alert-rule"
PROBABILITY_INTERVAL_URL = "urn:twin-imaging:fhir:probability-interval"
SCENARIO_URL = "urn:twin-imaging:fhir:scenario"
LATERALITY_URL = "http://hl7.org/fhir/StructureDefinition/observation-structureLaterality"
FLAG_PRIORITY_URL = "http://hl7.org/fhir/StructureDefinition/flag-priority"
RESEARCH_ONLY = "Research use only — automated organ segmentation; not for diagnosis"
SKIP_OWN_MEASUREMENT = "imaging measurement produced by twin-imaging"

_IMAGING = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "imaging"}]}
_GENDER = {"M": "male", "F": "female", "O": "other"}
_LATERALITY = {"left": ("7771000", "Left"), "right": ("24028007", "Right"), "bilateral": ("51440002", "Right and left")}
_LATERALITY_BY_CODE = {"7771000": "Left", "24028007": "Right", "51440002": "Bilateral"}
_MODALITY = {"CT": "Computed Tomography", "MR": "Magnetic Resonance", "PT": "Positron emission tomography",
             "US": "Ultrasound", "SEG": "Segmentation", "SR": "SR Document", "OT": "Other"}  # fmt: skip
_PRIORITY = {"info": ("PL", "Low priority"), "warning": ("PM", "Medium priority"), "critical": ("PH", "High priority")}
_COMPONENTS = (  # MeasurementView field, local code, display, UCUM code, unit
    ("hu_mean", "hu_mean", "Mean attenuation", "[hnsf'U]", "HU"),
    ("hu_std", "hu_std", "Attenuation standard deviation", "[hnsf'U]", "HU"),
    ("max_diameter_mm", "max_diameter", "Maximum diameter", "mm", "mm"),
)
_OBSERVATION_STATUSES = {"final", "amended", "corrected", "appended"}


def export_bundle(summary: TwinSummary, *, base_url: str = "urn:twin-imaging") -> dict:
    """The twin as a FHIR R5 collection Bundle (JSON-ready); the same summary always gives the same bundle."""

    def urn(kind: str, *parts: object) -> str:
        return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join([base_url, kind, *map(str, parts)])))

    entries: list[tuple[str, dict]] = []
    patient = {"reference": urn("Patient", summary.patient.patient_key)}
    entries.append((patient["reference"], _patient(summary.patient)))

    analyses = [a for a in summary.analyses if a.status == "completed"]
    models: dict[tuple[str, str], dict] = {}
    for a in analyses:
        models.setdefault((a.model_id, a.model_version), {"kind": "AI segmentation model", "sha256": []})
        if a.onnx_sha256 and a.onnx_sha256 not in models[a.model_id, a.model_version]["sha256"]:
            models[a.model_id, a.model_version]["sha256"].append(a.onnx_sha256)
    for p in summary.predictions:
        models.setdefault((p.model_id, p.model_version), {"kind": "AI outcome prediction model", "sha256": []})
    for (model_id, version), model in models.items():
        entries.append((urn("Device", model_id, version), _device(model_id, version, **model)))

    studies = {s.study_instance_uid: s for s in summary.studies}
    for a in analyses:
        studies.setdefault(a.study_instance_uid, StudyView(a.study_instance_uid, None, "", (), ()))
    for uid, study in studies.items():
        entries.append((urn("ImagingStudy", uid), _imaging_study(study, patient)))

    basis: dict[int, list[dict]] = {}
    for a in analyses:
        study, device = studies[a.study_instance_uid], {"reference": urn("Device", a.model_id, a.model_version)}
        results = []
        for m in a.measurements:
            full_url = urn("Observation", f"analysis-{a.analysis_id}", m.structure)
            study_ref = {"reference": urn("ImagingStudy", a.study_instance_uid)}
            entries.append((full_url, _measurement(a, m, study, patient=patient, device=device, study_ref=study_ref)))
            results.append({"reference": full_url})
        report_url = urn("DiagnosticReport", a.analysis_id)
        entries.append((report_url, _report(a, study, results, patient, urn("ImagingStudy", a.study_instance_uid))))
        basis[a.analysis_id] = [{"reference": report_url}, *results]

    for o in summary.observations:
        entries.append((urn("Observation", o.observation_id), _clinical_observation(o, patient)))
    for p in summary.procedures:
        entries.append((urn("Procedure", p.procedure_id), _procedure(p, patient)))
    for p in summary.predictions:
        device = {"reference": urn("Device", p.model_id, p.model_version)}
        entries.append((urn("RiskAssessment", p.prediction_id), _risk(p, patient, device, basis.get(p.analysis_id))))
    for alert in summary.alerts:
        entries.append((urn("Flag", alert.alert_id), _flag(alert, patient)))

    document = {
        "resourceType": "Bundle",
        "id": urn("Bundle", summary.patient.patient_key).removeprefix("urn:uuid:"),
        "type": "collection",
        "entry": [
            {"fullUrl": url, "resource": {**_compact(res), "id": url.removeprefix("urn:uuid:")}} for url, res in entries
        ],
    }
    bundle = get_fhir_model_class("Bundle").model_validate(document)
    return bundle.model_dump(mode="json", exclude_none=True)


def _patient(p: PatientView) -> dict:
    kind = "pseudonymous twin key" if p.pseudonymous else "twin key (PACS PatientID)"
    pseudonym = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "PSEUDED"}
    return {
        "resourceType": "Patient",
        "meta": {"security": [pseudonym]} if p.pseudonymous else None,
        "identifier": [{"type": {"text": kind}, "system": PATIENT_KEY_SYSTEM, "value": p.patient_key}],
        "gender": _GENDER.get((p.sex or "").upper(), "unknown") if p.sex else None,
        "birthDate": f"{p.birth_year:04d}" if p.birth_year else None,
    }


def _device(model_id: str, version: str, *, kind: str, sha256: list[str]) -> dict:
    return {
        "resourceType": "Device",
        "identifier": [{"system": "urn:twin-imaging:onnx-sha256", "value": s} for s in sha256],
        "displayName": f"{model_id} {version}",
        "name": [{"value": model_id, "type": "user-friendly-name"}],
        "type": [{"text": kind}],
        "version": [{"value": version}],
    }


def _imaging_study(study: StudyView, patient: dict) -> dict:
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


def _measurement(
    a: AnalysisView, m: MeasurementView, study: StudyView, *, patient: dict, device: dict, study_ref: dict
) -> dict:
    volume = _finite(m.volume_ml)
    components = []
    for field, code, display, ucum, unit in _COMPONENTS:
        value = _finite(getattr(m, field))
        if value is not None:
            coding = {"system": MEASUREMENT_SYSTEM, "code": code, "display": display}
            components.append({"code": {"coding": [coding]}, "valueQuantity": _quantity(value, unit, ucum)})
    laterality = _laterality_concept(m.laterality)
    site_text = f"{m.snomed_meaning}, {m.laterality.lower()}" if m.laterality else m.snomed_meaning
    absent = {
        "coding": [{"system": "http://terminology.hl7.org/CodeSystem/data-absent-reason", "code": "not-a-number"}]
    }
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:twin-imaging:analysis-measurement", "value": f"{a.analysis_id}/{m.structure}"}],
        "status": "final",
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
    }


def _report(a: AnalysisView, study: StudyView, results: list[dict], patient: dict, study_url: str) -> dict:
    provenance = (
        f"Analysis {a.analysis_id} of series {a.series_instance_uid} ({len(a.input_uids)} instances) by model "
        f"{a.model_id} {a.model_version}, twin-imaging {a.code_version}."
    )
    return {
        "resourceType": "DiagnosticReport",
        "identifier": [{"system": "urn:twin-imaging:analysis", "value": str(a.analysis_id)}],
        "status": "final",
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
        "note": [{"text": provenance}],
        "conclusion": RESEARCH_ONLY,
    }


def _risk(p: PredictionView, patient: dict, device: dict, basis: list[dict] | None) -> dict:
    target = {"coding": [{"system": PREDICTION_TARGET_SYSTEM, "code": p.target}], "text": p.target}
    bounds = [(name, _finite(v)) for name, v in (("lower", p.lower), ("upper", p.upper))]
    bounds = [{"url": name, "valueDecimal": v} for name, v in bounds if v is not None]
    interval = " – ".join(f"{b['url']} {b['valueDecimal']:g}" for b in bounds)
    note = f"Scenario: {p.scenario}." + (f" Probability interval: {interval}." if bounds else "")
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
                "extension": [
                    {"url": SCENARIO_URL, "valueString": p.scenario},
                    {"url": PROBABILITY_INTERVAL_URL, "extension": bounds} if bounds else None,
                ],
                "outcome": target,
                "probabilityDecimal": _finite(p.probability),
                "rationale": f"scenario: {p.scenario}",
            }
        ],
        "note": [{"text": note + " Research use only; not for clinical decisions."}],
    }


def _clinical_observation(o: ObservationView, patient: dict) -> dict:
    return {
        "resourceType": "Observation",
        "identifier": [{"system": "urn:twin-imaging:observation", "value": str(o.observation_id)}],
        "status": "final",
        "code": {"coding": [{"system": o.code_system, "code": o.code, "display": o.display}], "text": o.display},
        "subject": patient,
        "effectiveDateTime": _instant(o.effective_at),
        "valueQuantity": _quantity(o.value, o.unit, o.unit),
    }


def _procedure(p: ProcedureView, patient: dict) -> dict:
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


def _flag(alert: AlertView, patient: dict) -> dict:
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


def _compact(value: Any) -> Any:
    """Drop None, empty strings, lists and dicts (FHIR allows no empty elements), recursively."""
    if isinstance(value, dict):
        items = ((k, _compact(v)) for k, v in value.items())
        return {k: v for k, v in items if v is not None and v != "" and v != [] and v != {}}
    if isinstance(value, list):
        items = (_compact(v) for v in value)
        return [v for v in items if v is not None and v != "" and v != [] and v != {}]
    return value


# ----------------------------------------------------------------------------------------------------------- import

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
