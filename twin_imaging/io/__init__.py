"""Image input and output: DICOM series → Volume, NIfTI in and out."""

from __future__ import annotations

import os
from pathlib import Path

import pydicom

from twin_imaging.io.dicom_reader import DicomScan, load_series, read_dicom_series, scan_dicom
from twin_imaging.io.nifti import is_nifti_path, read_nifti, write_nifti
from twin_imaging.volume import Volume

# pydicom warns and logs every invalid value it reads, value included ("Invalid value for VR DA: '19701332'"): a
# patient's birth date in the service's logs. Values that matter are checked where they are used
# (twin_imaging.io.dicom_values, dicom_series), so pydicom's own reading check stays quiet.
pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE

__all__ = [
    "DicomScan",
    "is_nifti_path",
    "load_series",
    "read_dicom_series",
    "read_image",
    "read_nifti",
    "scan_dicom",
    "write_nifti",
]


def read_image(path: str | os.PathLike, *, series_instance_uid: str | None = None) -> Volume:
    """A NIfTI file, or the chosen series of a DICOM folder, zip or file, as a Volume."""
    if is_nifti_path(path) and Path(path).is_file():
        return read_nifti(path)
    return read_dicom_series(path, series_instance_uid=series_instance_uid)
