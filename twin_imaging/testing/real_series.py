"""A real DICOM series made sendable: deterministic UIDs and pseudonymous identifiers, pixels untouched.

The real CT series in ``../shared/data/totalsegmentator/example_ct_dicom`` has blank Study, Series and SOP Instance
UIDs and blank patient identifiers; a PACS, highdicom and dciodvfy all need them. ``copy_series_with_uids`` writes a
copy with valid UIDs derived from a seed (the same seed gives the same UIDs), a pseudonymous patient, and the pixel
data and transfer syntax exactly as they were (no decoding, no recompression).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid

_UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "FrameOfReferenceUID")


def copy_series_with_uids(
    source_dir: str | os.PathLike, target_dir: str | os.PathLike, *, seed: str = "twin-imaging"
) -> list[Path]:
    """Copy every DICOM file of ``source_dir`` into ``target_dir`` with new UIDs; return the written paths.

    Study, Series and Frame of Reference UIDs are replaced consistently (one new UID per distinct original value,
    blank included), each SOP Instance UID (and the file meta's Media Storage SOP Instance UID) gets its own, a blank
    SOP Class UID is taken from the file meta, PatientID/PatientName become a pseudonym, and a blank StudyID or
    AccessionNumber is filled in. Files that are not DICOM are skipped; a folder without any is an error.
    """
    source_dir, target_dir = Path(source_dir), Path(target_dir)
    datasets = []
    for path in sorted(p for p in source_dir.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            datasets.append((path, pydicom.dcmread(path)))
        except InvalidDicomError:
            continue
    if not datasets:
        raise ValueError(f"no DICOM files in {source_dir}")

    # The source's identity (its files' original instance UIDs, or their names where blank) enters every new UID,
    # so two different series copied with the same seed never share UIDs.
    originals = [_original_instance_key(path, ds) for path, ds in datasets]
    source_key = hashlib.sha256("\n".join(originals).encode()).hexdigest()
    pseudonym = hashlib.sha256(f"{seed}\n{source_key}".encode()).hexdigest()[:10].upper()

    def new_uid(*parts: str) -> str:
        return generate_uid(entropy_srcs=[seed, source_key, *parts])

    target_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for (_, ds), original in zip(datasets, originals, strict=True):
        for keyword in _UID_KEYWORDS:
            ds.__setattr__(keyword, new_uid(keyword, str(ds.get(keyword, "") or "")))
        sop_instance_uid = new_uid("SOPInstanceUID", original)
        ds.SOPInstanceUID = sop_instance_uid
        if not ds.get("SOPClassUID"):
            ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = sop_instance_uid
        ds.PatientID = f"TWIN-{pseudonym}"
        ds.PatientName = f"Pseudonym^{pseudonym}"
        if not ds.get("StudyID"):
            ds.StudyID = "1"
        if not ds.get("AccessionNumber"):
            ds.AccessionNumber = f"A{pseudonym}"[:16]
        path = target_dir / f"{sop_instance_uid}.dcm"
        ds.save_as(path, enforce_file_format=True)  # the pixel data element is written back as read
        written.append(path)
    return written


def _original_instance_key(path: Path, ds: pydicom.Dataset) -> str:
    uid = str(ds.get("SOPInstanceUID", "") or "")
    if not uid and hasattr(ds, "file_meta"):
        uid = str(ds.file_meta.get("MediaStorageSOPInstanceUID", "") or "")
    return uid or path.name
