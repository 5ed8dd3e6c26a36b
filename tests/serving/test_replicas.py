"""Two real `bentoml serve` replicas on one PostgreSQL twin and one shared data folder, results going to a real
Orthanc: 10 studies pushed by STOW-RS, spread over both; one replica is killed with SIGKILL while it analyses. Every
study ends analysed exactly once, and every result is delivered once."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest
from sqlalchemy import create_engine, text

from serving.launch import start_server
from twin_imaging.testing import PhantomGeometry, write_phantom_cohort
from twin_imaging.testing.orthanc import OrthancServer, orthanc_available
from twin_imaging.testing.stow import stow_body, stow_content_type

GEOMETRY = PhantomGeometry(shape=(128, 112, 48), spacing_mm=(3.0, 2.5, 4.0))
STUDIES = 10


@pytest.fixture
def orthanc(tmp_path):
    reason = orthanc_available()
    if reason:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(reason)
    server = OrthancServer(tmp_path / "orthanc").start()
    yield server
    server.stop()


def leases_of(engine, kind: str) -> list[tuple[str, str]]:
    """(item, holder) of each lease of ``kind``."""
    with engine.connect() as connection:
        return [
            tuple(r)
            for r in connection.execute(text("SELECT item, holder FROM work_lease WHERE kind = :k"), {"k": kind})
        ]


def pids_of(server) -> set[int]:  # the server's processes (BentoML's parent and its workers)
    try:
        root = psutil.Process(server.process.pid)
        return {root.pid, *(child.pid for child in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


def test_two_replicas_one_killed_mid_analysis_every_study_once(tmp_path, postgres_server, orthanc):
    database_url = postgres_server.create_database()
    shared = tmp_path / "shared"
    env = {
        "TWIN_IMAGING_DATA_DIR": str(shared / "data"),
        "TWIN_IMAGING_DATABASE_URL": database_url,
        "TWIN_IMAGING_SERVE_RESULTS_DESTINATION": orthanc.dicomweb_url,
        "TWIN_IMAGING_SERVE_STUDY_QUIET_SECONDS": "1",
        "TWIN_IMAGING_WORK_LEASE_SECONDS": "10",
        "TWIN_IMAGING_OUTBOX_RETRY_SECONDS": "1",
    }
    studies = write_phantom_cohort(tmp_path, STUDIES, GEOMETRY, prefix="REPLICA")
    # the victim's worker kills itself (SIGKILL, as the OOM killer would) in the middle of its first attach, after
    # the analysis and before the twin commits it, holding the study's lease
    # the victim waits longer for quiet, so that it dies only after every push was answered (a load balancer would
    # send a refused push elsewhere; this test keeps its pushes fixed)
    crash = {"TWIN_IMAGING_TEST_CRASH_POINT": "attach_before_commit", "TWIN_IMAGING_SERVE_STUDY_QUIET_SECONDS": "8"}
    # and the survivor waits longer still, so that the victim surely takes a study first (a small study takes about
    # a second: with equal waits the survivor could analyse all ten before the victim looked)
    survivor_env = {**env, "TWIN_IMAGING_SERVE_STUDY_QUIET_SECONDS": "10"}
    replicas = [start_server(tmp_path / "a", env={**env, **crash}), start_server(tmp_path / "b", env=survivor_env)]
    engine = create_engine(database_url)
    try:
        for n, study in enumerate(studies):
            replica = replicas[n % 2]
            answer = httpx.post(
                f"{replica.url}/dicomweb/studies",
                content=stow_body(study.series[0].paths),
                headers={"Content-Type": stow_content_type(), **replica.headers("integration")},
                timeout=120,
            )
            assert answer.status_code == 200, answer.text

        victim, survivor = replicas
        deadline = time.monotonic() + 180
        while True:  # until a study is held by a victim process that no longer runs: killed mid-analysis
            held = [item for item, h in leases_of(engine, "inbox_study") if not psutil.pid_exists(int(h.split(":")[1]))]
            if held:
                break
            assert time.monotonic() < deadline, "the victim was never killed holding a study"
            time.sleep(0.05)
        os.killpg(victim.process.pid, signal.SIGKILL)  # and the whole replica with it (BentoML would restart it)
        victim.process.wait(timeout=30)

        outbox = shared / "data" / "outbox"
        deadline = time.monotonic() + 420
        while True:
            with engine.connect() as connection:
                analysed = connection.execute(text("SELECT COUNT(*) FROM analysis")).scalar_one()
            sent = list((outbox / "sent").glob("*.json"))
            if analysed == STUDIES and len(sent) == STUDIES and not list((outbox / "pending").iterdir()):
                break
            assert time.monotonic() < deadline, (
                f"{analysed} analysed, {len(sent)} delivered\n{survivor.log_text()[-3000:]}"
            )
            time.sleep(0.5)
        assert survivor.process.poll() is None
        survivor_pids = pids_of(survivor)
    finally:
        for replica in replicas:
            replica.stop()

    with engine.connect() as connection:
        attached = connection.execute(text("SELECT COUNT(*) FROM audit_log WHERE action = 'attach_analysis'")).scalar()
        ids = set(connection.execute(text("SELECT public_id FROM analysis")).scalars())
        series = connection.execute(text("SELECT COUNT(DISTINCT series_id) FROM analysis")).scalar()
        leases = connection.execute(text("SELECT COUNT(*) FROM work_lease")).scalar()
    engine.dispose()
    assert attached == STUDIES and series == STUDIES  # each study attached once, none twice
    assert leases == 0  # every piece of work was released by whoever finished it
    sent = {p.stem: json.loads(p.read_text()) for p in (outbox / "sent").glob("*.json")}
    assert set(sent) == {f"analysis-{i}" for i in ids}  # one delivery per analysis
    inbox = shared / "data" / "spool" / "inbox"
    assert not list((inbox / "incoming").iterdir()) and not list((inbox / "processing").iterdir())
    assert not list((inbox / "failed").iterdir())
    for study_uid in held:  # what the victim was analysing when it died, the survivor took over and finished
        done = json.loads((inbox / "done" / f"{study_uid}.json").read_text())
        assert int(done["handled_by"].split(":")[1]) in survivor_pids, done
    for study in studies:
        found = orthanc.study_series(study.study_instance_uid)
        modalities = sorted(s["Modality"] for s in found)
        assert modalities.count("SEG") == 1 and modalities.count("SR") == 1, modalities
        (seg,) = [s for s in found if s["Modality"] == "SEG"]
        assert len(seg["Instances"]) == 1
    assert Path(victim.root / "server.log").exists()
