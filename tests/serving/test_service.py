"""Every endpoint of the inference API in process, and every refusal: each a 4xx with a JSON body naming it."""

from __future__ import annotations

import io
import json
import re
import time

import nibabel as nib
import numpy as np
import pydicom
import pytest
from sqlalchemy import create_engine, select

from tests.conftest import shared_file
from tests.serving.conftest import GEOMETRY, MAX_UPLOAD_BYTES, SYNC_MAX_BYTES, files_of, multipart_related, zip_of
from twin_imaging.twin.schema import AuditEntry


def error_of(response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert isinstance(body, dict) and body["error"], body
    return body["error"]


@pytest.fixture(scope="module")
def analysed(api, studies):
    """The pre- and post-operative phantom studies analysed through the API (files, then a zip)."""
    pre = api.post("/v1/analyze", "integration", files=files_of(studies.pre))
    assert pre.status_code == 200, pre.text
    post = api.post(
        "/v1/analyze", "integration", files=[("files", ("post.zip", zip_of(studies.post), "application/zip"))]
    )
    assert post.status_code == 200, post.text
    return pre.json(), post.json()


# --- health and auth ------------------------------------------------------------------------------------------


def test_health_readiness_metrics_and_openapi_need_no_key(api):
    for path in ("/livez", "/readyz", "/healthz", "/docs.json"):  # /metrics: in the real server's test (it waits
        # on BentoML's metrics client, which only the server process sets up)
        assert api.get(path, None).status_code == 200, path
    paths = api.get("/docs.json", None).json()["paths"]
    assert {"/v1/analyze", "/dicomweb/studies", "/dicomweb/studies/{study}"} <= set(paths)


def test_the_docs_page_makes_no_third_party_request(api):
    """BentoML's own index page loads Google Tag Manager; ours loads only the service's own files, under a CSP."""
    page = api.get("/", None)
    assert page.status_code == 200 and "swagger-ui" in page.text
    assert "googletagmanager" not in page.text and "https://" not in page.text and "http://" not in page.text
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self'" in policy
    for script in ("swagger-ui-bundle.js", "swagger-initializer.js"):
        assert api.get(f"/static_content/{script}", None).status_code == 200, script


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer tik_wrong"}, {"X-API-Key": "nope"}])
def test_a_missing_or_wrong_key_gets_401(api, headers):
    response = api.client.post("/v1/models", json={}, headers=headers)
    assert "API key" in error_of(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("role", "path"),
    [
        ("clinician", "/v1/analyze"),
        ("clinician", "/v1/analyze_job/submit"),
        ("clinician", "/dicomweb/studies"),
        ("integration", "/v1/twin/get"),
        ("integration", "/v1/outcome/predict"),
        ("integration", "/v1/twin/timeline"),
    ],
)
def test_a_role_outside_its_routes_gets_403(api, role, path):
    assert role in error_of(api.post(path, role, json={}), 403)


def test_the_key_can_come_as_x_api_key_and_a_revoked_key_stops_at_once(api, tmp_path):
    from twin_imaging.access import ApiKeyRegistry
    from twin_imaging.settings import get_settings

    assert api.client.post("/v1/models", json={}, headers={"X-API-Key": api.keys["clinician"]}).status_code == 200
    registry = ApiKeyRegistry.load(get_settings().api_keys_file)
    temporary = registry.create("short-lived", role="clinician")
    assert api.client.post("/v1/models", json={}, headers={"X-API-Key": temporary}).status_code == 200
    registry.revoke("short-lived")
    assert api.client.post("/v1/models", json={}, headers={"X-API-Key": temporary}).status_code == 401
    stored = json.loads(get_settings().api_keys_file.read_text())
    assert all(temporary not in json.dumps(e) for e in stored["keys"])  # hashed, never in clear


# --- analysis -------------------------------------------------------------------------------------------------


def test_analyze_attaches_the_study_and_returns_measurements_and_downloads(analysed, studies):
    pre, post = analysed
    assert pre["study_instance_uid"] == studies.pre_uid and post["study_instance_uid"] == studies.post_uid
    assert pre["input_kind"] == "dicom" and post["input_kind"] == "zip"
    volumes = {m["structure"]: m["volume_ml"] for m in pre["measurements"]}
    assert volumes["liver"] > 500 and volumes["kidney_left"] > 50
    # the quality review travels with the answer (its rules are tested in tests/test_quality_review.py)
    assert pre["review_required"] is bool(pre["review_reasons"])
    assert {r["code"] for r in pre["review_reasons"]} <= {"cut_by_field_of_view", "volume_outside_adult_range"}
    aorta = next(m for m in pre["measurements"] if m["structure"] == "aorta")
    assert 10 < aorta["short_axis_mm"] < 40 and aorta["greatest_extent_mm"] > 3 * aorta["short_axis_mm"]
    assert {d["kind"] for d in pre["downloads"]} >= {"dicom_seg", "dicom_sr", "overlay_png", "labels_nifti"}


def test_the_same_study_again_returns_the_same_analysis(api, studies, analysed):
    again = api.post("/v1/analyze", "integration", files=files_of(studies.pre))
    assert again.status_code == 200 and again.json()["analysis_id"] == analysed[0]["analysis_id"]


def test_analysis_and_seg_download(api, analysed, studies):
    analysis_id = analysed[0]["analysis_id"]
    got = api.post("/v1/analyses/get", "integration", json={"analysis_id": analysis_id})
    assert got.status_code == 200 and got.json()["analysis_id"] == analysis_id
    assert got.json()["review_required"] == analysed[0]["review_required"]  # as stored on the twin
    seg = api.post("/v1/artifacts/download", "clinician", json={"analysis_id": analysis_id, "kind": "dicom_seg"})
    assert seg.status_code == 200 and seg.headers["content-type"] == "application/dicom"
    dataset = pydicom.dcmread(io.BytesIO(seg.content))
    assert dataset.Modality == "SEG" and dataset.StudyInstanceUID == studies.pre_uid
    import hashlib

    assert hashlib.sha256(seg.content).hexdigest() == seg.headers["x-content-sha256"]
    png = api.post(
        "/v1/artifacts/download", json={"analysis_id": analysis_id, "kind": "overlay_png", "name": "overlay_axial.png"}
    )
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


def test_download_refusals(api, analysed):
    analysis_id = analysed[0]["analysis_id"]
    several = api.post("/v1/artifacts/download", json={"analysis_id": analysis_id, "kind": "overlay_png"})
    assert "overlay_axial.png" in error_of(several, 400)
    assert "no analysis" in error_of(
        api.post("/v1/artifacts/download", json={"analysis_id": "0" * 32, "kind": "dicom_seg"}), 404
    )
    assert error_of(api.post("/v1/artifacts/download", json={"analysis_id": analysis_id, "kind": "passwd"}), 400)
    assert "no analysis" in error_of(api.post("/v1/analyses/get", json={"analysis_id": "f" * 32}), 404)
    assert error_of(api.post("/v1/analyses/get", json={"analysis_id": 1}), 400)  # ids are not sequential numbers


# --- tenants ----------------------------------------------------------------------------------------------------


def test_a_second_integration_key_gets_404_for_the_first_keys_analysis_and_seg(api, analysed, studies):
    from twin_imaging.access import ApiKeyRegistry
    from twin_imaging.settings import get_settings

    registry = ApiKeyRegistry.load(get_settings().api_keys_file)
    other = {"X-API-Key": registry.create("router-b", role="integration")}
    analysis_id = analysed[0]["analysis_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", analysis_id) and analysis_id != analysed[1]["analysis_id"]
    try:
        for path, body in (
            ("/v1/analyses/get", {"analysis_id": analysis_id}),
            ("/v1/artifacts/download", {"analysis_id": analysis_id, "kind": "dicom_seg"}),
        ):
            hidden = api.client.post(path, json=body, headers=other)
            absent = api.client.post(path, json={**body, "analysis_id": "0" * 32}, headers=other)
            assert hidden.status_code == absent.status_code == 404  # never 403: existence is not revealed
            assert hidden.json()["error"].replace(analysis_id, "ID") == absent.json()["error"].replace("0" * 32, "ID")
            assert api.post(path, "integration", json=body).status_code == 200  # the sender still reads it
        inbox = api.client.post("/v1/inbox/status", json={"study_instance_uid": studies.pre_uid}, headers=other)
        assert inbox.json()["state"] == "unknown"

        # a key that sends the same study may read what came of it: the same analysis
        again = api.client.post("/v1/analyze", files=files_of(studies.pre), headers=other)
        assert again.status_code == 200 and again.json()["analysis_id"] == analysis_id
        assert api.client.post("/v1/analyses/get", json={"analysis_id": analysis_id}, headers=other).status_code == 200
        post_id = analysed[1]["analysis_id"]
        assert api.client.post("/v1/analyses/get", json={"analysis_id": post_id}, headers=other).status_code == 404

        registry.set_scope("router-b", "all")  # an admin widens its scope
        assert api.client.post("/v1/analyses/get", json={"analysis_id": post_id}, headers=other).status_code == 200
    finally:
        registry.revoke("router-b")


def test_upload_refusals_name_the_problem(api, studies, tmp_path):
    evil = api.post(
        "/v1/analyze", "integration", files=[("files", ("evil.zip", zip_of(studies.pre, evil=True), "application/zip"))]
    )
    assert "../" in error_of(evil, 422) or "escape" in evil.json()["error"]
    mixed = [*files_of(studies.pre)[:5], ("files", ("notes.txt", b"hello, not DICOM", "text/plain"))]
    assert "notes.txt" in error_of(api.post("/v1/analyze", "integration", files=mixed), 422)
    no_files = api.post(
        "/v1/analyze", "integration", data={"patient_id": "X"}, files=[("other", ("a", b"", "text/plain"))]
    )
    assert no_files.status_code == 400 and "files" in no_files.text
    nifti = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), np.int16), np.eye(4)), nifti)
    no_patient = api.post(
        "/v1/analyze", "integration", files=[("files", ("ct.nii.gz", nifti.read_bytes(), "application/gzip"))]
    )
    assert "patient_id" in error_of(no_patient, 422)
    garbage = api.post(
        "/v1/analyze",
        "integration",
        files=[("files", ("x.dcm", b"\0" * 128 + b"DICM" + b"\1" * 64, "application/dicom"))],
    )
    assert garbage.status_code == 422, garbage.text
    one_slice = tmp_path / "one_slice.nii.gz"
    nib.save(nib.Nifti1Image(np.full((64, 64, 1), -100, np.int16), np.eye(4)), one_slice)
    unsuitable = api.post(
        "/v1/analyze",
        "integration",
        data={"patient_id": "GATE-1"},
        files=[("files", ("one_slice.nii.gz", one_slice.read_bytes(), "application/gzip"))],
    )
    assert "64 x 64 x 1 voxels" in error_of(unsuitable, 422)
    assert api.post("/v1/twin/get", "clinician", json={"patient_id": "GATE-1"}).status_code == 404  # nothing filed


def test_malformed_bodies_are_4xx_and_no_url_is_ever_fetched(api):
    as_json = api.post("/v1/analyze", "integration", json="http://example.org/study.zip")
    assert "multipart/form-data" in error_of(as_json, 415)
    no_boundary = api.post(
        "/v1/twin/timeline", "clinician", content=b"{}", headers={"content-type": "multipart/form-data"}
    )
    assert "boundary" in error_of(no_boundary, 400)
    url_as_file = api.post(
        "/v1/analyze",
        "integration",
        data={"files": "http://127.0.0.1:1/x.dcm"},
        files=[("dummy", ("a", b"", "text/plain"))],
    )
    assert url_as_file.status_code == 400 and "uploaded file" in url_as_file.text
    boundary = "b0undary"
    broken = api.post(
        "/v1/analyze",
        "integration",
        content=f"--{boundary}\r\n[]--{boundary}--\r\n".encode(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert broken.status_code == 400 and "multipart" in broken.text


def test_a_nifti_with_a_patient_id_is_analysed_and_attached(api, studies, tmp_path):
    from twin_imaging.io import read_dicom_series, write_nifti

    path = write_nifti(read_dicom_series(studies.pre), tmp_path / "pre.nii.gz")
    response = api.post(
        "/v1/analyze",
        "integration",
        files=[("files", (path.name, path.read_bytes(), "application/gzip"))],
        data={"patient_id": "API-NIFTI-1"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["input_kind"] == "nifti"
    twin = api.post("/v1/twin/get", "clinician", json={"patient_id": "API-NIFTI-1"}).json()
    assert len(twin["analyses"]) == 1


def test_bodies_over_the_limits_get_413(api, studies):
    big = b"\0" * (MAX_UPLOAD_BYTES + 1)
    assert "limit" in error_of(
        api.post(
            "/v1/analyze", "integration", content=big, headers={"content-type": "multipart/form-data; boundary=x"}
        ),
        413,
    )

    def chunks():  # no Content-Length: the limit holds on the bytes as they arrive
        for _ in range(MAX_UPLOAD_BYTES // (1024 * 1024) + 2):
            yield b"\0" * (1024 * 1024)

    assert "limit" in error_of(
        api.post(
            "/v1/analyze", "integration", content=chunks(), headers={"content-type": "multipart/form-data; boundary=x"}
        ),
        413,
    )
    padded = [
        *files_of(studies.pre),
        ("files", ("pad.dcm", b"\x00" * 128 + b"DICM" + b"\x00" * SYNC_MAX_BYTES, "application/dicom")),
    ]
    assert "/v1/analyze_job/submit" in error_of(api.post("/v1/analyze", "integration", files=padded), 413)
    # JSON routes have a small limit of their own (1 MiB by default), declared or streamed
    huge_json = b'{"patient_id": "' + b"x" * (1024**2) + b'"}'
    json_headers = {"content-type": "application/json"}
    assert "limit of 1048576" in error_of(
        api.post("/v1/twin/get", "clinician", content=huge_json, headers=json_headers), 413
    )
    streamed = (huge_json[i : i + 65536] for i in range(0, len(huge_json), 65536))
    assert "limit" in error_of(api.post("/v1/twin/get", "clinician", content=streamed, headers=json_headers), 413)


def test_a_job_runs_to_its_result_and_an_unknown_job_is_404(api, studies, analysed):
    submitted = api.post("/v1/analyze_job/submit", "integration", files=files_of(studies.post))
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["job_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", job_id) and submitted.json()["status"] == "queued"
    for _ in range(120):
        status = api.post("/v1/analyze_job/status", "integration", json={"job_id": job_id}).json()["status"]
        if status not in ("queued", "running"):
            break
        time.sleep(0.5)
    assert status == "completed"
    result = api.post("/v1/analyze_job/get", "integration", json={"job_id": job_id})
    assert result.status_code == 200 and result.json()["analysis_id"] == analysed[1]["analysis_id"]
    assert "no job" in error_of(api.post("/v1/analyze_job/status", "integration", json={"job_id": "0" * 32}), 404)
    assert "no job" in error_of(api.post("/v1/analyze_job/get", "integration", json={"job_id": "0" * 32}), 404)
    assert error_of(api.post("/v1/analyze_job/get", "integration", json={"job_id": "no-such-job"}), 400)
    # the job store holds no credential and is its owner's only
    record = api.data_dir / "spool" / "jobs" / job_id / "job.json"
    assert record.stat().st_mode & 0o777 == 0o600 and (record.parent.stat().st_mode & 0o777) == 0o700
    assert not any(key in record.read_text() for key in api.keys.values())
    assert not (record.parent / "input").exists()  # the upload is gone once the result is in the twin


# --- the twin -------------------------------------------------------------------------------------------------


def test_twin_json_fhir_timeline_and_compare(api, analysed, studies):
    twin = api.post("/v1/twin/get", "clinician", json={"patient_id": "API-PATIENT-1"})
    assert twin.status_code == 200 and len(twin.json()["analyses"]) == 2
    bundle = api.post("/v1/twin/get", "clinician", json={"patient_id": "API-PATIENT-1", "format": "fhir"}).json()
    assert bundle["resourceType"] == "Bundle"
    assert {e["resource"]["resourceType"] for e in bundle["entry"]} >= {"Patient", "ImagingStudy", "Observation"}
    events = api.post("/v1/twin/timeline", "clinician", json={"patient_id": "API-PATIENT-1"}).json()["events"]
    assert len(events) >= 4
    compared = api.post(
        "/v1/twin/compare",
        "clinician",
        json={"patient_id": "API-PATIENT-1", "study_a": studies.pre_uid, "study_b": studies.post_uid},
    )
    assert compared.status_code == 200, compared.text
    kidney = next(c for c in compared.json()["changes"] if c["structure"] == "kidney_left")
    assert -60 < kidney["change_percent"] < -35  # the post-operative phantom's left kidney is scaled 0.8 per axis
    same = api.post(
        "/v1/twin/compare",
        "clinician",
        json={"patient_id": "API-PATIENT-1", "study_a": studies.pre_uid, "study_b": studies.pre_uid},
    )
    assert "two different studies" in error_of(same, 400)


@pytest.mark.parametrize("path", ["/v1/twin/get", "/v1/twin/timeline"])
def test_an_unknown_patient_is_404(api, path):
    assert "no patient" in error_of(api.post(path, "clinician", json={"patient_id": "NOBODY-42"}), 404)


def test_observations_are_recorded_and_bad_ones_refused(api, analysed):
    good = {
        "patient_id": "API-PATIENT-1",
        "code": "62238-1",
        "display": "eGFR",
        "value": 71.5,
        "unit": "mL/min/1.73m2",
        "effective_at": "2025-02-01T08:00:00Z",
    }
    response = api.post("/v1/twin/observations", "clinician", json=good)
    assert response.status_code == 200, response.text
    twin = api.post("/v1/twin/get", "clinician", json={"patient_id": "API-PATIENT-1"}).json()
    assert any(o["code"] == "62238-1" and o["value"] == 71.5 for o in twin["observations"])
    assert error_of(api.post("/v1/twin/observations", "clinician", json={**good, "value": "high"}), 400)
    assert error_of(
        api.post("/v1/twin/observations", "clinician", json={k: v for k, v in good.items() if k != "unit"}), 400
    )
    assert "no patient" in error_of(
        api.post("/v1/twin/observations", "clinician", json={**good, "patient_id": "NOBODY"}), 404
    )
    # the eGFR code's UCUM unit, a sane date, and one value per code and time
    assert "mL/min/{1.73_m2}" in error_of(
        api.post("/v1/twin/observations", "clinician", json={**good, "unit": "u"}), 400
    )
    far = {**good, "effective_at": "9999-12-31T00:00:00Z"}
    assert "between 1900-01-01 and today" in error_of(api.post("/v1/twin/observations", "clinician", json=far), 400)
    assert "already recorded" in error_of(
        api.post("/v1/twin/observations", "clinician", json={**good, "value": 12.0}), 409
    )


def test_every_access_to_patient_data_is_audited_under_the_key_name(api, analysed):
    api.post("/v1/twin/get", "clinician", json={"patient_id": "API-PATIENT-1"})
    engine = create_engine(f"sqlite:///{api.data_dir / 'twin.sqlite3'}")
    with engine.connect() as connection:
        rows = connection.execute(select(AuditEntry.actor, AuditEntry.action)).all()
    engine.dispose()
    assert ("api:test-clinician", "read_summary") in rows
    assert any(a == "api:test-integration" and "analysis" in b for a, b in rows)
    assert any(a == "api:test-clinician" and b == "read_artifact" for a, b in rows)


# --- outcomes and models --------------------------------------------------------------------------------------


def test_outcome_predictions_per_scenario_are_returned_and_recorded(api, analysed, shared_data):
    from tests.outcome.test_outcome_model import CLINICAL

    mask = shared_file(shared_data, "kits23/case_00000/segmentation.nii.gz")
    response = api.post(
        "/v1/outcome/predict",
        "clinician",
        files=[("mask", ("segmentation.nii.gz", mask.read_bytes(), "application/gzip"))],
        data={"clinical": json.dumps(CLINICAL), "patient_id": "API-PATIENT-1"},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    pairs = {(p["target"], p["scenario"]) for p in body["predictions"]}
    assert ("egfr_decline", "radical_nephrectomy") in pairs and ("egfr_decline", "partial_nephrectomy") in pairs
    egfr = {p["scenario"]: p["probability"] for p in body["predictions"] if p["target"] == "egfr_decline"}
    assert egfr["radical_nephrectomy"] >= egfr["partial_nephrectomy"]
    new_baseline = {p["scenario"]: p["egfr_ml_min_1_73m2"] for p in body["new_baseline_egfr"]}
    assert new_baseline["radical_nephrectomy"] <= new_baseline["partial_nephrectomy"]
    assert len(body["recorded_prediction_ids"]) == len(body["predictions"]) + len(new_baseline)
    twin = api.post("/v1/twin/get", "clinician", json={"patient_id": "API-PATIENT-1"}).json()
    values = {p["scenario"]: p for p in twin["predictions"] if p["target"] == "new_baseline_egfr"}
    assert values["partial_nephrectomy"]["value"] == pytest.approx(new_baseline["partial_nephrectomy"], abs=0.05)
    assert (
        values["partial_nephrectomy"]["unit"] == "mL/min/{1.73_m2}"
        and values["partial_nephrectomy"]["probability"] is None
    )


def test_outcome_refusals(api, tmp_path):
    from tests.outcome.test_outcome_model import CLINICAL

    empty = tmp_path / "empty.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.uint8), np.eye(4)), empty)
    no_kidney = api.post(
        "/v1/outcome/predict",
        "clinician",
        files=[("mask", ("empty.nii.gz", empty.read_bytes(), "application/gzip"))],
        data={"clinical": json.dumps(CLINICAL)},
    )
    assert "kidney" in error_of(no_kidney, 422)
    bad_clinical = api.post(
        "/v1/outcome/predict",
        "clinician",
        files=[("mask", ("empty.nii.gz", empty.read_bytes(), "application/gzip"))],
        data={"clinical": json.dumps({**CLINICAL, "age_years": -4})},
    )
    assert "age_years" in error_of(bad_clinical, 422)


def test_models_lists_both_cards(api):
    body = api.post("/v1/models", "integration", json={}).json()
    tasks = {m["task"]: m["card"] for m in body["models"]}
    assert tasks["segmentation"]["model_id"] == "abdomen_ct_fast"
    assert tasks["outcome"]["model_id"] == "nephrectomy_outcomes"
    assert "CPUExecutionProvider" in body["providers"]


# --- STOW-RS ----------------------------------------------------------------------------------------------------


def test_stow_rs_stores_the_study_and_it_is_analysed_once_quiet(api, tmp_path):
    from twin_imaging.testing import PatientSpec, SeriesSpec, write_phantom_study

    study = write_phantom_study(
        tmp_path / "pushed", (SeriesSpec(geometry=GEOMETRY),), patient=PatientSpec(patient_id="API-STOW-1"), seed=3
    )
    body, content_type = multipart_related([("application/dicom", p.read_bytes()) for p in study.paths])
    response = api.post("/dicomweb/studies", "integration", content=body, headers={"content-type": content_type})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/dicom+json")
    stored = response.json()["00081199"]["Value"]
    assert {item["00081155"]["Value"][0] for item in stored} == set(study.series[0].sop_instance_uids)
    for _ in range(120):
        state = api.post(
            "/v1/inbox/status", "integration", json={"study_instance_uid": study.study_instance_uid}
        ).json()
        if state["state"] in ("done", "failed"):
            break
        time.sleep(0.5)
    assert state["state"] == "done", state
    twin = api.post("/v1/twin/get", "clinician", json={"patient_id": "API-STOW-1"}).json()
    assert [a["analysis_id"] for a in twin["analyses"]] == [state["analysis_id"]]
    # the key that pushed it reads the analysis the inbox made of it (its scope is "own")
    assert api.post("/v1/analyses/get", "integration", json={"analysis_id": state["analysis_id"]}).status_code == 200


def test_stow_rs_refusals(api, analysed, studies):
    seg = api.post(
        "/v1/artifacts/download", json={"analysis_id": analysed[0]["analysis_id"], "kind": "dicom_seg"}
    ).content
    body, content_type = multipart_related([("application/dicom", seg)])
    refused = api.post("/dicomweb/studies", "integration", content=body, headers={"content-type": content_type})
    assert refused.status_code == 409, refused.text
    failure = refused.json()["00081198"]["Value"][0]  # our own SEG sent back: an algorithm's, not a radiologist's
    assert failure["00081197"]["Value"] == [0xC000] and "AUTOMATIC" in failure["00000902"]["Value"][0]
    sr = api.post(
        "/v1/artifacts/download", json={"analysis_id": analysed[0]["analysis_id"], "kind": "dicom_sr"}
    ).content
    body, content_type = multipart_related([("application/dicom", sr)])
    refused = api.post("/dicomweb/studies", "integration", content=body, headers={"content-type": content_type})
    assert refused.json()["00081198"]["Value"][0]["00081197"]["Value"] == [0x0122]  # SOP class not supported
    one = sorted(studies.pre.glob("*.dcm"))[0].read_bytes()
    body, content_type = multipart_related([("application/dicom", one), ("application/dicom", b"not dicom")])
    partial = api.post("/dicomweb/studies/1.2.3.4", "integration", content=body, headers={"content-type": content_type})
    assert partial.status_code == 409 and len(partial.json()["00081198"]["Value"]) == 2  # wrong study, garbage
    body, content_type = multipart_related([("application/dicom", one), ("text/plain", b"hi")])
    mixed = api.post("/dicomweb/studies", "integration", content=body, headers={"content-type": content_type})
    assert mixed.status_code == 202, mixed.text
    wrong = api.post("/dicomweb/studies", "integration", content=one, headers={"content-type": "application/dicom"})
    assert "multipart/related" in error_of(wrong, 415)
    assert (
        api.post("/v1/inbox/status", "integration", json={"study_instance_uid": "9.9.9"}).json()["state"] == "unknown"
    )
    assert error_of(api.post("/v1/inbox/status", "integration", json={"study_instance_uid": "../etc"}), 400)


def test_a_study_pushed_in_two_bursts_ends_with_one_current_analysis_of_all_of_it(api, tmp_path):
    from twin_imaging.testing import PatientSpec, SeriesSpec, write_phantom_study

    study = write_phantom_study(
        tmp_path / "bursts", (SeriesSpec(geometry=GEOMETRY),), patient=PatientSpec(patient_id="API-BURSTS"), seed=5
    )
    paths = list(study.series[0].paths)  # in slice order
    uid = study.study_instance_uid

    def push_and_wait(part: list) -> dict:
        body, content_type = multipart_related([("application/dicom", p.read_bytes()) for p in part])
        pushed = api.post("/dicomweb/studies", "integration", content=body, headers={"content-type": content_type})
        assert pushed.status_code == 200, pushed.text
        for _ in range(240):
            state = api.post("/v1/inbox/status", "integration", json={"study_instance_uid": uid}).json()
            if state["state"] in ("done", "failed") and state.get("finished", 0) > started:
                return state
            time.sleep(0.25)
        raise AssertionError(f"the pushed study was not analysed: {state}")

    started = time.time()
    first = push_and_wait(paths[: len(paths) // 2])
    assert first["state"] == "done", first
    started = time.time()
    second = push_and_wait(paths[len(paths) // 2 :])  # the rest, well after the quiet time
    assert second["state"] == "done" and second["analysis_id"] != first["analysis_id"]

    twin = api.post("/v1/twin/get", "clinician", json={"patient_id": "API-BURSTS"}).json()
    analyses = {a["analysis_id"]: a for a in twin["analyses"]}
    current = analyses[second["analysis_id"]]
    assert sorted(current["input_uids"]) == sorted(study.series[0].sop_instance_uids)  # every instance
    assert current["supersedes"] == [first["analysis_id"]] and current["superseded_by"] is None
    assert analyses[first["analysis_id"]]["superseded_by"] == second["analysis_id"]  # kept in the history
    liver = {
        a: next(m["volume_ml"] for m in analyses[a]["measurements"] if m["structure"] == "liver") for a in analyses
    }
    assert liver[second["analysis_id"]] > 1.5 * liver[first["analysis_id"]]
