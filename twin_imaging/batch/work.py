"""One study of a cohort, analysed by a worker that keeps its model and its twin connection between studies.

    worker = BatchWorker(package_dir=None, database_url=..., artifacts_dir=..., dicomweb_url=None)
    outcome = worker.run(item)      # ItemOutcome: analysed (with its analysis id), skipped, or failed (with why)

Skipped: the twin holds an analysis of the same series, by the same model and version, of the same instances (the
key the twin itself uses to attach once), found from the DICOM headers alone, before any pixel is decoded. So a
second run over a cohort reads headers and analyses only what is missing. A failure is caught and reported with its
reason; it never stops the other studies. Nothing here knows about Ray (``twin_imaging.batch.ray_runner`` wraps it).
"""

from __future__ import annotations

import logging
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from twin_imaging.batch.manifest import BatchItem
from twin_imaging.errors import TwinImagingError

log = logging.getLogger(__name__)
BATCH_ACTOR = "batch"


@dataclass(frozen=True)
class ItemOutcome:
    row: int
    label: str
    status: str  # analysed, skipped, failed
    analysis_id: str | None = None
    reason: str | None = None
    seconds: float = 0.0
    worker: str = ""
    worker_peak_rss_mb: float = 0.0  # the worker process' peak resident memory so far


class BatchWorker:
    def __init__(
        self,
        *,
        package_dir: str | None,
        database_url: str,
        artifacts_dir: str,
        dicomweb_url: str | None = None,
        work_dir: str | None = None,
        name: str = "",
    ) -> None:
        from twin_imaging.inference.segment import Segmenter
        from twin_imaging.models.package import default_segmentation_package, load_model_package
        from twin_imaging.settings import get_settings
        from twin_imaging.twin.store import TwinStore

        package = load_model_package(Path(package_dir)) if package_dir else default_segmentation_package()
        self.segmenter = Segmenter(package)  # loaded once per worker
        self.store = TwinStore(database_url, artifacts_dir=Path(artifacts_dir), settings=get_settings())
        self.dicomweb_url = dicomweb_url
        self.work_dir = Path(work_dir) if work_dir else None
        self.name = name

    def run(self, item: BatchItem) -> ItemOutcome:
        started = time.perf_counter()
        scratch = Path(tempfile.mkdtemp(prefix="twin-batch-", dir=self.work_dir))
        try:
            outcome = self._run(item, scratch)
        except TwinImagingError as exc:
            outcome = ItemOutcome(item.row, item.label, "failed", reason=str(exc))
        except Exception as exc:  # one bad study never stops the others; the reason is reported
            log.exception("batch %s: unexpected failure", item.label)
            outcome = ItemOutcome(item.row, item.label, "failed", reason=f"{type(exc).__name__}: {exc}")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
        timing = {"seconds": time.perf_counter() - started, "worker": self.name, "worker_peak_rss_mb": peak_mb}
        return ItemOutcome(**{**outcome.__dict__, **timing})

    def _run(self, item: BatchItem, scratch: Path) -> ItemOutcome:
        from twin_imaging.outcome.twin_scenarios import scenarios_after_attach
        from twin_imaging.pipeline import analyze_study

        source = self._fetch(item, scratch) if item.is_dicomweb else Path(item.source)
        existing = self._attached_already(source)
        if existing is not None:
            return ItemOutcome(item.row, item.label, "skipped", existing, "already attached to the twin")
        result = analyze_study(source, scratch / "analysis", segmenter=self.segmenter)
        analysis = self.store.attach_analysis(result, actor=BATCH_ACTOR, patient_identifier=item.patient_id)
        scenarios_after_attach(self.store, result, analysis, actor=BATCH_ACTOR)
        return ItemOutcome(item.row, item.label, "analysed", analysis.analysis_id)

    def _fetch(self, item: BatchItem, scratch: Path) -> Path:
        from twin_imaging.pacs.dicomweb import DicomWebAuth, DicomWebPeer
        from twin_imaging.settings import get_settings

        if not self.dicomweb_url:
            raise TwinImagingError(f"{item.label} is a DICOMweb study but no DICOMweb URL was given (--dicomweb-url)")
        peer = DicomWebPeer(self.dicomweb_url, DicomWebAuth.from_settings(get_settings()))
        peer.retrieve_image_series(item.study_instance_uid, scratch / "study")
        return scratch / "study"

    def _attached_already(self, source: Path) -> str | None:
        return attached_analysis_id(self.store, self.segmenter.card, source)

    def close(self) -> None:
        self.store.close()


def attached_analysis_id(store, card, source: Path) -> str | None:
    """The id of the twin's analysis of this input by this model (``card``), from the DICOM headers alone; None
    where there is none, and for a NIfTI (its UIDs come from its bytes: attaching it again is idempotent anyway)."""
    from twin_imaging.io.dicom_reader import scan_dicom
    from twin_imaging.io.nifti import is_nifti_path

    if is_nifti_path(source) and source.is_file():
        return None
    chosen = scan_dicom(source).chosen
    uids = [str(f.instance.header.get("SOPInstanceUID", "") or "") for f in chosen.frames]
    return store.attached_analysis_id(chosen.series_instance_uid, card.model_id, card.version, uids)
