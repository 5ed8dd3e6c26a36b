"""The real server: `bentoml serve` as a subprocess on 127.0.0.1 and a free port, as a hospital would run it.

Uploads the phantom study as a job, waits for it, downloads the SEG and reads the twin; serves metrics; and a
bounded schemathesis run over its OpenAPI document finds no 500.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pydicom
import pytest

from serving.launch import RunningServer, start_server
from tests.serving.conftest import files_of
from twin_imaging.access import ApiKeyRegistry
from twin_imaging.testing import PatientSpec, PhantomGeometry, SeriesSpec, write_phantom_study
from twin_imaging.testing.stow import stow_body, stow_content_type

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = start_server(tmp_path_factory.mktemp("server"), env={"TWIN_IMAGING_SERVE_STUDY_QUIET_SECONDS": "1"})
    print(f"\nbentoml serve ready in {running.startup_s:.1f} s")
    yield running
    running.stop()


def wait_for_job(server: RunningServer, job_id: str, *, timeout_s: float = 300, key: dict | None = None) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = httpx.post(
            f"{server.url}/v1/analyze_job/status",
            json={"job_id": job_id},
            headers=key or server.headers("integration"),
            timeout=30,
        ).json()["status"]
        if status not in ("queued", "running"):
            return status
        time.sleep(0.5)
    raise TimeoutError(f"job {job_id} still running after {timeout_s} s")


def test_a_study_goes_in_as_a_job_and_its_seg_and_twin_come_out(server, studies):
    client = httpx.Client(base_url=server.url, timeout=120)
    submitted = client.post(
        "/v1/analyze_job/submit", files=files_of(studies.pre), headers=server.headers("integration")
    )
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["job_id"]
    assert wait_for_job(server, job_id) == "completed"
    result = client.post("/v1/analyze_job/get", json={"job_id": job_id}, headers=server.headers("integration"))
    analysis = result.json()
    assert analysis["study_instance_uid"] == studies.pre_uid
    seg = client.post(
        "/v1/artifacts/download",
        json={"analysis_id": analysis["analysis_id"], "kind": "dicom_seg"},
        headers=server.headers("integration"),
    )
    dataset = pydicom.dcmread(io.BytesIO(seg.content))
    assert dataset.Modality == "SEG" and dataset.StudyInstanceUID == studies.pre_uid
    assert {s.SegmentLabel for s in dataset.SegmentSequence} >= {"liver", "spleen"}
    twin = client.post("/v1/twin/get", json={"patient_id": "API-PATIENT-1"}, headers=server.headers("clinician"))
    assert twin.status_code == 200
    assert [a["analysis_id"] for a in twin.json()["analyses"]] == [analysis["analysis_id"]]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "bentoml_service_request_total" in metrics.text
    assert client.post("/v1/twin/get", json={"patient_id": "API-PATIENT-1"}).status_code == 401

    # a second integration key (another router, another hospital) learns nothing of this analysis
    other = {"X-API-Key": ApiKeyRegistry.load(server.root / "keys.json").create("router-b", role="integration")}
    for path, body in (
        ("/v1/analyses/get", {"analysis_id": analysis["analysis_id"]}),
        ("/v1/artifacts/download", {"analysis_id": analysis["analysis_id"], "kind": "dicom_seg"}),
    ):
        hidden = client.post(path, json=body, headers=other)
        assert hidden.status_code == 404 and "Doe" not in hidden.text and "API-PATIENT-1" not in hidden.text
    for route in ("/v1/analyze_job/status", "/v1/analyze_job/get"):
        assert client.post(route, json={"job_id": job_id}, headers=other).status_code == 404


def test_schemathesis_finds_no_server_error(server, tmp_path):
    """A bounded run over every operation of the served OpenAPI document: the coverage phase (boundary values,
    malformed content types; about 550 cases) and 10 fuzzed examples per operation (about 700 in all, 4 s)."""
    report = tmp_path / "schemathesis.txt"
    command = [
        str(BIN / "schemathesis"),
        "run",
        f"{server.url}/docs.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "10",
        "--phases",
        "examples,fuzzing",
        "--seed",
        "2026",
        "--request-timeout",
        "120",
        "--header",
        f"Authorization: Bearer {server.keys['admin']}",
        "--no-color",
        # schemathesis has no serializer for multipart/related: STOW-RS bodies are tested in process
        "--exclude-path-regex",
        "^/dicomweb/",
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=900, env={**os.environ, "SCHEMATHESIS_HOOKS": ""}
    )
    report.write_text(result.stdout + result.stderr)
    assert result.returncode == 0, result.stdout[-6000:]


def test_refused_requests_leave_no_patient_identifier_in_the_server_log(server):
    """Bad requests carrying a patient id: the server log names routes and fields, never the values sent."""
    secret = "PAT-SECRET-4711"
    bad = [
        ("/v1/twin/get", {"patient_id": secret, "format": "xml"}),
        ("/v1/twin/observations", {"patient_id": secret, "code": "x", "display": "x", "value": "high", "unit": "u"}),
        ("/v1/twin/timeline", {"patient_id": secret * 40}),
        ("/v1/twin/get", {"patient_id": secret}),  # unknown patient: 404
    ]
    for route, body in bad:
        response = httpx.post(f"{server.url}{route}", json=body, headers=server.headers("clinician"), timeout=30)
        assert 400 <= response.status_code < 500, (route, response.status_code)
    time.sleep(1.0)  # the worker's log lines reach the file
    log = server.log_text()
    assert secret not in log
    assert "Traceback" not in log


def test_a_100_mb_stow_body_is_streamed_with_bounded_server_memory(tmp_path):
    """200 slices of 512 x 512 (about 100 MB) pushed in one STOW-RS request to a server of its own (no analysis or
    job of another test running in it; its quiet time an hour, so none starts): every instance stored, and the
    server's resident memory rises by far less than the body (it rose by 927 MB for a 106 MB body when it was
    buffered)."""
    geometry = PhantomGeometry(shape=(512, 512, 200), spacing_mm=(0.8, 0.8, 1.0))
    study = write_phantom_study(tmp_path / "big", (SeriesSpec(geometry=geometry),), patient=PatientSpec("STOW-BIG"))
    body_bytes = sum(p.stat().st_size for p in study.paths)
    assert body_bytes > 100e6
    server = start_server(tmp_path / "server", env={"TWIN_IMAGING_SERVE_STUDY_QUIET_SECONDS": "3600"})
    baseline, peak, stop = server.resident_bytes(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], server.resident_bytes())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        response = httpx.post(
            f"{server.url}/dicomweb/studies",
            content=stow_body(study.paths),
            headers={**server.headers("integration"), "content-type": stow_content_type()},
            timeout=600,
        )
    finally:
        stop.set()
        sampler.join()
        server.stop()
    assert response.status_code == 200, response.text[:500]
    assert len(response.json()["00081199"]["Value"]) == len(study.paths)
    rise_mb = (peak[0] - baseline) / 1e6
    print(f"\nSTOW-RS of {body_bytes / 1e6:.0f} MB: server resident memory rose {rise_mb:.0f} MB")
    assert rise_mb < 0.5 * body_bytes / 1e6


def test_reads_are_answered_while_analyses_queue_and_overflow_is_refused_by_name(tmp_path):
    """Ten analyses sent at once to a server whose queue holds four: the overflow gets 429 (with Retry-After, and a
    job is still accepted), none fails, and a clinician's read is answered while analyses are still waiting. (The
    read latency under this load is measured by benchmarks/bench_serve.py --reads.)"""
    from tests.serving.conftest import GEOMETRY

    server = start_server(tmp_path / "server", env={"TWIN_IMAGING_SERVE_ANALYSIS_QUEUE_MAX": "4"})
    try:
        folders = [tmp_path / f"s{i}" for i in range(10)]
        for i, folder in enumerate(folders):
            write_phantom_study(folder, (SeriesSpec(geometry=GEOMETRY),), patient=PatientSpec(f"Q-{i}"), seed=i)
        finished: list[tuple[float, int, str | None]] = []

        def analyse(folder: Path) -> None:
            response = httpx.post(
                f"{server.url}/v1/analyze",
                files=files_of(folder),
                headers=server.headers("integration"),
                timeout=600,
            )
            finished.append((time.monotonic(), response.status_code, response.headers.get("retry-after")))

        senders = [threading.Thread(target=analyse, args=(folder,)) for folder in folders]
        for sender in senders:
            sender.start()
        time.sleep(1.0)
        job = httpx.post(
            f"{server.url}/v1/analyze_job/submit",
            files=files_of(folders[0]),
            headers=server.headers("integration"),
            timeout=60,
        )
        read = httpx.post(
            f"{server.url}/v1/models", json={}, headers=server.headers("clinician"), timeout=60
        )  # a read that touches the service object while every analysis slot is taken
        read_done = time.monotonic()
        for sender in senders:
            sender.join()
    finally:
        server.stop()
    statuses = [status for _, status, _ in finished]
    assert set(statuses) <= {200, 429} and statuses.count(200) >= 5 and 429 in statuses
    assert all(retry == "30" for _, status, retry in finished if status == 429)
    assert job.status_code == 200 and "job_id" in job.json()
    assert read.status_code == 200
    assert read_done < max(at for at, status, _ in finished if status == 200)  # answered before the queue drained


def test_a_job_cut_off_by_sigkill_is_analysed_after_the_restart_and_no_credential_is_at_rest(tmp_path, studies):
    """The worker kills itself (SIGKILL, as the OOM killer would) in the middle of a job, after the analysis and
    before the twin commits it; BentoML restarts the worker, which takes the job up again (and dies again at the same
    point); the whole server stopped and started without the crash point, the job completes. Nothing on disk holds
    a key."""
    root = tmp_path / "server"
    crashing = start_server(root, env={"TWIN_IMAGING_TEST_CRASH_POINT": "attach_before_commit"})
    key = crashing.headers("integration")
    try:
        submitted = httpx.post(
            f"{crashing.url}/v1/analyze_job/submit", files=files_of(studies.pre), headers=key, timeout=120
        )
        assert submitted.status_code == 200, submitted.text
        job_id = submitted.json()["job_id"]
        record = root / "data" / "spool" / "jobs" / job_id / "job.json"
        deadline = time.monotonic() + 300
        while json.loads(record.read_text())["attempts"] < 2:  # killed once, taken up again by the new worker
            assert time.monotonic() < deadline, record.read_text()
            time.sleep(0.5)
        assert json.loads(record.read_text())["state"] == "running"
    finally:
        crashing.stop()
    restarted = start_server(root)
    try:
        assert wait_for_job(restarted, job_id, key=key) == "completed"
        analysis = httpx.post(f"{restarted.url}/v1/analyze_job/get", json={"job_id": job_id}, headers=key).json()
        assert analysis["study_instance_uid"] == studies.pre_uid
    finally:
        restarted.stop()
    secrets = [value for server in (crashing, restarted) for value in server.keys.values()]
    for path in root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(secret.encode() in data for secret in secrets), path
    work = root / "data" / "spool" / "work"  # one scratch folder per process; the killed workers' are gone
    assert len(list(work.iterdir())) <= 1 and not [p for p in work.rglob("*") if p.is_file()]
