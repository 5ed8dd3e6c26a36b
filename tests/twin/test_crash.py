"""A process killed (SIGKILL) while attaching a result leaves the whole analysis or none of it, and attaching again
completes. The store's test hook (settings.test_crash_point) kills it at a named point."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys

import pytest

from tests.twin.conftest import PATIENT, count_rows
from twin_imaging.settings import Settings
from twin_imaging.twin.schema import Alert, Analysis, Artifact, AuditEntry, Measurement, Patient, Series, Study
from twin_imaging.twin.store import TwinStore

ATTACH = """
import pickle, sys
from twin_imaging.twin.store import TwinStore
with open(sys.argv[1], "rb") as stream:
    result = pickle.load(stream)
TwinStore(sys.argv[2], artifacts_dir=sys.argv[3]).attach_analysis(result, actor="worker")
print("attached")
"""
ROWS = (Patient, Study, Series, Analysis, Measurement, Artifact, Alert)


def _attach_in_a_process(result_path, database_url, artifacts_dir, crash_point: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_IMAGING_")}
    env["TWIN_IMAGING_TEST_CRASH_POINT"] = crash_point
    command = [sys.executable, "-c", ATTACH, str(result_path), database_url, str(artifacts_dir)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def pickled_result(tmp_path, phantom_case):
    path = tmp_path / "result.pickle"
    path.write_bytes(pickle.dumps(phantom_case.pre))
    return path


def test_a_kill_before_commit_leaves_none_of_the_analysis(database_url, tmp_path, pickled_result, phantom_case):
    artifacts_dir = tmp_path / "artifacts"
    TwinStore(database_url, artifacts_dir=artifacts_dir, settings=Settings()).close()  # migrated beforehand
    process = _attach_in_a_process(pickled_result, database_url, artifacts_dir, "attach_before_commit")
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    assert "attached" not in process.stdout
    assert {model.__tablename__: count_rows(database_url, model) for model in ROWS} == dict.fromkeys(
        (model.__tablename__ for model in ROWS), 0
    )
    assert count_rows(database_url, AuditEntry) == 0  # the audit row was in the same transaction
    with TwinStore(database_url, artifacts_dir=artifacts_dir, settings=Settings()) as store:
        analysis = store.attach_analysis(phantom_case.pre, actor="worker")  # the retry completes
        assert store.summary(PATIENT.patient_id, actor="check").analyses == (analysis,)
        for artifact in analysis.artifacts:
            store.artifacts.verify(artifact.uri)
    assert count_rows(database_url, Measurement) == len(phantom_case.pre.document.structures)


def test_a_kill_after_commit_leaves_the_whole_analysis(database_url, tmp_path, pickled_result, phantom_case):
    artifacts_dir = tmp_path / "artifacts"
    process = _attach_in_a_process(pickled_result, database_url, artifacts_dir, "attach_after_commit")
    assert process.returncode == -signal.SIGKILL, process.stderr[-2000:]
    assert count_rows(database_url, Analysis) == 1
    assert count_rows(database_url, Measurement) == len(phantom_case.pre.document.structures)
    assert count_rows(database_url, Artifact) == len(phantom_case.pre.document.outputs) + 1
    with TwinStore(database_url, artifacts_dir=artifacts_dir, settings=Settings()) as store:
        (analysis,) = store.summary(PATIENT.patient_id, actor="check").analyses
        for artifact in analysis.artifacts:
            store.artifacts.verify(artifact.uri)  # every row's file is there, whole
        assert store.attach_analysis(phantom_case.pre, actor="worker") == analysis
    assert count_rows(database_url, Analysis) == 1
