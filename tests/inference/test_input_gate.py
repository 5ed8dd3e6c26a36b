"""The input gate: what does not suit the model is refused by name before anything is segmented or filed."""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pydicom
import pytest
from click.testing import CliRunner
from pydicom.uid import MRImageStorage

from twin_imaging.cli import cli
from twin_imaging.inference.input_gate import UnsuitableInputError, check_input_suitability
from twin_imaging.io import write_nifti
from twin_imaging.testing import PhantomGeometry, SeriesSpec, make_phantom, write_phantom_study
from twin_imaging.testing.tiny_model import write_threshold_model_package
from twin_imaging.volume import Volume

GEOMETRY = PhantomGeometry(shape=(64, 64, 12), spacing_mm=(4.0, 4.0, 5.0))


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return write_threshold_model_package(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def ct() -> Volume:
    return make_phantom(GEOMETRY).image


def analyze(tmp_path, source, package) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli,
        [
            "analyze",
            str(source),
            "--out",
            str(tmp_path / "out"),
            "--model",
            str(package.root),
            "--no-progress",
            "--patient",
            "P1",
            "--data-dir",
            str(tmp_path / "twin"),
        ],
    )
    return result.exit_code, result.output


def assert_refused_and_nothing_filed(tmp_path, code: int, output: str, *expected: str) -> None:
    assert code == 1, output
    assert "Traceback" not in output and "internal error" not in output
    for text in expected:
        assert text in output, output
    assert not (tmp_path / "out" / "results.json").exists()
    assert not (tmp_path / "out" / "seg.dcm").exists()
    twin = tmp_path / "twin" / "twin.sqlite3"
    if twin.exists():
        with sqlite3.connect(twin) as db:
            assert db.execute("SELECT count(*) FROM analysis").fetchone() == (0,)


def test_a_ct_phantom_passes(ct, package):
    check_input_suitability(ct, package.card)


def test_an_mr_series_is_refused_by_a_ct_model(tmp_path, package):
    study = write_phantom_study(tmp_path / "study", series=(SeriesSpec(geometry=GEOMETRY),))
    for path in study.series[0].paths:
        ds = pydicom.dcmread(path)
        ds.Modality, ds.SOPClassUID = "MR", MRImageStorage
        ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
        ds.save_as(path)
    code, output = analyze(tmp_path, tmp_path / "study", package)
    assert_refused_and_nothing_filed(tmp_path, code, output, "the series is MR", "is for CT")


@pytest.mark.parametrize(
    ("name", "damage", "message"),
    [
        ("nan block", lambda a: a.__setitem__((slice(10, 30), slice(10, 30), slice(2, 8)), np.nan), "NaN or infinite"),
        ("all nan", lambda a: a.fill(np.nan), "NaN or infinite"),
        ("infinite", lambda a: a.__setitem__((0, 0, 0), np.inf), "1 of"),
    ],
)
def test_non_finite_voxels_are_refused(tmp_path, ct, package, name, damage, message):
    array = ct.array.astype(np.float32)
    damage(array)
    write_nifti(ct.with_array(array), tmp_path / "ct.nii.gz")
    code, output = analyze(tmp_path, tmp_path / "ct.nii.gz", package)
    assert_refused_and_nothing_filed(tmp_path, code, output, message)


def test_a_single_slice_is_refused(tmp_path, ct, package):
    write_nifti(Volume(ct.array[:, :, 5:6], ct.affine_ras), tmp_path / "one.nii.gz")
    code, output = analyze(tmp_path, tmp_path / "one.nii.gz", package)
    assert_refused_and_nothing_filed(tmp_path, code, output, "64 x 64 x 1 voxels")


def test_values_that_are_not_hounsfield_units_are_refused(tmp_path, ct, package):
    mr_like = (ct.array.astype(np.float32) + 1024.0) * 0.5  # positive intensities, as MR in a NIfTI
    write_nifti(ct.with_array(mr_like), tmp_path / "mr.nii.gz")
    code, output = analyze(tmp_path, tmp_path / "mr.nii.gz", package)
    assert_refused_and_nothing_filed(tmp_path, code, output, "not Hounsfield units")


def test_a_1000_mm_pixel_spacing_is_refused_before_any_large_allocation(tmp_path, package):
    study = write_phantom_study(tmp_path / "study", series=(SeriesSpec(geometry=GEOMETRY),))
    for path in study.series[0].paths:
        ds = pydicom.dcmread(path)
        ds.PixelSpacing = [1000, 1000]
        ds.save_as(path)
    start = time.perf_counter()
    code, output = analyze(tmp_path, tmp_path / "study", package)
    assert time.perf_counter() - start < 60  # a 3 mm grid of 64 m would have taken terabytes, not seconds
    assert_refused_and_nothing_filed(tmp_path, code, output, "64000 mm", "PixelSpacing")


def test_the_model_grid_bound_comes_from_the_settings(ct, package, monkeypatch):
    from twin_imaging.settings import get_settings

    monkeypatch.setenv("TWIN_IMAGING_GATE_MAX_MODEL_GRID_VOXELS", "1000")
    get_settings.cache_clear()
    with pytest.raises(UnsuitableInputError, match="more than the 1,000 allowed"):
        check_input_suitability(ct, package.card)
