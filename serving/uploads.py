"""Uploaded parts → one input the pipeline reads: a DICOM folder, a zip, or a NIfTI file.

Checks what the pipeline cannot see once parts are on disk: an empty upload, a part that is not DICOM among DICOM
parts, a NIfTI without a patient. A zip's member names (``../``), sizes and counts are checked when the pipeline
opens it (``twin_imaging.io.dicom_sources``), which refuses an unsafe zip whole.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from pathlib import Path

from serving.errors import ApiError
from twin_imaging.errors import InputError
from twin_imaging.io import is_nifti_path

_TEMP_PREFIX = re.compile(r"^tmp[a-z0-9_]{8}")  # BentoML's temporary name before the part's own file name


def part_name(path: Path) -> str:
    """The file name the client sent (BentoML keeps it after a temporary prefix)."""
    return _TEMP_PREFIX.sub("", path.name) or path.name


def stage_upload(parts: list[Path], target: Path, *, patient_id: str | None) -> tuple[Path, str]:
    """Move ``parts`` under ``target``; returns (the input to analyse, its kind: "dicom", "zip" or "nifti")."""
    if not parts:
        raise ApiError(400, "no files were uploaded: send DICOM files, one zip of them, or one NIfTI (field 'files')")
    target.mkdir(parents=True, exist_ok=True)
    if len(parts) == 1:
        part = parts[0]
        name = part_name(part)
        if is_nifti_path(Path(name)):
            if not patient_id:
                raise InputError("a NIfTI carries no patient: give patient_id with it")
            return _move(part, target / name), "nifti"
        if zipfile.is_zipfile(part):
            return _move(part, target / "upload.zip"), "zip"
    refused = [f"{part_name(p)!r}" for p in parts if not is_dicom_file(p)]
    if refused:
        shown = ", ".join(refused[:10]) + (f" and {len(refused) - 10} more" if len(refused) > 10 else "")
        raise InputError(
            f"{len(refused)} of {len(parts)} uploaded parts are not DICOM files (no DICM preamble): {shown}; "
            "send DICOM Part 10 files, one zip, or one NIfTI (.nii, .nii.gz)"
        )
    folder = target / "dicom"
    folder.mkdir(exist_ok=True)
    for index, part in enumerate(parts):
        _move(part, folder / f"{index:06d}.dcm")
    return folder, "dicom"


def is_dicom_file(path: Path) -> bool:
    """A DICOM Part 10 file: 128 bytes of preamble, then ``DICM``."""
    try:
        with open(path, "rb") as stream:
            head = stream.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _move(source: Path, target: Path) -> Path:
    shutil.move(str(source), target)
    return target
