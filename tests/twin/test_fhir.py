"""FHIR export of a twin (valid R5, linked by fullUrls, deterministic) and import of Observations and Procedures."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from fhir.resources import get_fhir_model_class
from fhir.resources.bundle import Bundle

from twin_imaging.errors import InputError
from twin_imaging.twin.fhir import SKIP_OWN_MEASUREMENT, export_bundle, parse_bundle
from twin_imaging.twin.views import (
    AlertView,
    AnalysisView,
    ArtifactView,
    MeasurementView,
    ObservationInput,
    ObservationView,
    PatientView,
    PredictionView,
    ProcedureInput,
    ProcedureView,
    ReviewReasonView,
    SeriesView,
    StudyView,
    TwinSummary,
)

PRE_STUDY = "1.2.826.0.1.3680043.8.498.1001"
POST_STUDY = "1.2.826.0.1.3680043.8.498.2001"
CUT_KIDNEY = (ReviewReasonView("cut_by_field_of_view", ("kidney_left",), "Left kidney touches the inferior edge"),)
EGFR = ("98979-8", "Glomerular filtration rate/1.73 sq M.predicted [Volume Rate/Area] by CKD-EPI 2021")


def _measurement(structure: str, code: str, meaning: str, laterality: str | None, volume_ml: float) -> MeasurementView:
    return MeasurementView(structure, code, meaning, laterality, volume_ml, 31.5, 12.25, 118.4, 112.0, 58.5, 47.0)


def _analysis(
    analysis_id: int, study_uid: str, when: datetime, left_ml: float, review: tuple[ReviewReasonView, ...] = ()
) -> AnalysisView:
    return AnalysisView(
        analysis_id=analysis_id,
        study_instance_uid=study_uid,
        series_instance_uid=f"{study_uid}.2",
        model_id="abdomen_ct_organs",
        model_version="1.0.0",
        onnx_sha256="ab" * 32,
        code_version="0.1.0",
        input_uids=(f"{study_uid}.2.1", f"{study_uid}.2.2"),
        started_at=when,
        finished_at=when + timedelta(minutes=2),
        status="completed",
        measurements=(
            _measurement("kidney_left", "64033007", "Kidney", "Left", left_ml),
            _measurement("kidney_right", "64033007", "Kidney", "Right", 171.0),
            MeasurementView("liver", "10200004", "Liver", None, 1480.25, 58.0, None, None),
        ),
        artifacts=(ArtifactView("overlay_png", "file:///data/overlay.png", "cd" * 32, 1234, "image/png"),),
        review_required=bool(review),
        review_reasons=review,
    )


def _summary() -> TwinSummary:
    def study(uid: str, day: date) -> StudyView:
        series = (
            SeriesView(f"{uid}.1", "CT", 1, "scout", 2),
            SeriesView(f"{uid}.2", "CT", 2, "abdomen venous 1.0", 120),
        )
        return StudyView(uid, day, "CT abdomen", ("CT",), series)

    pre = datetime(2024, 3, 2, 9, 30, tzinfo=UTC)
    post = datetime(2024, 9, 10, 14, 0, tzinfo=UTC)
    failed = AnalysisView(
        99, POST_STUDY, f"{POST_STUDY}.1", "abdomen_ct_organs", "1.0.0", "ab" * 32, "0.1.0", (), post, None, "failed"
    )
    return TwinSummary(
        patient=PatientView("tw-7f3a9c", pseudonymous=True, sex="F", birth_year=1961),
        studies=(study(PRE_STUDY, date(2024, 3, 1)), study(POST_STUDY, date(2024, 9, 9))),
        analyses=(_analysis(11, PRE_STUDY, pre, 182.5), _analysis(12, POST_STUDY, post, 140.0, CUT_KIDNEY), failed),
        observations=(
            ObservationView(1, EGFR[0], "http://loinc.org", EGFR[1], 78.0, "mL/min/{1.73_m2}", pre, "manual"),
            ObservationView(
                2,
                "2160-0",
                "http://loinc.org",
                "Creatinine [Mass/volume] in Serum or Plasma",
                0.92,
                "mg/dL",
                datetime(2024, 3, 1, 8, 5, tzinfo=UTC),
                "fhir-import",
            ),
        ),
        procedures=(
            ProcedureView(
                1, "81516001", "http://snomed.info/sct", "Partial nephrectomy", date(2024, 4, 15), "Left", "manual"
            ),
        ),
        predictions=(
            PredictionView(
                5, "egfr_decline", "partial_nephrectomy", 0.18, 0.09, 0.31, "kits_outcome", "0.2.0", 11, pre
            ),
            PredictionView(
                6, "major_complication", "radical_nephrectomy", 0.07, None, None, "kits_outcome", "0.2.0", None, pre
            ),
            PredictionView(
                7,
                "new_baseline_egfr",
                "radical_nephrectomy",
                None,
                38.5,
                71.3,
                "kits_outcome",
                "0.2.0",
                11,
                pre,
                value=54.9,
                unit="mL/min/{1.73_m2}",
            ),
        ),
        alerts=(
            AlertView(
                3, "volume_loss_beyond_prediction", "warning", "Left kidney lost 23% volume", post, "kidney_left"
            ),
        ),
    )


@pytest.fixture(scope="module")
def bundle() -> dict:
    return export_bundle(_summary())


def _by_type(bundle: dict, resource_type: str) -> list[tuple[str, dict]]:
    return [(e["fullUrl"], e["resource"]) for e in bundle["entry"] if e["resource"]["resourceType"] == resource_type]


def _references(value) -> list[str]:
    if isinstance(value, dict):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def test_every_entry_and_the_bundle_parse_with_fhir_resources(bundle):
    assert bundle["type"] == "collection"
    Bundle.model_validate(bundle)
    json.dumps(bundle)  # JSON-ready
    for entry in bundle["entry"]:
        resource = entry["resource"]
        get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        assert entry["fullUrl"] == f"urn:uuid:{resource['id']}"
    counts = {}
    for entry in bundle["entry"]:
        counts[entry["resource"]["resourceType"]] = counts.get(entry["resource"]["resourceType"], 0) + 1
    # 2 completed analyses x 3 structures + 2 clinical observations; the failed analysis exports nothing
    assert counts == {
        "Patient": 1,
        "Device": 2,
        "ImagingStudy": 2,
        "Observation": 8,
        "DiagnosticReport": 2,
        "Procedure": 1,
        "RiskAssessment": 3,
        "Flag": 1,
    }


def test_references_resolve_inside_the_bundle(bundle):
    full_urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(full_urls)) == len(full_urls)
    references = _references(bundle["entry"])
    assert references
    assert set(references) <= set(full_urls)


def test_measurement_observations_point_at_their_study_and_model(bundle):
    studies = {r["identifier"][0]["value"]: url for url, r in _by_type(bundle, "ImagingStudy")}
    devices = {r["displayName"]: url for url, r in _by_type(bundle, "Device")}
    measurements = [r for _, r in _by_type(bundle, "Observation") if r.get("category")]
    assert len(measurements) == 6
    for observation in measurements:
        analysis_id, structure = observation["identifier"][0]["value"].split("/")
        study_uid = PRE_STUDY if analysis_id == "11" else POST_STUDY
        assert observation["derivedFrom"] == [{"reference": studies[f"urn:oid:{study_uid}"]}]
        assert observation["device"] == {"reference": devices["abdomen_ct_organs 1.0.0"]}
        assert observation["code"]["text"] == f"{structure} volume"
        assert observation["valueQuantity"]["system"] == "http://unitsofmeasure.org"
        assert observation["valueQuantity"]["code"] == "mL"
        assert observation["category"][0]["coding"][0]["code"] == "imaging"
    left = next(o for o in measurements if o["identifier"][0]["value"] == "12/kidney_left")
    assert left["valueQuantity"]["value"] == 140.0
    assert left["effectiveDateTime"] == "2024-09-09"  # the study date; the analysis time is `issued`
    assert left["issued"] == "2024-09-10T14:02:00Z"
    assert left["bodySite"]["coding"][0]["code"] == "64033007"
    laterality = left["bodySite"]["extension"][0]["valueCodeableConcept"]["coding"][0]
    assert laterality["code"] == "7771000"
    components = {c["code"]["coding"][0]["code"]: c["valueQuantity"] for c in left["component"]}
    assert components["hu_mean"] == {
        "value": 31.5,
        "unit": "HU",
        "system": "http://unitsofmeasure.org",
        "code": "[hnsf'U]",
    }
    assert "max_diameter" not in components and components["greatest_extent"]["value"] == 118.4
    major = next(c for c in left["component"] if c["code"]["coding"][0]["code"] == "major_axis")
    assert major["code"]["coding"][1] == {"system": "http://snomed.info/sct", "code": "131187009"}
    assert major["valueQuantity"]["value"] == 112.0 and major["valueQuantity"]["code"] == "mm"
    assert left["note"] == [{"text": "Review required: Left kidney touches the inferior edge."}]
    earlier = next(o for o in measurements if o["identifier"][0]["value"] == "11/kidney_left")
    assert "note" not in earlier  # analysis 11 needed no review
    liver = next(o for o in measurements if o["identifier"][0]["value"] == "11/liver")
    assert "extension" not in liver["bodySite"]
    assert [c["code"]["coding"][0]["code"] for c in liver["component"]] == ["hu_mean"]


def test_patient_study_device_report_and_risk_mapping(bundle):
    (_, patient), *_ = _by_type(bundle, "Patient")
    assert patient["identifier"] == [
        {"type": {"text": "pseudonymous twin key"}, "system": "urn:twin-imaging:patient-key", "value": "tw-7f3a9c"}
    ]
    assert patient["gender"] == "female"
    assert patient["birthDate"] == "1961"
    assert patient["meta"]["security"][0]["code"] == "PSEUDED"
    assert set(patient) == {"resourceType", "id", "meta", "identifier", "gender", "birthDate"}

    study = next(r for _, r in _by_type(bundle, "ImagingStudy") if r["identifier"][0]["value"].endswith(PRE_STUDY))
    assert study["identifier"][0]["system"] == "urn:dicom:uid"
    assert study["status"] == "available" and study["started"] == "2024-03-01"
    assert study["numberOfInstances"] == 122
    assert study["series"][1] == {
        "uid": f"{PRE_STUDY}.2",
        "number": 2,
        "description": "abdomen venous 1.0",
        "numberOfInstances": 120,
        "modality": {
            "coding": [
                {
                    "system": "http://dicom.nema.org/resources/ontology/DCM",
                    "code": "CT",
                    "display": "Computed Tomography",
                }
            ]
        },
    }

    devices = {r["displayName"]: r for _, r in _by_type(bundle, "Device")}
    assert devices["abdomen_ct_organs 1.0.0"]["identifier"] == [
        {"system": "urn:twin-imaging:onnx-sha256", "value": "ab" * 32}
    ]
    assert devices["abdomen_ct_organs 1.0.0"]["type"] == [{"text": "AI segmentation model"}]
    assert devices["kits_outcome 0.2.0"]["type"] == [{"text": "AI outcome prediction model"}]

    reports = {r["identifier"][0]["value"]: (url, r) for url, r in _by_type(bundle, "DiagnosticReport")}
    report_url, report = reports["11"]
    assert report["code"]["coding"][0]["code"] == "18748-4"
    assert report["conclusion"].startswith("Research use only")
    assert len(report["result"]) == 3 and len(report["study"]) == 1
    _, reviewed = reports["12"]
    assert reviewed["conclusion"].startswith("Review required before use (1 reasons")
    assert {"text": "Review required: Left kidney touches the inferior edge."} in reviewed["note"]

    risks = {r["identifier"][0]["value"]: r for _, r in _by_type(bundle, "RiskAssessment")}
    prediction = risks["5"]["prediction"][0]
    assert prediction["outcome"]["text"] == "egfr_decline"
    assert prediction["probabilityDecimal"] == 0.18
    assert "probabilityRange" not in prediction
    assert prediction["rationale"] == "scenario: partial_nephrectomy"
    extensions = {e["url"]: e for e in prediction["extension"]}
    assert extensions["urn:twin-imaging:fhir:scenario"]["valueString"] == "partial_nephrectomy"
    interval = extensions["urn:twin-imaging:fhir:probability-interval"]["extension"]
    assert interval == [{"url": "lower", "valueDecimal": 0.09}, {"url": "upper", "valueDecimal": 0.31}]
    assert risks["5"]["basis"][0] == {"reference": report_url}
    assert len(risks["5"]["basis"]) == 4
    assert "basis" not in risks["6"]
    assert [e["url"] for e in risks["6"]["prediction"][0]["extension"]] == ["urn:twin-imaging:fhir:scenario"]
    value = risks["7"]["prediction"][0]  # a predicted quantity: in an extension, never as a probability
    assert "probabilityDecimal" not in value
    extensions = {e["url"]: e for e in value["extension"]}
    quantity = extensions["urn:twin-imaging:fhir:predicted-value"]["valueQuantity"]
    assert quantity["value"] == 54.9 and quantity["code"] == "mL/min/{1.73_m2}"
    assert extensions["urn:twin-imaging:fhir:predicted-interval"]["extension"] == [
        {"url": "lower", "valueDecimal": 38.5},
        {"url": "upper", "valueDecimal": 71.3},
    ]
    assert "54.9 mL/min/{1.73_m2}" in risks["7"]["note"][0]["text"]

    (_, procedure), *_ = _by_type(bundle, "Procedure")
    assert procedure["status"] == "completed" and procedure["occurrenceDateTime"] == "2024-04-15"
    assert procedure["bodySite"][0]["coding"][0]["code"] == "7771000"


def test_no_identifiers_beyond_the_key(bundle):
    text = json.dumps(bundle)
    assert "1961-" not in text  # birth year only
    for _, resource in _by_type(bundle, "Patient"):
        assert "name" not in resource and "address" not in resource and "telecom" not in resource


def test_export_is_deterministic_and_naive_times_are_utc():
    assert json.dumps(export_bundle(_summary())) == json.dumps(export_bundle(_summary()))
    other = export_bundle(_summary(), base_url="https://twin.example.org")
    assert {e["fullUrl"] for e in other["entry"]}.isdisjoint({e["fullUrl"] for e in export_bundle(_summary())["entry"]})
    naive = TwinSummary(
        PatientView("PAT-1", pseudonymous=False),
        observations=(
            ObservationView(
                1, "2160-0", "http://loinc.org", "Creatinine", 1.1, "mg/dL", datetime(2024, 1, 2, 3, 4), "manual"
            ),
        ),
    )
    exported = export_bundle(naive)
    (_, observation), *_ = _by_type(exported, "Observation")
    assert observation["effectiveDateTime"] == "2024-01-02T03:04:00Z"
    (_, patient), *_ = _by_type(exported, "Patient")
    assert patient["identifier"][0]["type"]["text"] == "twin key (PACS PatientID)"
    assert "gender" not in patient and "birthDate" not in patient and "meta" not in patient


def test_round_trip_of_clinical_records(bundle):
    summary = _summary()
    records = parse_bundle(json.dumps(bundle))
    assert records.patient_identifier == "tw-7f3a9c"
    expected_observations = tuple(
        ObservationInput(o.code, o.display, o.value, o.unit, o.effective_at, o.code_system, "fhir-import")
        for o in summary.observations
    )
    assert records.observations == expected_observations
    assert records.procedures == (
        ProcedureInput(
            "81516001", "Partial nephrectomy", date(2024, 4, 15), "http://snomed.info/sct", "Left", "fhir-import"
        ),
    )
    own = [s for s in records.skipped if s.endswith(SKIP_OWN_MEASUREMENT)]
    assert len(own) == 6
    assert all(s.startswith("Observation '") for s in own)
    assert sum("resource type not imported" in s for s in records.skipped) == 2 + 2 + 2 + 3 + 1  # 3 RiskAssessments


def _lab_bundle() -> dict:
    lab = {"system": "urn:oid:1.2.3.4.5", "value": "MRN-0042"}

    def observation(oid: str, **fields) -> dict:
        resource = {
            "resourceType": "Observation",
            "id": oid,
            "status": "final",
            "category": [
                {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "laboratory"}
                    ]
                }
            ],
            "subject": {"reference": "Patient/p1"},
        }
        return {"fullUrl": f"https://lab.example.org/fhir/Observation/{oid}", "resource": {**resource, **fields}}

    creatinine = {
        "coding": [
            {"system": "http://acme.lab/codes", "code": "CREA"},
            {"system": "http://loinc.org", "code": "2160-0", "display": "Creatinine [Mass/volume]"},
        ]
    }
    egfr = {"coding": [{"system": "http://loinc.org", "code": "98979-8"}], "text": "eGFR (CKD-EPI 2021)"}
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {
                "fullUrl": "https://lab.example.org/fhir/Patient/p1",
                "resource": {
                    "resourceType": "Patient",
                    "id": "p1",
                    "name": [{"family": "Doe"}],
                    "birthDate": "1961-05-17",
                    "identifier": [
                        {"system": "urn:oid:9.9", "value": "INS-1"},
                        {"type": {"coding": [{"code": "MR"}]}, **lab},
                    ],
                },
            },
            observation(
                "egfr",
                code=egfr,
                effectivePeriod={"start": "2024-05-02T07:45:00+02:00"},
                valueQuantity={
                    "value": 61,
                    "unit": "mL/min/1.73m2",
                    "system": "http://unitsofmeasure.org",
                    "code": "mL/min/{1.73_m2}",
                },
            ),
            observation(
                "crea", code=creatinine, effectiveDateTime="2024-05-02", valueQuantity={"value": 1.12, "unit": "mg/dL"}
            ),
            observation(
                "crea-wrong",
                code=creatinine,
                status="entered-in-error",
                effectiveDateTime="2024-05-01",
                valueQuantity={"value": 11.2, "unit": "mg/dL"},
            ),
            observation(
                "no-value", code=egfr, effectiveDateTime="2024-05-03T08:00:00Z", dataAbsentReason={"text": "haemolysed"}
            ),
            observation("no-time", code=egfr, valueQuantity={"value": 60, "unit": "mL/min"}),
            observation(
                "no-code",
                code={"text": "free text"},
                effectiveDateTime="2024-05-03",
                valueQuantity={"value": 1, "unit": "1"},
            ),
            {
                "fullUrl": "https://lab.example.org/fhir/Procedure/op1",
                "resource": {
                    "resourceType": "Procedure",
                    "id": "op1",
                    "status": "completed",
                    "code": {
                        "coding": [
                            {"system": "http://snomed.info/sct", "code": "116033007", "display": "Radical nephrectomy"}
                        ]
                    },
                    "subject": {"reference": "Patient/p1"},
                    "occurrencePeriod": {"start": "2024-06-01T08:00:00Z"},
                    "bodySite": [{"coding": [{"system": "http://snomed.info/sct", "code": "24028007"}]}],
                },
            },
            {
                "fullUrl": "https://lab.example.org/fhir/Procedure/op2",
                "resource": {
                    "resourceType": "Procedure",
                    "id": "op2",
                    "status": "not-done",
                    "code": {"text": "biopsy"},
                    "subject": {"reference": "Patient/p1"},
                },
            },
        ],
    }


def test_import_of_an_external_lab_bundle():
    records = parse_bundle(_lab_bundle())
    assert records.patient_identifier == "MRN-0042"  # the medical record number
    assert records.observations == (
        ObservationInput(
            "98979-8",
            "eGFR (CKD-EPI 2021)",
            61.0,
            "mL/min/{1.73_m2}",
            datetime(2024, 5, 2, 5, 45, tzinfo=UTC),
            source="fhir-import",
        ),
        ObservationInput(
            "2160-0", "Creatinine [Mass/volume]", 1.12, "mg/dL", datetime(2024, 5, 2, tzinfo=UTC), source="fhir-import"
        ),
    )
    assert records.observations[0].effective_at.utcoffset() == timedelta(hours=2)  # the sender's offset is kept
    assert records.procedures == (
        ProcedureInput("116033007", "Radical nephrectomy", date(2024, 6, 1), laterality="Right", source="fhir-import"),
    )
    assert records.skipped == (
        "Observation 'crea-wrong': status entered-in-error",
        "Observation 'no-value': no valueQuantity value",
        "Observation 'no-time': no effective time",
        "Observation 'no-code': no coded code (a coding with system and code)",
        "Procedure 'op2': status not-done",
    )


def test_import_of_single_resources_and_r4_procedures():
    observation = _lab_bundle()["entry"][1]["resource"]
    records = parse_bundle(json.dumps(observation).encode())
    assert len(records.observations) == 1 and records.patient_identifier is None
    r4_procedure = {
        "resourceType": "Procedure",
        "status": "completed",
        "performedDateTime": "2023-11-20T10:00:00+01:00",
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "81516001"}], "text": "PN"},
        "subject": {"identifier": {"system": "urn:oid:1.2.3.4.5", "value": "MRN-0042"}},
    }
    records = parse_bundle(r4_procedure)
    assert records.procedures == (ProcedureInput("81516001", "PN", date(2023, 11, 20), source="fhir-import"),)
    assert records.patient_identifier == "MRN-0042"


def test_a_bundle_of_two_patients_is_refused():
    document = _lab_bundle()
    other = copy.deepcopy(document["entry"][1])
    other["fullUrl"] = "https://lab.example.org/fhir/Observation/other"
    other["resource"].update(id="other", subject={"reference": "Patient/p2"})
    document["entry"].append(other)
    with pytest.raises(InputError, match="2 different patients"):
        parse_bundle(document)
    document = _lab_bundle()
    document["entry"].append({"resource": {"resourceType": "Patient", "identifier": [{"value": "someone-else"}]}})
    with pytest.raises(InputError, match="2 different patients"):
        parse_bundle(document)


def test_same_patient_by_identifier_or_reference_is_one_patient():
    document = _lab_bundle()
    document["entry"][2]["resource"]["subject"] = {"identifier": {"system": "urn:oid:1.2.3.4.5", "value": "MRN-0042"}}
    document["entry"][3]["resource"]["subject"] = {"reference": "https://lab.example.org/fhir/Patient/p1/_history/3"}
    assert len(parse_bundle(document).observations) == 2
    document["entry"][2]["resource"]["subject"] = {"reference": "Group/ward-3"}
    assert "Observation 'crea': subject is not a patient" in parse_bundle(document).skipped


def test_censored_values_are_skipped_not_stored_as_exact():
    document = _lab_bundle()
    document["entry"][1]["resource"]["valueQuantity"]["comparator"] = ">"
    records = parse_bundle(document)
    assert [o.code for o in records.observations] == ["2160-0"]
    assert records.skipped[0].startswith("Observation 'egfr': valueQuantity has comparator '>'")


def test_two_anonymous_patient_resources_are_two_patients():
    anonymous = {"resource": {"resourceType": "Patient", "gender": "male"}}
    document = {"resourceType": "Bundle", "type": "collection", "entry": [anonymous, copy.deepcopy(anonymous)]}
    with pytest.raises(InputError, match="2 different patients"):
        parse_bundle(document)
    document["entry"].pop()
    assert parse_bundle(document) == parse_bundle(document)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("[1, 2]", "JSON object, not list"),
        ({"resourceType": "Condition"}, "expected a FHIR Bundle, Observation or Procedure"),
        (
            {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Nope"}}]},
            "unknown FHIR resource type 'Nope'",
        ),
        ({"resourceType": "Bundle", "entry": []}, "Bundle is not valid FHIR: field 'type'"),
    ],
)
def test_bad_documents_are_input_errors(document, message):
    with pytest.raises(InputError, match=message):
        parse_bundle(document)


def test_an_invalid_resource_names_the_resource_and_field_briefly():
    document = _lab_bundle()
    document["entry"][2]["resource"]["effectiveDateTime"] = "yesterday"
    with pytest.raises(InputError) as caught:
        parse_bundle(document)
    message = str(caught.value)
    assert message.startswith("Observation 'crea' is not valid FHIR: field 'effectiveDateTime'")
    assert "\n" not in message and len(message) < 300
    document = _lab_bundle()
    document["entry"][1]["resource"]["valueQuantity"]["value"] = "sixty"
    document["entry"][1]["resource"]["bogus"] = 1
    with pytest.raises(InputError, match=r"Observation 'egfr' is not valid FHIR: field .* \(and 1 more problems\)"):
        parse_bundle(document)


def test_times_keep_their_offset_as_a_plain_timezone():
    records = parse_bundle(_lab_bundle())
    tz = records.observations[0].effective_at.tzinfo
    assert isinstance(tz, timezone)
