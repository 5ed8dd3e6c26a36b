"""The patient's twin out as a FHIR R5 Bundle.

bundle = export_bundle(summary)          # JSON-ready dict, every resource built and checked with fhir.resources

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
"""

from __future__ import annotations

import uuid

from fhir.resources import get_fhir_model_class

from twin_imaging.twin import fhir_builders as build
from twin_imaging.twin.views import StudyView, TwinSummary


def export_bundle(summary: TwinSummary, *, base_url: str = "urn:twin-imaging") -> dict:
    """The twin as a FHIR R5 collection Bundle (JSON-ready); the same summary always gives the same bundle."""

    def urn(kind: str, *parts: object) -> str:
        return "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join([base_url, kind, *map(str, parts)])))

    entries: list[tuple[str, dict]] = []
    patient = {"reference": urn("Patient", summary.patient.patient_key)}
    entries.append((patient["reference"], build.patient(summary.patient)))

    analyses = [a for a in summary.analyses if a.status == "completed"]
    models: dict[tuple[str, str], dict] = {}
    for a in analyses:
        models.setdefault((a.model_id, a.model_version), {"kind": "AI segmentation model", "sha256": []})
        if a.onnx_sha256 and a.onnx_sha256 not in models[a.model_id, a.model_version]["sha256"]:
            models[a.model_id, a.model_version]["sha256"].append(a.onnx_sha256)
    for p in summary.predictions:
        models.setdefault((p.model_id, p.model_version), {"kind": "AI outcome prediction model", "sha256": []})
    for (model_id, version), model in models.items():
        entries.append((urn("Device", model_id, version), build.device(model_id, version, **model)))

    studies = {s.study_instance_uid: s for s in summary.studies}
    for a in analyses:
        studies.setdefault(a.study_instance_uid, StudyView(a.study_instance_uid, None, "", (), ()))
    for uid, study in studies.items():
        entries.append((urn("ImagingStudy", uid), build.imaging_study(study, patient)))

    basis: dict[int, list[dict]] = {}
    for a in analyses:
        study, device = studies[a.study_instance_uid], {"reference": urn("Device", a.model_id, a.model_version)}
        results = []
        for m in a.measurements:
            full_url = urn("Observation", f"analysis-{a.analysis_id}", m.structure)
            study_ref = {"reference": urn("ImagingStudy", a.study_instance_uid)}
            entries.append(
                (full_url, build.measurement(a, m, study, patient=patient, device=device, study_ref=study_ref))
            )
            results.append({"reference": full_url})
        report_url = urn("DiagnosticReport", a.analysis_id)
        entries.append(
            (report_url, build.report(a, study, results, patient, urn("ImagingStudy", a.study_instance_uid)))
        )
        basis[a.analysis_id] = [{"reference": report_url}, *results]

    for o in summary.observations:
        entries.append((urn("Observation", o.observation_id), build.clinical_observation(o, patient)))
    for p in summary.procedures:
        entries.append((urn("Procedure", p.procedure_id), build.procedure(p, patient)))
    for p in summary.predictions:
        device = {"reference": urn("Device", p.model_id, p.model_version)}
        entries.append(
            (urn("RiskAssessment", p.prediction_id), build.risk(p, patient, device, basis.get(p.analysis_id)))
        )
    for alert in summary.alerts:
        entries.append((urn("Flag", alert.alert_id), build.flag(alert, patient)))

    document = {
        "resourceType": "Bundle",
        "id": urn("Bundle", summary.patient.patient_key).removeprefix("urn:uuid:"),
        "type": "collection",
        "entry": [
            {"fullUrl": url, "resource": {**build.compact(res), "id": url.removeprefix("urn:uuid:")}}
            for url, res in entries
        ],
    }
    bundle = get_fhir_model_class("Bundle").model_validate(document)
    return bundle.model_dump(mode="json", exclude_none=True)
