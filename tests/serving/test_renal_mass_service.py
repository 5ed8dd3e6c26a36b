"""The surgical path through the service: a study with a renal mass, analysed by a service whose site default is the
renal cascade (TWIN_IMAGING_DEFAULT_SEGMENTATION_MODEL, as a hospital opting in sets it), runs the scenarios; a
radiologist's SEG, uploaded or sent by STOW-RS, replaces the model's masks and they run again."""

from __future__ import annotations

import io
from collections.abc import Iterator

import httpx
import pydicom
import pytest

from serving.launch import start_server
from tests.conftest import NEEDS_RENAL_MASS_MODEL, renal_mass_model
from tests.serving.conftest import GEOMETRY, Api, files_of, multipart_related
from tests.test_expert_intake import KIDNEYS_AND_TUMOUR, TUMOUR
from twin_imaging.settings import get_settings
from twin_imaging.testing import PatientSpec, PhantomAnatomy, SeriesSpec, StudySpec, write_phantom_study
from twin_imaging.testing.expert_seg import radiologist_seg


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[Api]:
    """A real `bentoml serve` of a site whose default model is the renal cascade (the product default where none is
    installed: the SEG tests below need no model mask)."""
    model = renal_mass_model() or get_settings().default_segmentation_model
    root = tmp_path_factory.mktemp("api_renal")
    server = start_server(
        root,
        env={"TWIN_IMAGING_DEFAULT_SEGMENTATION_MODEL": model, "TWIN_IMAGING_SERVE_STUDY_QUIET_SECONDS": "0.5"},
    )
    try:
        with httpx.Client(base_url=server.url, timeout=300) as client:
            yield Api(client, server.keys, root / "data")
    finally:
        server.stop()


MASS_PATIENT = PatientSpec(patient_id="API-MASS-1", patient_birth_date="19560101", patient_sex="F")


@pytest.fixture(scope="module")
def mass_study(api, tmp_path_factory):
    root = tmp_path_factory.mktemp("api_mass")
    study = write_phantom_study(
        root / "study",
        (SeriesSpec(geometry=GEOMETRY),),
        patient=MASS_PATIENT,
        study=StudySpec(study_date="20250601", accession_number="MASS01"),
        anatomy=PhantomAnatomy().with_structure(TUMOUR),
        seed=21,
    )
    analysed = api.post("/v1/analyze", "integration", files=files_of(root / "study"))
    assert analysed.status_code == 200, analysed.text
    observation = {  # the API files labs only for a patient it knows: after the first study
        "patient_id": MASS_PATIENT.patient_id,
        "code": "62238-1",
        "display": "eGFR",
        "value": 64.0,
        "unit": "mL/min/1.73 m2",
        "effective_at": "2025-05-20T08:00:00Z",
    }
    recorded = api.post("/v1/twin/observations", "clinician", json=observation)
    assert recorded.status_code == 200, recorded.text
    return study, analysed.json(), recorded.json()


@NEEDS_RENAL_MASS_MODEL
def test_a_renal_mass_the_model_finds_runs_the_scenarios_in_the_analyze_answer(mass_study):
    _, analysed, labs = mass_study
    scenarios = analysed["surgical_scenarios"]
    assert scenarios is not None and scenarios["computed"], scenarios
    assert scenarios["mask_source"] == "model"
    assert "preop_egfr_ml_min_1_73m2" in scenarios["inputs"]["missing"]  # no eGFR on the twin at analysis time
    assert not scenarios["new_baseline_egfr"] and "eGFR" in scenarios["new_baseline_egfr_missing"]
    probabilities = {(p["target"], p["scenario"]) for p in scenarios["predictions"]}
    assert ("egfr_decline", "partial_nephrectomy") in probabilities and (
        "egfr_decline",
        "radical_nephrectomy",
    ) in probabilities
    (recomputed,) = labs["surgical_scenarios_recomputed"]  # the eGFR that came after the scan
    assert recomputed["mask_source"] == "model" and recomputed["analysis_id"] == analysed["analysis_id"]
    egfr = {e["scenario"]: e["egfr_ml_min_1_73m2"] for e in recomputed["new_baseline_egfr"]}
    assert 0 < egfr["radical_nephrectomy"] < egfr["partial_nephrectomy"]
    assert analysed["review_required"]
    assert "renal_mass_not_validated" in [r["code"] for r in analysed["review_reasons"]]


def _seg(study, **kwargs) -> bytes:
    sources = [pydicom.dcmread(p) for p in study.paths]
    seg = radiologist_seg(sources, study.series[0].phantom.labels, KIDNEYS_AND_TUMOUR, **kwargs)
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_an_uploaded_seg_recomputes_the_scenarios_on_the_twin(api, mass_study):
    study, analysed, _ = mass_study
    response = api.post(
        "/v1/analyses/expert_seg", "clinician", files=[("seg", ("reading.dcm", _seg(study), "application/dicom"))]
    )
    assert response.status_code == 200, response.text
    receipt = response.json()
    assert receipt["analysis_id"] == analysed["analysis_id"] and receipt["received_via"] == "api"
    scenarios = receipt["scenarios"]
    assert scenarios["computed"] and scenarios["inputs"]["sources"]["preop_egfr_ml_min_1_73m2"].startswith("eGFR 64")
    twin = api.post("/v1/twin/get", "clinician", json={"patient_id": MASS_PATIENT.patient_id}).json()
    egfr = {
        p["scenario"]: p["value"]
        for p in twin["predictions"]
        if p["target"] == "new_baseline_egfr" and p["mask_source"] == scenarios["mask_source"]
    }
    assert 0 < egfr["radical_nephrectomy"] < egfr["partial_nephrectomy"]
    (analysis,) = [a for a in twin["analyses"] if a["analysis_id"] == analysed["analysis_id"]]
    assert analysis["expert_segmentations"][0]["author"] == "Radiologist Rita"
    current = api.post("/v1/twin/scenarios", "clinician", json={"patient_id": MASS_PATIENT.patient_id}).json()
    (entry,) = current["analyses"]
    assert entry["analysis_id"] == analysed["analysis_id"] and entry["mask_source"] == scenarios["mask_source"]
    assert (
        api.post("/v1/twin/scenarios", "integration", json={"patient_id": MASS_PATIENT.patient_id}).status_code == 403
    )


def test_stow_rs_takes_a_seg_and_refuses_one_of_an_unknown_series(api, mass_study):
    study, _, _ = mass_study
    good = _seg(study)
    dataset = pydicom.dcmread(io.BytesIO(_seg(study)))
    dataset.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.826.0.1.3680043.99.2"
    stray = io.BytesIO()
    dataset.save_as(stray)
    body, content_type = multipart_related([("application/dicom", good), ("application/dicom", stray.getvalue())])
    response = api.post("/dicomweb/studies", "integration", content=body, headers={"content-type": content_type})
    assert response.status_code == 202, response.text
    (stored,) = response.json()["00081199"]["Value"]
    assert stored["00081155"]["Value"] == [pydicom.dcmread(io.BytesIO(good)).SOPInstanceUID]
    (failed,) = response.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [0xC000]
    assert failed["00000902"]["Value"][0].startswith("no completed analysis of series")


def test_an_upload_for_a_series_analysed_for_another_tenant_is_unknown_to_an_own_scope_key(api, mass_study):
    from twin_imaging.access import ApiKeyRegistry

    study, _, _ = mass_study
    registry = ApiKeyRegistry.load(api.data_dir.parent / "keys.json")  # the server's key file (start_server)
    other = {"X-API-Key": registry.create("router-c", role="integration")}
    try:
        files = [("seg", ("r.dcm", _seg(study), "application/dicom"))]
        response = api.client.post("/v1/analyses/expert_seg", files=files, headers=other)
        assert response.status_code == 422 and "no completed analysis" in response.json()["error"]
    finally:
        registry.revoke("router-c")
