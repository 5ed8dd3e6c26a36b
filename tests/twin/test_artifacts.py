"""The content-addressed artifact store: layout by hash, temporary name then rename, idempotent puts, verified
reads."""

from __future__ import annotations

import hashlib
import stat

import pytest

from twin_imaging.errors import ArtifactError
from twin_imaging.files import FILE_MODE
from twin_imaging.twin import artifacts as artifacts_module
from twin_imaging.twin.artifacts import ArtifactStore

DATA = b"twin-imaging artifact\n" * 100
DIGEST = hashlib.sha256(DATA).hexdigest()


def _files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_put_stores_bytes_under_their_hash(tmp_path):
    store = ArtifactStore(tmp_path)
    view = store.put(DATA, kind="results_json", name="results.json")
    assert view.uri == f"artifact://sha256/{DIGEST}" and view.sha256 == DIGEST
    assert view.size_bytes == len(DATA) and view.media_type == "application/json" and view.name == "results.json"
    assert _files(tmp_path) == [f"{DIGEST[:2]}/{DIGEST[2:4]}/{DIGEST}"]
    assert store.path(view.uri).read_bytes() == DATA
    assert stat.S_IMODE(store.path(DIGEST).stat().st_mode) == FILE_MODE
    assert store.read_bytes(view.uri) == DATA


def test_put_is_idempotent_for_files_and_bytes(tmp_path):
    source = tmp_path / "source" / "seg.dcm"
    source.parent.mkdir()
    source.write_bytes(DATA)
    store = ArtifactStore(tmp_path / "store")
    first = store.put(source, kind="dicom_seg", name="seg.dcm")
    again = store.put(source, kind="dicom_seg", name="seg.dcm", expected_sha256=DIGEST)
    as_bytes = store.put(DATA, kind="dicom_seg", name="seg.dcm")
    assert first == again == as_bytes
    assert first.media_type == "application/dicom"
    assert _files(tmp_path / "store") == [f"{DIGEST[:2]}/{DIGEST[2:4]}/{DIGEST}"]  # once, no temporary files


def test_content_that_is_not_what_was_promised_is_refused(tmp_path):
    source = tmp_path / "labels.nii.gz"
    source.write_bytes(DATA)
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(ArtifactError, match="changed on disk"):
        store.put(source, kind="labels_nifti", expected_sha256="0" * 64)
    assert not (tmp_path / "store").exists() or _files(tmp_path / "store") == []


def test_a_source_changing_while_copied_leaves_nothing_under_a_real_name(tmp_path, monkeypatch):
    source = tmp_path / "overlay.png"
    source.write_bytes(DATA)
    stale = "f" * 64  # the hash the source had "before" it changed
    monkeypatch.setattr(artifacts_module, "file_sha256", lambda path: stale)
    store = ArtifactStore(tmp_path / "store")
    with pytest.raises(ArtifactError, match="changed while it was being stored"):
        store.put(source, kind="overlay_png")
    assert _files(tmp_path / "store") == []  # the temporary file is gone too


def test_reads_are_verified(tmp_path):
    store = ArtifactStore(tmp_path)
    view = store.put(DATA, kind="results_json")
    store.verify(view.uri)
    path = store.path(view.uri)
    path.write_bytes(DATA[:-1] + b"?")
    with pytest.raises(ArtifactError, match="corrupt"):
        store.read_bytes(view.uri)
    with pytest.raises(ArtifactError, match="corrupt"):
        store.verify(view.uri)
    store.put(DATA, kind="results_json")  # a damaged copy is replaced by the next put of the same content
    assert store.read_bytes(view.uri) == DATA
    path.unlink()
    with pytest.raises(ArtifactError, match="missing"):
        store.read_bytes(view.uri)
    assert not store.exists(view.uri)


def test_bad_references_are_refused(tmp_path):
    store = ArtifactStore(tmp_path)
    for bad in ("artifact://sha256/xyz", "../../etc/passwd", "A" * 64):
        with pytest.raises(ArtifactError, match="not an artifact URI"):
            store.path(bad)
    with pytest.raises(ArtifactError, match="cannot read artifact"):
        store.put(tmp_path / "absent.png", kind="overlay_png", name="absent.png")
