"""The inbox of pushed instances: durable, refuses what it cannot analyse, hands a quiet study to one worker, keeps
failures, and gives studies interrupted by a crash back."""

from __future__ import annotations

import io
import os
import time

import pydicom
import pytest

from twin_imaging.errors import DicomInputError
from twin_imaging.inbox import NotNow, StudyInbox, StudyMismatchError, UnsupportedSopClassError
from twin_imaging.testing import SeriesSpec, write_phantom_study
from twin_imaging.testing.phantom import PhantomGeometry


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_phantom_study(
        tmp_path_factory.mktemp("inbox_study"), (SeriesSpec(geometry=PhantomGeometry(shape=(32, 32, 6))),)
    )


def test_a_study_waits_until_quiet_then_one_worker_claims_it(tmp_path, study):
    inbox = StudyInbox(tmp_path)
    for path in study.paths:
        stored = inbox.store(path.read_bytes())
    assert stored.study_instance_uid == study.study_instance_uid
    assert inbox.state(study.study_instance_uid) == {"state": "waiting", "instances": len(study.paths)}
    assert inbox.due(quiet_seconds=60) == []
    past = time.time() - 120
    for path in (tmp_path / "incoming" / study.study_instance_uid).iterdir():
        os.utime(path, (past, past))
    assert inbox.due(quiet_seconds=60) == [study.study_instance_uid]
    claimed = inbox.claim(study.study_instance_uid)
    assert claimed is not None and inbox.claim(study.study_instance_uid) is None  # the second worker loses
    assert inbox.state(study.study_instance_uid) == {"state": "processing"}
    assert inbox.recover() == 1  # a crash: the study goes round again
    claimed = inbox.claim(study.study_instance_uid)
    inbox.fail(claimed, "ValueError: something broke")
    assert inbox.state(study.study_instance_uid)["error"] == "ValueError: something broke"
    assert list((tmp_path / "failed").glob("*/*.dcm"))  # kept, not lost


def test_state_matches_the_study_uid_exactly_never_a_prefix(tmp_path, study):
    """Asking for study "1" (or any prefix of a UID) must not report another study's state or error text."""
    inbox = StudyInbox(tmp_path)
    for path in study.paths:
        inbox.store(path.read_bytes())
    past = time.time() - 120
    for path in (tmp_path / "incoming" / study.study_instance_uid).iterdir():
        os.utime(path, (past, past))
    uid = study.study_instance_uid
    claimed = inbox.claim(uid)
    prefixes = ["1", uid.split(".")[0], ".".join(uid.split(".")[:3]), uid[:-1].rstrip(".")]
    for prefix in prefixes:
        assert inbox.state(prefix) == {"state": "unknown"}, prefix
    inbox.fail(claimed, "ValueError: private detail of another study")
    for prefix in prefixes:
        assert inbox.state(prefix) == {"state": "unknown"}, prefix
    assert inbox.state(uid)["state"] == "failed"


def test_non_images_and_garbage_are_refused(tmp_path, study):
    inbox = StudyInbox(tmp_path)
    with pytest.raises(DicomInputError, match="not a DICOM"):
        inbox.store(b"hello")
    dataset = pydicom.dcmread(study.paths[0])
    dataset.SOPClassUID = dataset.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    with pytest.raises(UnsupportedSopClassError):
        inbox.store(buffer.getvalue())
    with pytest.raises(DicomInputError, match="not a DICOM UID"):
        inbox.state("../../etc")


def test_process_due_records_what_each_study_came_to(tmp_path, study):
    inbox = StudyInbox(tmp_path)
    for path in study.paths:
        inbox.store(path.read_bytes())

    def broken(claimed):
        raise RuntimeError("the model file is missing")

    assert inbox.process_due(broken, quiet_seconds=0) == 1
    assert inbox.state(study.study_instance_uid) == {
        "state": "failed",
        "error": "RuntimeError: the model file is missing",
    }
    for path in study.paths:  # sent again
        inbox.store(path.read_bytes())
    assert inbox.process_due(lambda claimed: {"analysis_id": 7}, quiet_seconds=0) == 1
    state = inbox.state(study.study_instance_uid)
    assert state["state"] == "done" and state["analysis_id"] == 7


def test_a_streamed_file_is_moved_into_place_and_its_sender_alone_learns_its_state(tmp_path, study):
    inbox = StudyInbox(tmp_path / "inbox")
    part = inbox.receiving_dir() / "part-1.dcm"
    part.write_bytes(study.paths[0].read_bytes())
    stored = inbox.store_file(part, sender="api:router-a")
    assert not part.exists()  # moved, not copied
    placed = tmp_path / "inbox" / "incoming" / study.study_instance_uid / f"{stored.sop_instance_uid}.dcm"
    assert placed.read_bytes() == study.paths[0].read_bytes()
    assert inbox.senders(study.study_instance_uid) == ["api:router-a"]
    assert inbox.state(study.study_instance_uid, only_sent_by="api:router-a")["state"] == "waiting"
    assert inbox.state(study.study_instance_uid, only_sent_by="api:router-b") == {"state": "unknown"}

    other = inbox.receiving_dir() / "part-2.dcm"
    other.write_bytes(study.paths[1].read_bytes())
    with pytest.raises(StudyMismatchError):
        inbox.store_file(other, only_study="1.2.3")
    assert other.exists()  # refused: not moved into any study


def test_uploads_cut_off_by_a_crash_are_removed_on_recovery(tmp_path):
    inbox = StudyInbox(tmp_path)
    (inbox.receiving_dir() / "tmpabc").mkdir()
    (inbox.receiving_dir() / "tmpabc" / "part-x.dcm").write_bytes(b"half an instance")
    inbox.recover()
    assert list(inbox.receiving_dir().iterdir()) == []


def test_a_study_the_service_cannot_take_now_goes_back_not_to_failed(tmp_path, study):
    inbox = StudyInbox(tmp_path)
    for path in study.paths:
        inbox.store(path.read_bytes())

    def stopping(claimed):
        raise NotNow

    assert inbox.process_due(stopping, quiet_seconds=0) == 1
    assert inbox.state(study.study_instance_uid) == {"state": "waiting", "instances": len(study.paths)}
    assert list((tmp_path / "failed").iterdir()) == []
