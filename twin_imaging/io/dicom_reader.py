"""Read a DICOM study into a `Volume`: collect → group → select (with reasons) → sort → validate → decode → HU.

scan = scan_dicom("study/")          # headers only: every series found, the chosen one and why
volume = load_series(scan.chosen)    # pixels of the chosen series
volume = read_dicom_series("study.zip")   # both steps
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from twin_imaging.errors import DicomInputError
from twin_imaging.io.dicom_pixels import decode_stack
from twin_imaging.io.dicom_series import SeriesCandidate, SeriesSelection, group_series, select_series
from twin_imaging.io.dicom_sources import CollectedInstances, DicomSource, collect_instances
from twin_imaging.settings import get_settings
from twin_imaging.volume import SourceImage, Volume

log = logging.getLogger(__name__)


@dataclass
class DicomScan:
    """What a DICOM input holds, from headers alone."""

    collected: CollectedInstances
    selection: SeriesSelection
    warnings: list[str] = field(default_factory=list)

    @property
    def chosen(self) -> SeriesCandidate:
        assert self.selection.chosen is not None  # select_series raises otherwise
        return self.selection.chosen


def scan_dicom(source: DicomSource, *, series_instance_uid: str | None = None) -> DicomScan:
    """Find every series in ``source`` and choose the one to analyse; raise if none is usable."""
    collected = collect_instances(source)
    warnings = []
    if collected.skipped:
        warnings.append(collected.skipped_summary())
    if not collected.instances:
        raise DicomInputError(
            "no DICOM images found in the input" + (f" ({collected.skipped_summary()})" if collected.skipped else "")
        )
    candidates = group_series(collected)
    selection = select_series(candidates, series_instance_uid=series_instance_uid)
    if not selection.chosen.series_instance_uid:
        warnings.append(
            "the chosen series has no SeriesInstanceUID: its images were grouped by study, modality, "
            "series number, description and frame of reference"
        )
    for message in warnings:
        log.warning(message)
    return DicomScan(collected, selection, warnings)


def load_series(candidate: SeriesCandidate) -> Volume:
    """Decode the chosen stack into a Volume (array [i, j, k], RAS affine, source references)."""
    if not candidate.usable:
        raise DicomInputError(f"series {candidate.label} cannot be read: " + "; ".join(candidate.problems))
    frames = candidate.frames
    stack = decode_stack(frames, threads=get_settings().dicom_decode_threads)  # (k, rows=j, columns=i)
    array = np.transpose(stack, (2, 1, 0))  # → [i, j, k], a view: no copy
    sources = tuple(
        SourceImage(
            sop_class_uid=_sop_class_uid(frame.instance.header),
            sop_instance_uid=str(frame.instance.header.get("SOPInstanceUID", "") or ""),
            frame_number=None if frame.frame_index is None else frame.frame_index + 1,
            location=frame.instance.location,
        )
        for frame in frames
    )
    return Volume(array=array, affine_ras=candidate.geometry.affine_ras(), info=candidate.info, sources=sources)


def read_dicom_series(source: DicomSource, *, series_instance_uid: str | None = None) -> Volume:
    """The chosen (or named) series of ``source`` as a Volume."""
    return load_series(scan_dicom(source, series_instance_uid=series_instance_uid).chosen)


def _sop_class_uid(ds) -> str:
    uid = str(ds.get("SOPClassUID", "") or "")
    if not uid and hasattr(ds, "file_meta"):
        uid = str(ds.file_meta.get("MediaStorageSOPClassUID", "") or "")
    return uid
