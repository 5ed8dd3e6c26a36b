"""The measurements and every output file of one analysis, made by the calling thread and a small pool.

Once the label map exists, the measurements and the writers are independent of each other, except that the SR
needs the SEG and the measurements, and the overlays and meshes the measurements. Much of their time is spent
where Python lets go of the GIL (zlib for the NIfTI and viewer copies, numpy over the label map, Pillow's PNG
encoder, marching cubes), so two threads on two cores finish them in well under the serial time (measured:
``benchmarks/bench_analyze.py``). The DICOM SEG and SR are made on the calling thread: highdicom keeps an SQLite
index inside each SEG object, which only the thread that created it may use (a SEG made in a pool thread cannot
be read or pickled by its caller). The outputs are listed in one fixed order whatever finishes first, and the
first failure is raised once every worker has stopped, so no thread is left writing into the folder.
"""

from __future__ import annotations

import io
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from twin_imaging.anatomy import TUBULAR_CODES
from twin_imaging.files import file_sha256, write_bytes_atomic
from twin_imaging.io import write_nifti
from twin_imaging.io.dicom_seg import write_dicom_seg
from twin_imaging.io.dicom_sr import write_measurement_report
from twin_imaging.measure import StructureMeasurement, measure_structures
from twin_imaging.meshes import structure_meshes, write_meshes
from twin_imaging.models.card import ModelCard
from twin_imaging.overlays import OverlayStructure, render_overlays
from twin_imaging.quality_review import ReviewReason, review_segmentation
from twin_imaging.results import OutputFile
from twin_imaging.settings import get_settings
from twin_imaging.viewer_volumes import viewer_copies
from twin_imaging.volume import Volume

RESEARCH_NOTICE = "Research use only, not for diagnosis"

_LISTING_ORDER = ("labels_nifti", "dicom_seg", "dicom_sr", "overlay_png", "viewer_ct", "viewer_labels", "mesh_glb")


@dataclass
class AnalysisOutputs:
    measurements: list[StructureMeasurement]
    review: list[ReviewReason]
    files: list[OutputFile]  # in the fixed listing order
    seg: Dataset | None
    sr: Dataset | None


def measure_and_write(
    image: Volume,
    labels: Volume,
    source_headers: list[Dataset],
    card: ModelCard,
    out_dir: Path,
    timings: dict[str, float],
    *,
    threads: int | None = None,
    unattached_dropped_ml: dict[str, float] | None = None,
) -> AnalysisOutputs:
    """Measure the structures of ``labels``, review them, and write every output into ``out_dir``.
    ``unattached_dropped_ml``: what the segmenter left out of the masks, for the review (``SegmentationResult``).

    ``timings`` receives the seconds of the measurements (``measure``) and of each writer (``write.<name>``); they
    overlap, so their sum is more than the wall time.
    """
    workers = get_settings().output_threads if threads is None else threads
    jobs = _Jobs(timings, max(1, workers))
    try:
        measured = jobs.submit("measure", _measure, labels, image, card, unattached_dropped_ml or {})
        jobs.submit("write.labels_nifti", _labels_nifti, labels, out_dir)
        jobs.submit("write.viewer", _viewer, image, labels, out_dir)
        # a SEG needs at least one structure: the same condition as "some structure was measured", since every
        # value of the model's label map names a structure of its card
        seg = seg_file = sr = sr_file = None
        if source_headers and labels.array.any():
            seg, seg_file = jobs.run_here("write.dicom_seg", _dicom_seg, labels, source_headers, card, out_dir)
        measurements, review = measured.result()
        jobs.submit("write.overlays", _overlays, image, labels, card, measurements, out_dir)
        if measurements:
            jobs.submit("write.meshes", _meshes, labels, card, out_dir)
        if seg is not None and measurements:
            sr, sr_file = jobs.run_here(
                "write.dicom_sr", _dicom_sr, seg, measurements, source_headers, card, review, out_dir
            )
    except BaseException:
        jobs.shutdown(cancel=True)  # the queued jobs are dropped; no running one outlives the analysis
        raise
    jobs.shutdown(cancel=False)
    files = [f for f in (seg_file, sr_file) if f is not None]
    for future in jobs.futures:
        if future is not measured:
            files.extend(future.result())  # the first failure, in submission order
    files.sort(key=lambda f: _LISTING_ORDER.index(f.kind))  # stable: the overlays keep their plane order
    return AnalysisOutputs(measurements, review, files, seg, sr)


class _Jobs:
    def __init__(self, timings: dict[str, float], workers: int) -> None:
        self.timings = timings
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="outputs")
        self.futures: list[Future] = []

    def submit(self, name: str, job: Callable, *args) -> Future:
        future = self.pool.submit(self.run_here, name, job, *args)
        self.futures.append(future)
        return future

    def run_here(self, name: str, job: Callable, *args):
        start = time.perf_counter()
        try:
            return job(*args)
        finally:
            self.timings[name] = time.perf_counter() - start

    def shutdown(self, *, cancel: bool) -> None:
        self.pool.shutdown(wait=True, cancel_futures=cancel)


def _measure(
    labels: Volume, image: Volume, card: ModelCard, unattached_dropped_ml: dict[str, float]
) -> tuple[list[StructureMeasurement], list[ReviewReason]]:
    tubular = [s.name for s in card.structures if s.type.value in TUBULAR_CODES]
    measurements = measure_structures(labels, image, label_names=card.label_names(), tubular=tubular)
    return measurements, review_segmentation(measurements, labels.shape, labels.affine_ras, card, unattached_dropped_ml)


def _labels_nifti(labels: Volume, out_dir: Path) -> list[OutputFile]:
    return [_output("labels_nifti", write_nifti(labels, out_dir / "labels.nii.gz"))]


def _viewer(image: Volume, labels: Volume, out_dir: Path) -> list[OutputFile]:  # what the browser viewer loads
    small_ct, small_labels = viewer_copies(image, labels, max_mb=get_settings().viewer_volume_max_mb)
    return [
        _output("viewer_ct", write_nifti(small_ct, out_dir / "viewer_ct.nii.gz")),
        _output("viewer_labels", write_nifti(small_labels, out_dir / "viewer_labels.nii.gz")),
    ]


def _dicom_seg(labels: Volume, headers: list[Dataset], card: ModelCard, out_dir: Path) -> tuple[Dataset, OutputFile]:
    seg = write_dicom_seg(labels, headers, card)
    return seg, _output("dicom_seg", _write_dicom(seg, out_dir / "seg.dcm"), seg.SOPInstanceUID)


def _dicom_sr(seg, measurements, headers, card, review, out_dir: Path) -> tuple[Dataset, OutputFile]:
    sr = write_measurement_report(seg, measurements, headers, card, review=review)
    return sr, _output("dicom_sr", _write_dicom(sr, out_dir / "sr.dcm"), sr.SOPInstanceUID)


def _overlays(image: Volume, labels: Volume, card: ModelCard, measurements, out_dir: Path) -> list[OutputFile]:
    structures = [OverlayStructure(s.label, s.display_name, tuple(s.color_rgb)) for s in card.structures]
    overlays = render_overlays(
        image,
        labels,
        structures,
        out_dir,
        measurements=measurements,
        title=f"{card.title} ({card.model_id} {card.version})",
        footer=RESEARCH_NOTICE,
    )
    return [_output("overlay_png", path, plane=plane) for plane, path in overlays.items()]


def _meshes(labels: Volume, card: ModelCard, out_dir: Path) -> list[OutputFile]:
    colors = {s.name: tuple(s.color_rgb) for s in card.structures}
    meshes = structure_meshes(labels, colors, names=[s.name for s in card.structures])
    return [_output("mesh_glb", write_meshes(meshes, out_dir / "meshes.glb"))]


def _write_dicom(ds: Dataset, path: Path) -> Path:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    return write_bytes_atomic(path, buffer.getvalue())


def _output(kind: str, path: Path, sop_instance_uid: str | None = None, *, plane: str | None = None) -> OutputFile:
    return OutputFile(
        kind=kind,
        file=path.name,
        sha256=file_sha256(path),
        size_bytes=os.path.getsize(path),
        sop_instance_uid=sop_instance_uid,
        plane=plane,
    )
