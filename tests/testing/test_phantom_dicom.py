"""The phantom as a DICOM study, checked with pydicom and dciodvfy alone (not with the project's reader)."""

import os
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from twin_imaging.testing import (
    PatientSpec,
    PhantomGeometry,
    SeriesSpec,
    StudySpec,
    make_phantom,
    phantom_datasets,
    write_phantom_study,
)
from twin_imaging.testing.phantom_dicom import slab_average

SMALL = PhantomGeometry(shape=(64, 64, 24), spacing_mm=(6.0, 5.5, 8.0))
OBLIQUE = PhantomGeometry((48, 40, 12), (7.0, 7.0, 9.0), (0.866025, 0.5, 0.0, -0.5, 0.866025, 0.0), (5.0, -3.0, 10.0))
SERIES = (
    SeriesSpec(SMALL, series_number=1),
    SeriesSpec(SMALL, series_number=2, kind="localizer"),
    SeriesSpec(SMALL, series_number=3, kind="derived"),
    SeriesSpec(SMALL, series_number=4, compression="jpeg2000"),
    SeriesSpec(SMALL, series_number=5, compression="jpegls"),
    SeriesSpec(SMALL, series_number=6, compression="rle"),
    SeriesSpec(SMALL, series_number=7, multiframe=True),
    SeriesSpec(OBLIQUE, series_number=8, multiframe=True, compression="jpeg2000"),
    SeriesSpec(OBLIQUE, series_number=9),
)
SYNTAXES = {None: "1.2.840.10008.1.2.1", "jpeg2000": JPEG2000Lossless, "jpegls": JPEGLSLossless, "rle": RLELossless}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    return write_phantom_study(tmp_path_factory.mktemp("study"), SERIES, seed=11)


def hu_of(ds) -> np.ndarray:
    """Decoded pixels (rows, cols) or (frames, rows, cols) in HU, from the instance's own rescale."""
    if "PerFrameFunctionalGroupsSequence" in ds:
        transform = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
    else:
        transform = ds
    return ds.pixel_array.astype(np.int32) * int(transform.RescaleSlope) + int(transform.RescaleIntercept)


def affine_from_positions(iop, positions, pixel_spacing) -> tuple[np.ndarray, np.ndarray]:
    """The LPS affine a reader builds from the headers, and the slice order (ascending along the normal)."""
    row, col = np.array(iop[:3], float), np.array(iop[3:], float)
    normal = np.cross(row, col)
    positions = np.array(positions, float)
    order = np.argsort(positions @ normal)
    steps = np.diff(positions[order] @ normal)
    assert np.allclose(steps, steps[0])
    affine = np.eye(4)
    affine[:3, 0] = row * float(pixel_spacing[1])
    affine[:3, 1] = col * float(pixel_spacing[0])
    affine[:3, 2] = normal * steps[0]
    affine[:3, 3] = positions[order[0]]
    return affine, order


def require_dciodvfy() -> str:
    found = shutil.which("dciodvfy")
    if found:
        return found
    if os.environ.get("CI"):
        pytest.fail("dciodvfy is not installed (Debian package dicom3tools; the README's set-up installs it)")
    pytest.skip("dciodvfy is not installed (Debian package dicom3tools)")


@pytest.mark.parametrize("number", [1, 2, 3, 4, 5, 6, 7, 8, 9])
def test_dciodvfy_finds_no_errors(study, number):
    dciodvfy = require_dciodvfy()
    series = study.series_by_number(number)
    for path in {series.paths[0], series.paths[-1]}:  # both localizer planes; one slice otherwise
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
        report = result.stdout + result.stderr
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert not errors, f"series {number} ({path.name}):\n" + "\n".join(errors)
        assert ("EnhancedCTImage" if series.spec.multiframe else "CTImage") in report


@pytest.mark.parametrize("number", [1, 3, 4, 5, 6, 9])
def test_single_frame_series_decode_to_the_phantom_and_reproduce_its_affine(study, number):
    series = study.series_by_number(number)
    expected = series.phantom.image
    assert len(series.paths) == expected.shape[2]
    datasets = [pydicom.dcmread(p) for p in series.paths]
    assert {ds.file_meta.TransferSyntaxUID for ds in datasets} == {SYNTAXES[series.spec.compression]}
    iops = {tuple(float(v) for v in ds.ImageOrientationPatient) for ds in datasets}
    assert len(iops) == 1
    affine, order = affine_from_positions(
        next(iter(iops)), [ds.ImagePositionPatient for ds in datasets], datasets[0].PixelSpacing
    )
    assert np.max(np.abs(affine - expected.affine_lps)) < 1e-4
    for k, index in enumerate(order):
        ds = datasets[index]
        assert (ds.Rows, ds.Columns) == (expected.shape[1], expected.shape[0])
        assert ds.pixel_array.dtype == np.int16
        assert np.array_equal(hu_of(ds), expected.array[:, :, k].T)
        assert expected.sources[k].sop_instance_uid == ds.SOPInstanceUID
        assert expected.sources[k].location == str(series.paths[index])


def test_instance_numbers_run_1_to_n_against_the_normal(study):
    series = study.series_by_number(1)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in series.paths]
    normal = series.phantom.geometry.normal
    by_position = sorted(datasets, key=lambda ds: np.array(ds.ImagePositionPatient, float) @ normal)
    assert [int(ds.InstanceNumber) for ds in by_position] == list(range(len(datasets), 0, -1))
    assert [p.name for p in series.paths] != sorted(p.name for p in series.paths)  # names not in slice order


def test_all_instances_share_the_study_and_frame_of_reference_with_unique_uids(study):
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in study.paths]
    assert {ds.StudyInstanceUID for ds in datasets} == {study.study_instance_uid}
    assert len({ds.FrameOfReferenceUID for ds in datasets}) == 1
    assert len({ds.SOPInstanceUID for ds in datasets}) == len(datasets)
    assert len({ds.SeriesInstanceUID for ds in datasets}) == len(SERIES)
    for ds in datasets:
        series = study.series_by_number(int(ds.SeriesNumber))
        assert ds.SeriesInstanceUID == series.series_instance_uid
        assert ds.SOPInstanceUID in series.sop_instance_uids
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        info = series.info
        assert (ds.PatientID, str(ds.PatientName), ds.PatientBirthDate, ds.PatientSex) == (
            info.patient_id, info.patient_name, info.patient_birth_date, info.patient_sex,
        )  # fmt: skip
        assert (ds.StudyDate, ds.AccessionNumber, ds.Modality) == (info.study_date, info.accession_number, "CT")
        assert tuple(ds.ImageType) == info.image_type
        assert ds.SeriesDescription == info.series_description


def test_the_enhanced_instance_holds_every_slice_as_a_frame(study):
    series = study.series_by_number(7)
    expected = series.phantom.image
    (path,) = series.paths
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2.1"
    assert int(ds.NumberOfFrames) == expected.shape[2]
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    spacing = shared.PixelMeasuresSequence[0].PixelSpacing
    positions = [f.PlanePositionSequence[0].ImagePositionPatient for f in ds.PerFrameFunctionalGroupsSequence]
    affine, order = affine_from_positions(iop, positions, spacing)
    assert np.max(np.abs(affine - expected.affine_lps)) < 1e-4
    assert list(order) == list(range(expected.shape[2] - 1, -1, -1))  # frames stored against the normal
    frames = hu_of(ds)
    for k, frame in enumerate(order):
        assert np.array_equal(frames[frame], expected.array[:, :, k].T)
        assert expected.sources[k].frame_number == frame + 1
    assert shared.CTImageFrameTypeSequence[0].FrameType == ds.ImageType


def test_an_oblique_compressed_enhanced_instance_decodes_exactly(study):
    series = study.series_by_number(8)
    ds = pydicom.dcmread(series.paths[0])
    assert ds.file_meta.TransferSyntaxUID == JPEG2000Lossless
    frames = hu_of(ds)
    expected = series.phantom.image
    n = expected.shape[2]
    assert np.array_equal(frames, np.stack([expected.array[:, :, n - f].T for f in range(1, n + 1)]))
    assert np.allclose(expected.affine_lps[:3, 0] / 7.0, [0.866025, 0.5, 0.0], atol=1e-6)


def test_the_localizer_is_two_projections_through_the_body(study):
    series = study.series_by_number(2)
    assert series.phantom is None and len(series.paths) == 2 and len(series.localizers) == 2
    datasets = [pydicom.dcmread(p) for p in series.paths]
    planes = {}
    for ds, volume in zip(sorted(datasets, key=lambda d: int(d.InstanceNumber)), series.localizers, strict=True):
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
        hu = ds.pixel_array.astype(np.int32) + int(ds.RescaleIntercept)
        assert np.array_equal(hu, volume.array[:, :, 0].T)
        assert np.allclose(np.array(ds.ImagePositionPatient, float), volume.affine_lps[:3, 3])
        planes[tuple(float(v) for v in ds.ImageOrientationPatient)] = hu
        assert (hu == -1000).any() and (hu > -200).any()  # air beside the body, tissue through it
    assert set(planes) == {(1.0, 0.0, 0.0, 0.0, 0.0, -1.0), (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)}


def test_the_derived_series_is_a_slab_average_of_the_same_acquisition(study):
    image, derived = study.series_by_number(1).phantom, study.series_by_number(3).phantom
    assert study.series_by_number(3).info.image_type[:2] == ("DERIVED", "SECONDARY")
    assert np.array_equal(derived.image.array, slab_average(image.image.array))
    assert not np.array_equal(derived.image.array, image.image.array)
    assert np.array_equal(derived.labels.array, image.labels.array)
    inner = image.image.array[:, :, 4:7].astype(np.float64).mean(axis=2)
    assert np.array_equal(derived.image.array[:, :, 5], np.rint(inner))


def test_the_returned_phantom_is_the_one_make_phantom_gives(study):
    phantom = study.series_by_number(1).phantom
    again = make_phantom(SMALL, seed=11)
    assert np.array_equal(phantom.image.array, again.image.array)
    assert np.array_equal(phantom.labels.array, again.labels.array)
    assert phantom.labels.sources == phantom.image.sources


def test_files_without_suffix_and_datasets_in_memory_are_the_same_instances(tmp_path, study):
    bare = write_phantom_study(tmp_path, SERIES[:1], seed=11, file_suffix="")
    assert all(p.suffix == "" for p in bare.paths)
    in_memory = phantom_datasets(SERIES[:1], seed=11)
    assert bare.series[0].sop_instance_uids == study.series[0].sop_instance_uids
    assert in_memory.series[0].sop_instance_uids == study.series[0].sop_instance_uids
    assert in_memory.paths == () and len(in_memory.datasets) == SMALL.shape[2]
    on_disk = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in bare.paths)}
    for ds in in_memory.datasets:
        assert ds.file_meta.TransferSyntaxUID == on_disk[ds.SOPInstanceUID].file_meta.TransferSyntaxUID
        assert ds.PixelData == on_disk[ds.SOPInstanceUID].PixelData


def test_uids_are_determined_by_seed_patient_study_and_series():
    spec = (SeriesSpec(PhantomGeometry((32, 32, 3), (10.0, 10.0, 10.0))),)

    def uids(**kwargs):
        built = phantom_datasets(kwargs.pop("series", spec), **kwargs)
        return built.study_instance_uid, built.series[0].series_instance_uid, built.series[0].sop_instance_uids

    reference = uids()
    assert uids() == reference
    for changed in (
        uids(seed=1),
        uids(patient=PatientSpec(patient_id="PHANTOM-002")),
        uids(study=StudySpec(accession_number="PHA0002", study_date="20240301")),
    ):
        assert changed[0] != reference[0] and changed[1] != reference[1]
        assert not set(changed[2]) & set(reference[2])
    other_number = uids(series=(SeriesSpec(spec[0].geometry, series_number=2),))
    assert other_number[0] == reference[0] and other_number[1] != reference[1]
    # Compression re-encodes the same instances: the UIDs stay.
    assert uids(series=(SeriesSpec(spec[0].geometry, compression="rle"),)) == reference


def test_bad_series_specs_are_refused():
    with pytest.raises(ValueError, match="compression must be one of"):
        SeriesSpec(compression="jpeg")
    with pytest.raises(ValueError, match="kind must be"):
        SeriesSpec(kind="scout")
    with pytest.raises(ValueError, match="localizer series is written as single-frame"):
        SeriesSpec(kind="localizer", multiframe=True)
    with pytest.raises(ValueError, match="at least 32 x 32"):
        SeriesSpec(PhantomGeometry((16, 40, 4)), compression="jpeg2000")
    with pytest.raises(ValueError, match="series numbers must be unique"):
        phantom_datasets((SeriesSpec(SMALL), SeriesSpec(SMALL, kind="derived")))
