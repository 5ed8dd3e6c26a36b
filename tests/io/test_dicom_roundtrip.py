"""Phantom → DICOM (every way a hospital sends it) → reader: voxels and affine must come back exactly."""

import shutil
import subprocess
import zipfile

import numpy as np
import pydicom
import pytest

from twin_imaging.io import read_dicom_series, read_image, scan_dicom
from twin_imaging.testing import PhantomGeometry, SeriesSpec, phantom_datasets, write_phantom_study

from ..conftest import require_tool

SMALL = PhantomGeometry(shape=(64, 56, 24), spacing_mm=(5.5, 5.0, 6.0))


def assert_same_volume(volume, expected):
    assert volume.shape == expected.shape
    assert volume.array.dtype == np.int16
    assert np.array_equal(volume.array, expected.array)
    assert np.max(np.abs(volume.affine_ras - expected.affine_ras)) < 1e-4


@pytest.mark.parametrize("compression", [None, "jpeg2000", "jpegls", "rle"])
def test_phantom_round_trips_through_each_transfer_syntax(tmp_path, compression):
    study = write_phantom_study(tmp_path, series=(SeriesSpec(geometry=SMALL, compression=compression),))
    written = study.series[0]
    volume = read_dicom_series(tmp_path)
    assert_same_volume(volume, written.phantom.image)
    assert volume.info.series_instance_uid == written.series_instance_uid
    # Each slice points back at the instance it came from: the instance's position is that slice's position.
    positions = {}
    for f in written.paths:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        positions[ds.SOPInstanceUID] = np.array(ds.ImagePositionPatient, float)
    for k, source in enumerate(volume.sources):
        assert np.allclose(
            positions[source.sop_instance_uid], volume.affine_lps[:3, :3] @ [0, 0, k] + volume.affine_lps[:3, 3]
        )


@pytest.mark.parametrize(
    "orientation",
    ["axial", "coronal", "sagittal", (0.866025, 0.5, 0.0, -0.5, 0.866025, 0.0), (1.0, 0.0, 0.0, 0.0, 0.6, -0.8)],
)
def test_phantom_round_trips_in_any_orientation(tmp_path, orientation):
    geometry = PhantomGeometry(shape=(48, 40, 20), spacing_mm=(6.0, 6.5, 7.0), orientation=orientation)
    study = write_phantom_study(tmp_path, series=(SeriesSpec(geometry=geometry),))
    volume = read_dicom_series(tmp_path)
    assert_same_volume(volume, study.series[0].phantom.image)


def test_slices_are_ordered_by_position_not_instance_number(tmp_path):
    study = write_phantom_study(tmp_path, series=(SeriesSpec(geometry=SMALL),))
    volume = read_dicom_series(tmp_path)
    # The writer numbers instances head to feet, i.e. against the normal: position order must win.
    by_uid = {pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID: f for f in study.series[0].paths}
    numbers = [
        int(pydicom.dcmread(by_uid[s.sop_instance_uid], stop_before_pixels=True).InstanceNumber) for s in volume.sources
    ]
    assert numbers == sorted(numbers, reverse=True)
    assert_same_volume(volume, study.series[0].phantom.image)


def test_enhanced_multiframe_ct_round_trips(tmp_path):
    study = write_phantom_study(tmp_path, series=(SeriesSpec(geometry=SMALL, multiframe=True),))
    assert len(study.series[0].paths) == 1
    volume = read_dicom_series(tmp_path)
    assert_same_volume(volume, study.series[0].phantom.image)
    frame_numbers = [s.frame_number for s in volume.sources]
    assert sorted(frame_numbers) == list(range(1, SMALL.shape[2] + 1))
    assert len({s.sop_instance_uid for s in volume.sources}) == 1


def test_files_without_suffix_a_zip_a_file_list_and_datasets_in_memory_all_read_the_same(tmp_path):
    study = write_phantom_study(tmp_path / "study", series=(SeriesSpec(geometry=SMALL),), file_suffix="")
    expected = study.series[0].phantom.image
    assert all(f.suffix == "" for f in study.series[0].paths)
    archive = tmp_path / "study.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for f in study.series[0].paths:
            zipped.write(f, f"nested/{f.name}")
    datasets = list(phantom_datasets(series=(SeriesSpec(geometry=SMALL),)).datasets)
    for source in (tmp_path / "study", archive, list(study.series[0].paths), datasets):
        assert_same_volume(read_dicom_series(source), expected)
    assert_same_volume(read_image(archive), expected)


def test_a_study_with_a_localizer_a_derived_and_a_thick_series_selects_the_thin_original_axial(tmp_path):
    thin = PhantomGeometry(shape=(48, 48, 30), spacing_mm=(7.0, 7.0, 4.0))
    thick = PhantomGeometry(shape=(48, 48, 12), spacing_mm=(7.0, 7.0, 10.0))
    study = write_phantom_study(
        tmp_path,
        series=(
            SeriesSpec(geometry=thin, kind="localizer", series_number=1),
            SeriesSpec(geometry=thick, series_number=2, series_description="thick"),
            SeriesSpec(geometry=thin, series_number=3, series_description="thin"),
            SeriesSpec(geometry=thin, kind="derived", series_number=4, series_description="mip"),
        ),
    )
    scan = scan_dicom(tmp_path)
    assert scan.chosen.series_instance_uid == study.series[2].series_instance_uid
    assert "most slices (30 vs 12)" in scan.chosen.choice_reason
    reasons = {c.series_instance_uid: "; ".join(c.problems) for c in scan.selection.candidates}
    assert "localizer" in reasons[study.series[0].series_instance_uid]
    assert "derived" in reasons[study.series[3].series_instance_uid]
    assert reasons[study.series[1].series_instance_uid] == ""  # usable, just not the best
    thick = next(c for c in scan.selection.candidates if c.series_instance_uid == study.series[1].series_instance_uid)
    assert thick.rejection_reason == "usable, but another series ranked higher"
    # The user can still ask for the thick series by UID.
    volume = read_dicom_series(tmp_path, series_instance_uid=study.series[1].series_instance_uid)
    assert_same_volume(volume, study.series[1].phantom.image)


def test_equal_slice_counts_prefer_thinner_slices(tmp_path):
    a = PhantomGeometry(shape=(40, 40, 16), spacing_mm=(8.0, 8.0, 5.0))
    b = PhantomGeometry(shape=(40, 40, 16), spacing_mm=(8.0, 8.0, 3.0))
    study = write_phantom_study(
        tmp_path, series=(SeriesSpec(geometry=a, series_number=1), SeriesSpec(geometry=b, series_number=2))
    )
    scan = scan_dicom(tmp_path)
    assert scan.chosen.series_instance_uid == study.series[1].series_instance_uid
    assert "thinnest" in scan.chosen.choice_reason


def test_a_series_uid_holding_two_stacks_is_split_and_the_axial_stack_chosen(tmp_path):
    axial = PhantomGeometry(shape=(40, 40, 18), spacing_mm=(8.0, 8.0, 5.0))
    coronal = PhantomGeometry(shape=(40, 30, 10), spacing_mm=(8.0, 8.0, 8.0), orientation="coronal")
    study = write_phantom_study(tmp_path / "a", series=(SeriesSpec(geometry=axial, series_number=5),), seed=1)
    other = write_phantom_study(tmp_path / "b", series=(SeriesSpec(geometry=coronal, series_number=5),), seed=1)
    uid = study.series[0].series_instance_uid
    for f in other.series[0].paths:  # a scanner that put a coronal reformat in the same series
        ds = pydicom.dcmread(f)
        ds.SeriesInstanceUID = uid
        ds.save_as(tmp_path / "a" / f"coronal_{f.name}")
    scan = scan_dicom(tmp_path / "a")
    stacks = [c for c in scan.selection.candidates if c.series_instance_uid == uid]
    assert len(stacks) == 2 and all("split by orientation" in c.stack_label for c in stacks)
    assert scan.chosen.plane == "axial"
    assert_same_volume(read_dicom_series(tmp_path / "a"), study.series[0].phantom.image)


@pytest.mark.parametrize(("option", "syntax"), [("+el", "1.2.840.10008.1.2.4.57"), ("+e1", "1.2.840.10008.1.2.4.70")])
def test_jpeg_lossless_encoded_by_dcmtk_reads_exactly(tmp_path, option, syntax):
    dcmcjpeg = require_tool("dcmcjpeg")
    study = write_phantom_study(tmp_path / "raw", series=(SeriesSpec(geometry=SMALL),))
    (tmp_path / "jpeg").mkdir()
    for f in study.series[0].paths:
        subprocess.run([dcmcjpeg, option, str(f), str(tmp_path / "jpeg" / f.name)], check=True, capture_output=True)
    assert pydicom.dcmread(next((tmp_path / "jpeg").iterdir())).file_meta.TransferSyntaxUID == syntax
    assert_same_volume(read_dicom_series(tmp_path / "jpeg"), study.series[0].phantom.image)


@pytest.mark.parametrize(
    ("option", "bits", "slope", "syntax"),
    [("+eb", 8, 8, "1.2.840.10008.1.2.4.50"), ("+ee", 12, 1, "1.2.840.10008.1.2.4.51")],
)
def test_lossy_jpeg_baseline_and_extended_encoded_by_dcmtk_decode_close_to_the_source(
    tmp_path, option, bits, slope, syntax
):
    """Baseline JPEG holds 8 bits and extended 12: store the phantom that way first (CT scanners store 12 bits).

    Lossy coding at dcmcjpeg's default quality moves values by a few quantisation steps (``slope`` HU each, plus
    the 10 HU noise it smooths); a wrong decode (byte order, bit depth, rescale) would be off by hundreds.
    """
    dcmcjpeg = require_tool("dcmcjpeg")
    study = write_phantom_study(tmp_path / "raw", series=(SeriesSpec(geometry=SMALL),))
    (tmp_path / "narrow").mkdir()
    (tmp_path / "jpeg").mkdir()
    for f in study.series[0].paths:
        ds = pydicom.dcmread(f)
        hu = ds.pixel_array.astype(np.int32) * int(ds.RescaleSlope) + int(ds.RescaleIntercept)
        stored = np.clip(np.rint((hu + 1024) / slope), 0, 2**bits - 1)
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
            (8 if bits == 8 else 16),
            bits,
            bits - 1,
            0,
        )
        ds.RescaleSlope, ds.RescaleIntercept = slope, -1024
        ds.PixelData = stored.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
        for keyword in ("SmallestImagePixelValue", "LargestImagePixelValue", "WindowCenter", "WindowWidth"):
            ds.pop(keyword, None)
        ds.save_as(tmp_path / "narrow" / f.name)
        subprocess.run(
            [dcmcjpeg, option, str(tmp_path / "narrow" / f.name), str(tmp_path / "jpeg" / f.name)],
            check=True,
            capture_output=True,
        )
    assert pydicom.dcmread(next((tmp_path / "jpeg").iterdir())).file_meta.TransferSyntaxUID == syntax
    narrow = read_dicom_series(tmp_path / "narrow")
    lossy = read_dicom_series(tmp_path / "jpeg")
    assert lossy.shape == narrow.shape and np.allclose(lossy.affine_ras, narrow.affine_ras)
    error = np.abs(lossy.array.astype(np.int32) - narrow.array)
    step_hu = max(slope, 4)
    assert np.mean(error) < 3 * step_hu and np.percentile(error, 99) <= 12 * step_hu
    # The organs are still where they were: high correlation with the lossless source.
    assert np.corrcoef(lossy.array.ravel(), narrow.array.ravel())[0, 1] > 0.99


def test_copying_the_study_elsewhere_changes_nothing(tmp_path):
    study = write_phantom_study(tmp_path / "a", series=(SeriesSpec(geometry=SMALL, compression="jpeg2000"),))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    assert_same_volume(read_dicom_series(tmp_path / "b"), study.series[0].phantom.image)
