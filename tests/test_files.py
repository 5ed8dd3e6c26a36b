"""Durable writes: the file is fsynced before its rename, and its folder after, so the rename survives a crash."""

from __future__ import annotations

import os
import stat

import pytest

from twin_imaging import files
from twin_imaging.inbox import StudyInbox
from twin_imaging.testing import SeriesSpec, write_phantom_study
from twin_imaging.testing.phantom import PhantomGeometry


@pytest.fixture
def synced(monkeypatch) -> list[str]:
    """What each os.fsync call flushed: 'dir:<path>' for a folder, 'file' for a file."""
    calls: list[str] = []
    real = os.fsync

    def spy(fd: int) -> None:
        mode = os.fstat(fd).st_mode
        calls.append(f"dir:{os.readlink(f'/proc/self/fd/{fd}')}" if stat.S_ISDIR(mode) else "file")
        real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


def test_an_atomic_write_syncs_the_file_then_its_folder(tmp_path, synced):
    files.write_bytes_atomic(tmp_path / "a" / "x.bin", b"data")
    assert synced == ["file", f"dir:{tmp_path / 'a'}"]
    assert (tmp_path / "a" / "x.bin").read_bytes() == b"data"


def test_claiming_and_failing_a_study_sync_both_folders(tmp_path, synced):
    study = write_phantom_study(tmp_path / "src", (SeriesSpec(geometry=PhantomGeometry(shape=(32, 32, 6))),))
    inbox = StudyInbox(tmp_path / "inbox")
    for path in study.paths:
        inbox.store(path.read_bytes())
    synced.clear()
    claimed = inbox.claim(study.study_instance_uid)
    assert f"dir:{tmp_path / 'inbox' / 'processing'}" in synced
    assert f"dir:{tmp_path / 'inbox' / 'incoming'}" in synced
    synced.clear()
    inbox.fail(claimed, "ValueError: x")
    assert f"dir:{tmp_path / 'inbox' / 'failed'}" in synced


def test_file_sha256_matches_hashlib_across_chunks(tmp_path):
    import hashlib

    data = bytes(range(256)) * 9000  # over two 1 MiB chunks
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert files.file_sha256(path) == hashlib.sha256(data).hexdigest()
