"""The measurements and outputs made by a pool of threads: the same files as one thread makes, listed in one order,
a SEG its caller can use, and a failing writer that fails the analysis with no worker left running."""

from __future__ import annotations

import pickle
import threading

import pytest

from twin_imaging import analysis_outputs
from twin_imaging.pipeline import analyze_study
from twin_imaging.testing import PhantomGeometry, SeriesSpec, write_phantom_study
from twin_imaging.testing.tiny_model import write_threshold_model_package

GEOMETRY = PhantomGeometry(shape=(96, 80, 40), spacing_mm=(3.0, 3.0, 3.0))
DETERMINISTIC = ("labels_nifti", "overlay_png", "viewer_ct", "viewer_labels", "mesh_glb")


@pytest.fixture(scope="module")
def study_and_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    write_phantom_study(root / "study", series=(SeriesSpec(geometry=GEOMETRY),))
    return root / "study", write_threshold_model_package(root / "model")


def _analyse(study, package, out_dir, threads, monkeypatch):
    monkeypatch.setenv("TWIN_IMAGING_OUTPUT_THREADS", str(threads))
    from twin_imaging.settings import get_settings

    get_settings.cache_clear()
    try:
        return analyze_study(study, out_dir, package=package)
    finally:
        monkeypatch.delenv("TWIN_IMAGING_OUTPUT_THREADS")
        get_settings.cache_clear()


def test_a_pool_writes_the_files_one_thread_writes_in_the_same_listing(study_and_model, tmp_path, monkeypatch):
    study, package = study_and_model
    serial = _analyse(study, package, tmp_path / "one", 1, monkeypatch)
    pooled = _analyse(study, package, tmp_path / "four", 4, monkeypatch)
    kinds = [o.kind for o in pooled.document.outputs]
    assert kinds == [o.kind for o in serial.document.outputs]
    assert kinds == sorted(kinds, key=analysis_outputs._LISTING_ORDER.index)
    assert {"labels_nifti", "dicom_seg", "dicom_sr", "overlay_png", "viewer_ct", "mesh_glb"} <= set(kinds)
    for one, four in zip(serial.document.outputs, pooled.document.outputs, strict=True):
        assert (one.file, one.plane) == (four.file, four.plane)
        if one.kind in DETERMINISTIC:  # the SEG and SR carry their creation time
            assert one.sha256 == four.sha256, one.file
    assert [m.voxel_count for m in pooled.measurements] == [m.voxel_count for m in serial.measurements]
    timings = pooled.document.timings_s
    assert {"measure", "write.dicom_seg", "write.dicom_sr", "write.overlays", "measure and write"} <= set(timings)
    # the SEG was made on the caller's thread: highdicom's per-object SQLite index is usable (and picklable) here
    assert pickle.loads(pickle.dumps(pooled.seg)).SOPInstanceUID == pooled.seg.SOPInstanceUID
    assert pooled.sr.SOPInstanceUID == pooled.document.outputs[kinds.index("dicom_sr")].sop_instance_uid


def test_a_failing_writer_fails_the_analysis_and_no_worker_outlives_it(study_and_model, tmp_path, monkeypatch):
    study, package = study_and_model

    def broken(*args):
        raise OSError("disk full while drawing the overlays")

    monkeypatch.setattr(analysis_outputs, "_overlays", broken)
    with pytest.raises(OSError, match="disk full while drawing the overlays"):
        _analyse(study, package, tmp_path / "out", 2, monkeypatch)
    assert not [t for t in threading.enumerate() if t.name.startswith("outputs")]
    assert not (tmp_path / "out" / "results.json").exists()  # no results document for a failed analysis
