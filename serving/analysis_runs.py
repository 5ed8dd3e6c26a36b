"""Where the service's analyses run: on the analysis queue's threads, never on a request thread, each staged into a
scratch folder of its own and attached to the twin before it answers.

    runs = AnalysisRuns(settings, segmenter, store)   # recovers the inbox, runs cut-off jobs again, watches the inbox
    reply = await runs.analyses.run(runs.analyze, files, patient_id, series_instance_uid, actor)  # synchronous
    status = await runs.submit_job(files, patient_id, series_instance_uid, actor)   # a job: queued whatever the load

Three ways in, one reply (``analysis_reply``): a synchronous request, a job (its upload moved into the job store,
spool/jobs, before it is acknowledged; one cut off by a crash or restart runs again at the next start) and a study
pushed by STOW-RS (spool/inbox; analysed once it has been quiet for serve_study_quiet_seconds). Scratch folders live
under spool/work (the outcome route's uploaded mask is read through one too), emptied at start: whatever a crash left
there has its input in the job store or the inbox.
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

from serving.analysis_queue import AnalysisQueue, AnalysisQueueClosed
from serving.jobs import JobStore
from serving.uploads import stage_upload
from twin_imaging.errors import TwinImagingError
from twin_imaging.inbox import ClaimedStudy, NotNow, StudyInbox
from twin_imaging.inference.segment import Segmenter
from twin_imaging.io import read_nifti
from twin_imaging.outcome.twin_scenarios import scenarios_after_attach
from twin_imaging.pipeline import analyze_study
from twin_imaging.settings import Settings
from twin_imaging.twin import views as v
from twin_imaging.twin.store import TwinStore
from twin_imaging.volume import Volume

log = logging.getLogger(__name__)


class AnalysisRuns:
    """The analysis queue, the job store and the STOW-RS inbox of one service worker, and the watcher thread that
    analyses the inbox's studies."""

    def __init__(self, settings: Settings, segmenter: Segmenter, store: TwinStore, outcome_model=None) -> None:
        self.settings, self.segmenter, self.store = settings, segmenter, store
        self.outcome_model = outcome_model  # for the scenarios of a renal mass; None: loaded when first needed
        self.analyses = AnalysisQueue(  # analyses take turns on threads of their own: memory stays bounded
            workers=settings.serve_analysis_workers, waiting_max=settings.serve_analysis_queue_max
        )
        self.spool = Path(settings.serve_spool_dir)
        self.inbox = StudyInbox(self.spool / "inbox", keep_analysed_seconds=settings.inbox_keep_analysed_hours * 3600.0)
        recovered = self.inbox.recover()
        if recovered:
            log.info("inbox: %d studies interrupted by a restart go round again", recovered)
        self.jobs = JobStore(self.spool / "jobs")
        self._clean_scratch()
        self._resume_jobs()
        self._stop = threading.Event()
        self._inbox_thread = threading.Thread(target=self._watch_inbox, name="inbox", daemon=True)
        self._inbox_thread.start()

    def analyze(
        self, files: list[Path], patient_id: str | None, series_instance_uid: str | None, actor: str
    ) -> dict[str, Any]:
        """On an analysis thread: stage the upload, analyse, attach."""
        with self.scratch_folder() as scratch:
            source, kind = stage_upload(files, scratch / "input", patient_id=patient_id)
            result = analyze_study(
                source, scratch / "out", segmenter=self.segmenter, series_instance_uid=series_instance_uid
            )
            analysis = self.store.attach_analysis(result, actor=actor, patient_identifier=patient_id)
            scenarios = self._scenarios(result, analysis, actor)
        return analysis_reply(analysis, result.document, input_kind=kind, scenarios=scenarios)

    async def submit_job(
        self, files: list[Path], patient_id: str | None, series_instance_uid: str | None, actor: str
    ) -> dict[str, Any]:
        """Move the upload into the job store (off the event loop), queue the job, answer its status."""
        params = {"patient_id": patient_id, "series_instance_uid": series_instance_uid}
        stage = functools.partial(stage_upload, files, patient_id=patient_id)
        job = await anyio.to_thread.run_sync(
            functools.partial(self.jobs.create, owner=actor, stage=stage, params=params)
        )
        self.analyses.submit(self._run_job, job.job_id, bounded=False)
        return job.status()

    def read_uploaded_nifti(self, path: Path) -> Volume:
        """An uploaded NIfTI (the outcome route's mask), whatever the upload's name (``read_nifti`` sees to it)."""
        return read_nifti(path)

    @contextmanager
    def scratch_folder(self) -> Iterator[Path]:
        """A temporary folder under spool/work, removed when done."""
        with tempfile.TemporaryDirectory(dir=self._scratch()) as scratch:
            yield Path(scratch)

    def _run_job(self, job_id: str) -> None:
        """On an analysis thread: run one job to its end, recording the outcome in the job store."""
        job = self.jobs.start(job_id)
        try:
            with self.scratch_folder() as scratch:
                result = analyze_study(
                    job.input_path,
                    scratch / "out",
                    segmenter=self.segmenter,
                    series_instance_uid=job.params.get("series_instance_uid"),
                )
                analysis = self.store.attach_analysis(
                    result, actor=job.owner, patient_identifier=job.params.get("patient_id")
                )
                scenarios = self._scenarios(result, analysis, job.owner)
            reply = analysis_reply(analysis, result.document, input_kind=job.input_kind, scenarios=scenarios)
            self.jobs.finish(job_id, reply)
        except TwinImagingError as exc:
            self.jobs.fail(job_id, str(exc))
        except Exception as exc:  # recorded for the caller by type only; the log has the rest
            log.exception("job %s failed", job_id)
            self.jobs.fail(job_id, f"internal error ({type(exc).__name__})")

    def _scenarios(self, result, analysis, actor: str) -> dict[str, Any] | None:
        """The surgical scenarios of a renal mass the model found, recorded on the twin (None: no mass)."""
        run = scenarios_after_attach(self.store, result, analysis, actor=actor, model=self.outcome_model)
        return None if run is None else run.to_json()

    def _resume_jobs(self) -> None:
        for job in self.jobs.unfinished():
            log.info("job %s cut off by a restart runs again", job.job_id)
            self.analyses.submit(self._run_job, job.job_id, bounded=False)

    def _scratch(self) -> Path:
        path = self.spool / "work"
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def _clean_scratch(self) -> None:
        """Temporary folders of analyses a crash cut off (their inputs live on in the job store or the inbox)."""
        for leftover in self._scratch().iterdir():
            shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)

    def _watch_inbox(self) -> None:
        """Analyse each pushed study once it has been quiet for serve_study_quiet_seconds."""
        while not self._stop.wait(1.0):
            try:
                self.inbox.process_due(self._analyze_pushed, quiet_seconds=self.settings.serve_study_quiet_seconds)
            except Exception:  # the watcher must survive anything (a full disk, a lost database connection)
                log.exception("inbox watcher")

    def _analyze_pushed(self, claimed: ClaimedStudy) -> dict[str, Any]:
        with self.scratch_folder() as scratch:
            analyse = functools.partial(analyze_study, segmenter=self.segmenter)
            try:
                future = self.analyses.submit(analyse, claimed.path, scratch / "out", bounded=False)
            except AnalysisQueueClosed:
                raise NotNow from None  # back to incoming: analysed at the next start
            result = future.result()
            senders = self.inbox.senders(claimed.study_instance_uid)
            analysis = self.store.attach_analysis(result, actor="api:dicomweb-stow", sent_by=senders)
            self._scenarios(result, analysis, "api:dicomweb-stow")
        return {"analysis_id": analysis.analysis_id, "series_instance_uid": analysis.series_instance_uid}

    def __del__(self) -> None:
        self._stop.set()


def analysis_reply(
    analysis: v.AnalysisView, document, *, input_kind: str, scenarios: dict[str, Any] | None = None
) -> dict[str, Any]:
    """An analysis as /v1/analyze and a completed job answer it: the twin's view, what the pipeline found in the
    input, where to download each artifact, and the surgical scenarios where the model found a renal mass."""
    body = v.to_jsonable(analysis)
    body["surgical_scenarios"] = scenarios
    body["input_kind"] = input_kind
    body["series_found"] = [c.model_dump() for c in document.input.series_found]
    body["warnings"] = list(document.input.warnings)
    body["structures_not_found"] = list(document.structures_not_found)
    body["downloads"] = [
        {
            "kind": a.kind,
            "name": a.name,
            "route": "/v1/artifacts/download",
            "body": {"analysis_id": analysis.analysis_id, "kind": a.kind, "name": a.name},
        }
        for a in analysis.artifacts
    ]
    return body
