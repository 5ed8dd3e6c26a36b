"""Bad DICOM input: each case is refused (or repaired) with a message that names the problem."""

import zipfile

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from twin_imaging.errors import DicomInputError
from twin_imaging.io import read_dicom_series, scan_dicom
from twin_imaging.testing import PhantomGeometry, SeriesSpec, write_phantom_study

GEOMETRY = PhantomGeometry(shape=(40, 36, 12), spacing_mm=(9.0, 9.0, 5.0))


@pytest.fixture
def study(tmp_path):
    """A small phantom series whose files the tests damage; files listed in slice order (ascending position)."""
    written = write_phantom_study(tmp_path / "study", series=(SeriesSpec(geometry=GEOMETRY),))
    files = sorted(
        written.series[0].paths,
        key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]),
    )
    return tmp_path / "study", files


def edit(path, change):
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def test_an_empty_folder(tmp_path):
    with pytest.raises(DicomInputError, match="is empty"):
        read_dicom_series(tmp_path)


def test_a_missing_input(tmp_path):
    with pytest.raises(DicomInputError, match="not found"):
        read_dicom_series(tmp_path / "nowhere")


def test_a_folder_of_non_dicom_files(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "scan.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(100))
    with pytest.raises(DicomInputError, match=r"no DICOM images found.*notes\.txt \(not a DICOM file\)"):
        read_dicom_series(tmp_path)


def test_non_dicom_files_mixed_in_are_skipped_with_a_warning(study, caplog):
    folder, files = study
    (folder / "README.txt").write_text("exported by a PACS")
    (folder / ".DS_Store").write_bytes(bytes(64))
    scan = scan_dicom(folder)
    assert scan.chosen.n_slices == len(files)
    assert any("skipped 2 file(s)" in w and "README.txt" in w for w in scan.warnings)
    assert "README.txt" in caplog.text


def test_a_single_slice(study):
    _, files = study
    with pytest.raises(DicomInputError, match=r"only 1 image\(s\); a volume needs at least 3"):
        read_dicom_series([files[0]])


def test_corrupt_pixel_data_names_the_file(study):
    folder, files = study
    edit(files[4], lambda ds: setattr(ds, "PixelData", ds.PixelData[: len(ds.PixelData) // 3]))
    with pytest.raises(DicomInputError, match=rf"could not be decoded: {files[4].name}: pixel data cannot be decoded"):
        read_dicom_series(folder)


def test_corrupt_jpeg2000_stream_names_the_file(tmp_path):
    written = write_phantom_study(tmp_path, series=(SeriesSpec(geometry=GEOMETRY, compression="jpeg2000"),))
    victim = written.series[0].paths[3]
    ds = pydicom.dcmread(victim)
    frame = bytearray(pydicom.encaps.generate_fragmented_frames(ds.PixelData).__next__()[0])
    frame[20:] = bytes(len(frame) - 20)  # keep the codestream marker, zero the rest
    ds.PixelData = pydicom.encaps.encapsulate([bytes(frame)])
    ds.save_as(victim)
    with pytest.raises(DicomInputError, match=rf"{victim.name}: pixel data cannot be decoded \(JPEG 2000"):
        read_dicom_series(tmp_path)


def test_missing_pixel_data(study):
    folder, files = study
    edit(files[2], lambda ds: delattr(ds, "PixelData"))
    with pytest.raises(DicomInputError, match=rf"{files[2].name} has no pixel data"):
        read_dicom_series(folder)


def test_missing_geometry(study):
    folder, files = study
    edit(files[5], lambda ds: delattr(ds, "ImagePositionPatient"))
    with pytest.raises(DicomInputError, match=rf"1 of {len(files)} image\(s\) lack a valid ImagePositionPatient"):
        read_dicom_series(folder)


@pytest.mark.parametrize("bad_name", ["../evil.dcm", "a/../../evil.dcm", "/etc/evil.dcm", "C:/evil.dcm"])
def test_a_zip_with_escaping_paths_is_refused_whole(study, tmp_path, bad_name):
    _, files = study
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for f in files:
            zipped.write(f, f.name)
        zipped.writestr(bad_name, files[0].read_bytes())
    with pytest.raises(DicomInputError, match=r"refusing upload\.zip: 1 zip entry would escape the archive"):
        read_dicom_series(archive)


def test_two_patients_in_one_folder_are_refused_without_naming_them(study):
    folder, files = study
    for f in files[:6]:
        edit(f, lambda ds: (setattr(ds, "PatientID", "OTHER-PATIENT-77"), setattr(ds, "PatientName", "Roe^Rick")))
    with pytest.raises(DicomInputError, match="2 different patients") as refused:
        read_dicom_series(folder)
    assert "OTHER-PATIENT-77" not in str(refused.value) and "Roe^Rick" not in str(refused.value)


def test_a_duplicate_slice_is_refused_naming_its_position(study):
    folder, files = study
    copy = folder / "copy.dcm"
    copy.write_bytes(files[6].read_bytes())
    edit(copy, lambda ds: setattr(ds, "SOPInstanceUID", generate_uid()))
    position = float(pydicom.dcmread(files[6]).ImagePositionPatient[2])
    with pytest.raises(DicomInputError, match=rf"1 duplicate slice position\(s\) along the normal: {position:.2f} mm"):
        read_dicom_series(folder)


def test_a_missing_slice_is_refused_naming_the_gap(study):
    folder, files = study
    below = float(pydicom.dcmread(files[6]).ImagePositionPatient[2])
    above = float(pydicom.dcmread(files[8]).ImagePositionPatient[2])
    files[7].unlink()
    with pytest.raises(
        DicomInputError,
        match=rf"1 missing slice position\(s\) at a step of 5 mm: 1 between {below:.2f} and {above:.2f}",
    ):
        read_dicom_series(folder)


def test_uneven_spacing_is_refused(study):
    folder, files = study
    edit(
        files[3],
        lambda ds: setattr(
            ds, "ImagePositionPatient", [*ds.ImagePositionPatient[:2], ds.ImagePositionPatient[2] + 1.3]
        ),
    )
    with pytest.raises(DicomInputError, match="uneven slice spacing"):
        read_dicom_series(folder)


def test_spacing_jitter_within_tolerance_is_accepted(study):
    folder, files = study
    edit(
        files[3],
        lambda ds: setattr(
            ds, "ImagePositionPatient", [*ds.ImagePositionPatient[:2], ds.ImagePositionPatient[2] + 0.02]
        ),
    )
    assert read_dicom_series(folder).spacing_mm[2] == pytest.approx(5.0)


def test_gantry_tilt_is_refused_with_the_angle(study):
    folder, files = study
    shift_per_slice = 5.0 * np.tan(np.radians(15))
    for k, f in enumerate(files):

        def tilt(ds, k=k):
            x, y, z = (float(v) for v in ds.ImagePositionPatient)
            ds.ImagePositionPatient = [x, y + k * shift_per_slice, z]
            ds.GantryDetectorTilt = 15

        edit(f, tilt)
    with pytest.raises(DicomInputError, match=r"sheared by 15\.00 degrees \(gantry tilt; GantryDetectorTilt says 15"):
        read_dicom_series(folder)


def test_one_slice_in_another_orientation_splits_off_and_leaves_a_gap(study):
    folder, files = study
    turned = np.radians(3)
    edit(
        files[5],
        lambda ds: setattr(
            ds, "ImageOrientationPatient", [np.cos(turned), np.sin(turned), 0, -np.sin(turned), np.cos(turned), 0]
        ),
    )
    with pytest.raises(DicomInputError) as refused:
        read_dicom_series(folder)
    message = str(refused.value)
    assert "split by orientation" in message and "1 missing slice position" in message
