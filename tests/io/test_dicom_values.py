"""Malformed dates and times outside the geometry are blanked, named by attribute only, and stop nothing."""

from __future__ import annotations

import subprocess

import pytest
from pydicom.dataset import Dataset

from tests.conftest import require_tool
from twin_imaging.io.dicom_values import blank_invalid_dates, is_valid_value
from twin_imaging.pipeline import analyze_study
from twin_imaging.testing import PatientSpec, PhantomGeometry, SeriesSpec, StudySpec, write_phantom_study
from twin_imaging.testing.tiny_model import write_threshold_model_package


@pytest.mark.parametrize(
    ("vr", "value", "valid"),
    [
        ("DA", "19700101", True),
        ("DA", "", True),
        ("DA", "19701332", False),
        ("DA", "20230229", False),
        ("DA", "1970-01-01", False),
        ("TM", "093000", True),
        ("TM", "0930", True),
        ("TM", "093000.123456", True),
        ("TM", "256100", False),
        ("DT", "20240115093000", True),
        ("DT", "20241315", False),
    ],
)
def test_dates_and_times_are_checked_against_the_calendar(vr, value, valid):
    assert is_valid_value(vr, value) is valid


def test_only_the_bad_header_is_copied_and_the_warning_never_holds_the_value():
    good, bad = Dataset(), Dataset()
    for ds, birth in ((good, "19700101"), (bad, "19701332")):
        ds.PatientBirthDate = birth
        ds.StudyTime = "093000"
    headers, warnings = blank_invalid_dates([good, bad])
    assert headers[0] is good
    assert headers[1] is not bad and headers[1].PatientBirthDate == "" and headers[1].StudyTime == "093000"
    assert bad.PatientBirthDate == "19701332"  # the caller's header is untouched
    assert warnings == ["PatientBirthDate is not a valid DICOM date or time: left empty in the results"]
    assert not any("1970" in w for w in warnings)
    # the one header of an Enhanced CT, once per slice: one copy stands for every slice
    repeated, _ = blank_invalid_dates([bad] * 5)
    assert all(h is repeated[0] for h in repeated) and repeated[0] is not bad


def test_a_study_with_an_impossible_birth_date_is_analysed(tmp_path, caplog):
    write_phantom_study(
        tmp_path / "study",
        patient=PatientSpec(patient_birth_date="19701332"),
        study=StudySpec(study_date="20241399"),
        series=(SeriesSpec(geometry=PhantomGeometry(shape=(64, 64, 12), spacing_mm=(4.0, 4.0, 5.0))),),
    )
    package = write_threshold_model_package(tmp_path / "model")
    caplog.clear()  # what the test's own writer logged
    result = analyze_study(tmp_path / "study", tmp_path / "out", package=package)
    warnings = result.document.input.warnings
    assert any(w.startswith("PatientBirthDate is not a valid") for w in warnings)
    assert any(w.startswith("StudyDate is not a valid") for w in warnings)
    dciodvfy = require_tool("dciodvfy")
    for name in ("seg.dcm", "sr.dcm"):
        report = subprocess.run([dciodvfy, str(tmp_path / "out" / name)], capture_output=True, text=True)
        errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{name}: " + "\n".join(errors)
    # pydicom would log the value itself ("Invalid value for VR DA: '19701332'"): a birth date in the logs
    assert "19701332" not in caplog.text


@pytest.mark.parametrize("implicit_vr", [False, True])
def test_dates_still_raw_in_a_header_read_from_a_file_are_checked(tmp_path, implicit_vr):
    """Headers come from files with their elements unconverted (raw bytes, no VR where the syntax is implicit)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit_vr else ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    ds.PatientBirthDate, ds.StudyDate, ds.StudyTime = "19701332", "20240115", "256100"
    ds.AcquisitionDateTime = "20240115093000"
    ds.OtherPatientIDs = ["19701332", "19701333"]  # LO, not a date: never looked at
    ds.save_as(tmp_path / "x.dcm", implicit_vr=implicit_vr, little_endian=True, enforce_file_format=True)
    header = pydicom.dcmread(tmp_path / "x.dcm", stop_before_pixels=True)
    headers, warnings = blank_invalid_dates([header])
    assert headers[0].PatientBirthDate == "" and headers[0].StudyTime == ""
    assert headers[0].StudyDate == "20240115" and headers[0].AcquisitionDateTime == "20240115093000"
    assert sorted(w.split()[0] for w in warnings) == ["PatientBirthDate", "StudyTime"]


def test_a_public_date_sent_with_the_unknown_vr_is_checked_as_a_date(tmp_path):
    """Some senders write a known attribute with VR UN; pydicom reads it back as its dictionary VR."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", generate_uid()
    ds.PatientBirthDate, ds.StudyDate = "19701332", "20240115"
    ds.save_as(tmp_path / "da.dcm", enforce_file_format=True)
    # pydicom writes a known tag with its dictionary VR: the UN encoding is made by hand (explicit VR UN: two
    # reserved bytes and a 4-byte length)
    data = (tmp_path / "da.dcm").read_bytes()
    for tag, value in ((b"\x10\x00\x30\x00", b"19701332"), (b"\x08\x00\x20\x00", b"20240115")):
        data = data.replace(tag + b"DA\x08\x00" + value, tag + b"UN\x00\x00\x08\x00\x00\x00" + value)
    (tmp_path / "un.dcm").write_bytes(data)
    header = pydicom.dcmread(tmp_path / "un.dcm", stop_before_pixels=True)
    assert [e.VR for e in header.elements() if e.tag in (0x00100030, 0x00080020)] == ["UN", "UN"]
    headers, warnings = blank_invalid_dates([header])
    assert [w.split()[0] for w in warnings] == ["PatientBirthDate"]
    assert headers[0].PatientBirthDate == "" and headers[0].StudyDate == "20240115"
