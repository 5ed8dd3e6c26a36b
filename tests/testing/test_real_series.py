"""copy_series_with_uids: valid, deterministic UIDs and a pseudonym; pixel data and transfer syntax untouched."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.uid import UID

from tests.conftest import require_tool, shared_file
from twin_imaging.io.dicom_reader import read_dicom_series
from twin_imaging.testing import PhantomGeometry, SeriesSpec, write_phantom_study
from twin_imaging.testing.real_series import copy_series_with_uids


def read_all(paths) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p) for p in paths]


def check_copy(sources: list[pydicom.Dataset], copies: list[pydicom.Dataset]) -> None:
    assert len(copies) == len(sources)
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(keyword)) for ds in copies}
        assert len(values) == 1
        assert UID(values.pop()).is_valid
    sop_uids = [str(ds.SOPInstanceUID) for ds in copies]
    assert len(set(sop_uids)) == len(sop_uids)
    for source, copy in zip(sources, copies, strict=True):
        assert UID(copy.SOPInstanceUID).is_valid
        assert copy.file_meta.MediaStorageSOPInstanceUID == copy.SOPInstanceUID
        assert copy.SOPClassUID == source.file_meta.MediaStorageSOPClassUID
        assert copy.file_meta.TransferSyntaxUID == source.file_meta.TransferSyntaxUID
        assert copy.PixelData == source.PixelData  # the encoded bytes, untouched
        assert copy.PatientID.startswith("TWIN-") and str(copy.PatientName).startswith("Pseudonym^")
        assert copy.StudyID and copy.AccessionNumber
        assert copy.InstanceNumber == source.InstanceNumber
        assert copy.ImagePositionPatient == source.ImagePositionPatient


@pytest.fixture(scope="module")
def real_dir(shared_data) -> Path:
    return shared_file(shared_data, "totalsegmentator/example_ct_dicom")


def test_copies_the_real_series(real_dir, tmp_path):
    paths = copy_series_with_uids(real_dir, tmp_path / "a")
    sources = read_all(sorted(p for p in real_dir.iterdir() if p.is_file()))
    copies = read_all(paths)
    check_copy(sources, copies)
    assert str(copies[0].file_meta.TransferSyntaxUID) == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    volume = read_dicom_series(tmp_path / "a")
    assert volume.shape == (512, 512, 20)
    assert volume.info.study_instance_uid == copies[0].StudyInstanceUID


def test_uids_are_deterministic_per_seed(real_dir, tmp_path):
    first = read_all(copy_series_with_uids(real_dir, tmp_path / "a"))
    again = read_all(copy_series_with_uids(real_dir, tmp_path / "b"))
    other = read_all(copy_series_with_uids(real_dir, tmp_path / "c", seed="another"))
    key = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID", "SOPInstanceUID", "PatientID")
    assert [[ds.get(k) for k in key] for ds in first] == [[ds.get(k) for k in key] for ds in again]
    for a, b in zip(first, other, strict=True):
        assert all(a.get(k) != b.get(k) for k in key)


def test_copy_adds_no_dciodvfy_errors(real_dir, tmp_path):
    tool = require_tool("dciodvfy")
    source = sorted(p for p in real_dir.iterdir() if p.is_file())[0]
    copy = copy_series_with_uids(real_dir, tmp_path)[0]  # copies come in the sources' file name order

    def errors(path: Path) -> set[str]:
        result = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
        return {ln for ln in (result.stdout + result.stderr).splitlines() if ln.startswith("Error")}

    assert pydicom.dcmread(source).InstanceNumber == pydicom.dcmread(copy).InstanceNumber
    before, after = errors(source), errors(copy)
    assert "Error - MediaStorageSOPInstanceUID different from SOPInstanceUID" in before
    # With a SOP Class the CT Image IOD is checked at last; what remains is the scanner's own omission.
    assert after <= {"Error - Missing attribute Type 2C Conditional Element=<Laterality> Module=<GeneralSeries>"}


def test_copies_a_series_with_blank_uids_and_skips_other_files(tmp_path):
    study = write_phantom_study(tmp_path / "src", (SeriesSpec(PhantomGeometry((32, 32, 4), (4.0, 4.0, 5.0))),))
    for path in study.paths:  # blank what the real series has blank
        ds = pydicom.dcmread(path)
        for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID", "AccessionNumber"):
            setattr(ds, keyword, "")
        ds.save_as(path)
    (tmp_path / "src" / "README.txt").write_text("not DICOM")
    sources = read_all(sorted(study.paths))
    copies = read_all(copy_series_with_uids(tmp_path / "src", tmp_path / "dst"))
    check_copy(sources, copies)
    assert read_dicom_series(tmp_path / "dst").shape == (32, 32, 4)
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "notes.txt").write_text("not DICOM either")
    with pytest.raises(ValueError, match="no DICOM files"):
        copy_series_with_uids(tmp_path / "none", tmp_path / "x")
