"""The clinical flow in a few plain calls: a study in, segmentation, measurements and every output a user needs.

    result = analyze_study("study/", "out/")   # DICOM folder/zip/file or NIfTI

writes ``labels.nii.gz``, ``seg.dcm`` and ``sr.dcm`` (DICOM input), ``overlay_{axial,coronal,sagittal}.png`` and
``results.json`` (schema in ``twin_imaging.results``) into the output folder. Every file is written under a
temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from twin_imaging import __version__
from twin_imaging.analysis_outputs import measure_and_write
from twin_imaging.errors import DicomInputError
from twin_imaging.files import file_sha256, write_bytes_atomic
from twin_imaging.inference.segment import SegmentationResult, Segmenter
from twin_imaging.io import is_nifti_path, load_series, read_nifti, scan_dicom
from twin_imaging.io.dicom_uids import uid_from
from twin_imaging.io.dicom_values import blank_invalid_dates
from twin_imaging.measure import StructureMeasurement
from twin_imaging.models.card import ModelCard
from twin_imaging.models.package import ModelPackage, default_segmentation_package
from twin_imaging.quality_review import ReviewReason
from twin_imaging.results import (
    AnalysisDocument,
    InputReport,
    ModelReport,
    OutputFile,
    PrincipalExtentsReport,
    ReviewReasonReport,
    ReviewReport,
    SeriesCandidateReport,
    StructureReport,
)
from twin_imaging.volume import Volume

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class StudyInput:
    """The image to analyse and, for DICOM, the header of each of its slices (in slice order) and the selection."""

    volume: Volume
    report: InputReport
    source_headers: list[Dataset] = field(default_factory=list)


@dataclass
class AnalysisResult:
    input: StudyInput
    segmentation: SegmentationResult
    measurements: list[StructureMeasurement]
    review: list[ReviewReason]
    document: AnalysisDocument
    out_dir: Path
    seg: Dataset | None = None
    sr: Dataset | None = None

    def path(self, kind: str, plane: str | None = None) -> Path:
        for output in self.document.outputs:
            if output.kind == kind and (plane is None or output.plane == plane):
                return self.out_dir / output.file
        raise KeyError(f"no {kind} output")


def read_study(path: str | os.PathLike, *, series_instance_uid: str | None = None) -> StudyInput:
    """A NIfTI file, or the chosen series of a DICOM folder/zip/file, with the report of what was found."""
    path = Path(path)
    if is_nifti_path(path) and path.is_file():
        volume = read_nifti(path)
        report = _input_report(path, "NIfTI", volume)
        # A NIfTI carries no DICOM UIDs; the twin needs them, so they are derived from the file's bytes: the same
        # file gets the same UIDs (a repeated upload attaches once), another file other UIDs.
        digest = file_sha256(path)
        report.study_instance_uid = uid_from("twin-imaging nifti study", digest)
        report.series_instance_uid = uid_from("twin-imaging nifti series", digest)
        report.warnings.append("NIfTI input: study and series UIDs derived from the file's SHA-256")
        return StudyInput(volume, report)
    scan = scan_dicom(path, series_instance_uid=series_instance_uid)
    blank = sum(1 for frame in scan.chosen.frames if not str(frame.instance.header.get("SOPInstanceUID", "") or ""))
    if blank:  # refused before any decoding: the SEG and SR would fail after the segmentation
        raise DicomInputError(
            f"{blank} of the {len(scan.chosen.frames)} images (frames) of series {scan.chosen.label} have no SOP "
            "Instance UID: the results (DICOM SEG and SR) could not reference them, and a PACS would refuse them; "
            "send the series through the PACS (which assigns UIDs) or give each image its UID"
        )
    volume = load_series(scan.chosen)
    candidates = [
        SeriesCandidateReport(
            series=c.label,
            chosen=c is scan.chosen,
            reason=c.choice_reason if c is scan.chosen else c.rejection_reason,
        )
        for c in scan.selection.candidates
    ]
    headers, fixes = blank_invalid_dates([frame.instance.header for frame in scan.chosen.frames])
    report = _input_report(path, "DICOM", volume, candidates=candidates, warnings=[*scan.warnings, *fixes])
    return StudyInput(volume, report, headers)


def analyze_study(
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    package: ModelPackage | None = None,
    segmenter: Segmenter | None = None,
    series_instance_uid: str | None = None,
    progress: Progress | None = None,
) -> AnalysisResult:
    """Read, segment, measure and write every output for one study. ``segmenter`` reuses a loaded model."""
    analysis_start = time.perf_counter()
    timings: dict[str, float] = {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    notify = progress or (lambda stage, done, total: None)

    with _timed(timings, "read"):
        notify("read", 0, 1)
        study = read_study(input_path, series_instance_uid=series_instance_uid)
    if segmenter is None:
        segmenter = Segmenter(package or default_segmentation_package())
    card = segmenter.card
    with _timed(timings, "segment"):
        segmentation = segmenter.segment(study.volume, progress=lambda done, total: notify("segment", done, total))
    timings.update({f"segment.{k}": round(v, 3) for k, v in segmentation.timings_s.items()})
    labels = segmentation.labels
    notify("measure", 0, 1)  # the measurements and the writers run together from here
    with _timed(timings, "measure and write"):
        written = measure_and_write(
            study.volume,
            labels,
            study.source_headers,
            card,
            out_dir,
            timings,
            unattached_dropped_ml=segmentation.unattached_dropped_ml,
        )
    measurements, review, outputs = written.measurements, written.review, written.files

    timings["total"] = time.perf_counter() - analysis_start  # the stages overlap: this is the wall time
    document = _document(study, segmentation, measurements, review, card, outputs, timings)
    write_bytes_atomic(out_dir / "results.json", document.to_json().encode("utf-8"))
    notify("done", 1, 1)
    return AnalysisResult(study, segmentation, measurements, review, document, out_dir, written.seg, written.sr)


def _document(
    study: StudyInput,
    segmentation: SegmentationResult,
    measurements: list[StructureMeasurement],
    review: list[ReviewReason],
    card: ModelCard,
    outputs: list[OutputFile],
    timings: dict[str, float],
) -> AnalysisDocument:
    found = {m.name for m in measurements}
    structures = []
    for m in measurements:
        spec = card.structure(m.name)
        structures.append(
            StructureReport(
                name=m.name,
                label=m.label,
                snomed_code=spec.type.value,
                snomed_meaning=spec.type.meaning,
                laterality=spec.type_modifier.meaning if spec.type_modifier else None,
                display_name=spec.display_name,
                color_rgb=tuple(spec.color_rgb),
                voxel_count=m.voxel_count,
                volume_ml=round(m.volume_ml, 3),
                hu_mean=_round(m.hu_mean, 2),
                hu_std=_round(m.hu_std, 2),
                hu_percentiles={str(p): round(v, 1) for p, v in m.hu_percentiles.items()},
                centroid_ras_mm=_round3(m.centroid_ras_mm),
                bbox_min_ras_mm=_round3(m.bbox_min_ras_mm),
                bbox_max_ras_mm=_round3(m.bbox_max_ras_mm),
                greatest_extent_mm=round(m.greatest_extent_mm, 2),
                principal_extents_mm=PrincipalExtentsReport(
                    major_axis_mm=m.principal_extents.major_axis_mm,
                    minor_axis_mm=m.principal_extents.minor_axis_mm,
                    perpendicular_axis_mm=m.principal_extents.perpendicular_axis_mm,
                ),
                short_axis_mm=m.short_axis_mm,
            )
        )
    return AnalysisDocument(
        created=datetime.now(UTC).replace(microsecond=0),
        software={"name": "twin-imaging", "version": __version__},
        input=study.report,
        model=ModelReport(
            model_id=segmentation.model_id,
            version=segmentation.model_version,
            onnx_sha256=segmentation.onnx_sha256,
            providers=list(segmentation.providers),
            intended_use=card.intended_use,
        ),
        structures=structures,
        structures_not_found=[s.name for s in card.structures if s.name not in found],
        review=ReviewReport(
            required=bool(review),
            reasons=[ReviewReasonReport(code=r.code, structures=list(r.structures), message=r.message) for r in review],
        ),
        outputs=outputs,
        timings_s={k: round(v, 3) for k, v in timings.items()},
    )


def _input_report(path: Path, fmt: str, volume: Volume, **extra) -> InputReport:
    info = volume.info
    return InputReport(
        path=str(path),
        format=fmt,
        modality=info.modality,
        study_instance_uid=info.study_instance_uid,
        series_instance_uid=info.series_instance_uid,
        series_number=info.series_number,
        series_description=info.series_description,
        frame_of_reference_uid=info.frame_of_reference_uid,
        shape=volume.shape,
        spacing_mm=_round3(volume.spacing_mm),
        orientation=volume.orientation,
        series_found=extra.get("candidates", []),
        warnings=extra.get("warnings", []),
    )


class _timed:
    def __init__(self, timings: dict[str, float], name: str) -> None:
        self.timings, self.name = timings, name

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc) -> None:
        self.timings[self.name] = time.perf_counter() - self.start


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def _round3(values) -> tuple[float, float, float]:
    return tuple(round(float(v), 3) for v in values)  # type: ignore[return-value]
