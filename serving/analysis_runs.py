"""Where the service's analyses run: on the analysis queue's threads, never on a request thread, each staged into a
scratch folder of its own and attached to the twin before it answers.

    runs = AnalysisRuns(settings, segmenter, store)   # recovers the inbox, runs cut-off jobs again, watches the inbox
    reply = await runs.analyses.run(runs.analyze, files, patient_id, series_instance_uid, actor)  # synchronous
    status = await runs.submit_job(files, patient_id, series_instance_uid, actor)   # a job: queued whatever the load

Three ways in, one reply (``analysis_reply``): a synchronous request, a job (its upload moved into the job store,
spool/jobs, before it is acknowledged; one cut off by a crash or restart runs again at the next start) and a study
pushed by STOW-RS (spool/inbox; analysed once it has been quiet for serve_study_quiet_seconds). Scratch folders live
under spool/work/<this process> (the outcome route's uploaded mask is read through one too); a process' folder is
removed once it has ended: whatever a crash left there has its input in the job store or the inbox.

Replicas: several services may share one twin database and one data folder (a volume they all mount). Every claim
of work goes through a lease in the database (``twin_imaging.twin.leases``): a pushed study, a job and a delivery
of results are each worked on by one replica at a time, and what a replica that died was doing is taken up by
another once its lease has run out (``work_lease_seconds``). Results of pushed studies go to
``serve_results_destination`` through the outbox, one item per analysis, delivered by whichever replica takes it.
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
from serving.jobs import QUEUED, RUNNING, JobStore
from serving.uploads import stage_upload
from twin_imaging.errors import TwinImagingError
from twin_imaging.inbox import ClaimedStudy, NotNow, StudyInbox
from twin_imaging.inference.segment import Segmenter
from twin_imaging.io import read_nifti
from twin_imaging.outcome.twin_scenarios import scenarios_after_attach
from twin_imaging.pacs.dimse import send_results
from twin_imaging.pacs.outbox import Destination, Outbox
from twin_imaging.pacs.results import result_datasets
from twin_imaging.pipeline import analyze_study
from twin_imaging.settings import Settings
from twin_imaging.twin import views as v
from twin_imaging.twin.leases import LeaseBoard, holder_gone
from twin_imaging.twin.store import TwinStore
from twin_imaging.volume import Volume

log = logging.getLogger(__name__)
JOB_LEASE = "job"
ADOPT_EVERY = 10  # watcher rounds (about seconds) between looks for jobs that replicas which died left unfinished


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
        self.leases = LeaseBoard(store.engine, seconds=settings.work_lease_seconds)
        self.inbox = StudyInbox(
            self.spool / "inbox",
            keep_analysed_seconds=settings.inbox_keep_analysed_hours * 3600.0,
            leases=self.leases,
        )
        recovered = self.inbox.recover()
        if recovered:
            log.info("inbox: %d studies interrupted by a restart go round again", recovered)
        self.destination = (
            Destination.parse(settings.serve_results_destination) if settings.serve_results_destination else None
        )
        self.outbox = Outbox(
            settings.outbox_dir,
            retry_seconds=settings.outbox_retry_seconds,
            max_attempts=settings.outbox_max_attempts,
            leases=self.leases,
        )
        self.jobs = JobStore(self.spool / "jobs")
        self._jobs_here: set[str] = set()  # jobs on this process' queue
        self._jobs_lock = threading.Lock()
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
        self._queue_job(job.job_id)
        return job.status()

    def read_uploaded_nifti(self, path: Path) -> Volume:
        """An uploaded NIfTI (the outcome route's mask), whatever the upload's name (``read_nifti`` sees to it)."""
        return read_nifti(path)

    @contextmanager
    def scratch_folder(self) -> Iterator[Path]:
        """A temporary folder under spool/work, removed when done."""
        with tempfile.TemporaryDirectory(dir=self._scratch()) as scratch:
            yield Path(scratch)

    def _queue_job(self, job_id: str) -> None:
        with self._jobs_lock:
            if job_id in self._jobs_here:
                return
            self._jobs_here.add(job_id)
        self.analyses.submit(self._run_job, job_id, bounded=False)

    def _run_job(self, job_id: str) -> None:
        """On an analysis thread: run one job to its end (unless another replica holds it, or it has ended),
        recording the outcome in the job store."""
        try:
            if not self.leases.take(JOB_LEASE, job_id):
                return  # another replica runs it; if it dies, the job is queued here again once its lease runs out
            with self.leases.held(JOB_LEASE, job_id):
                if self.jobs.get(job_id).state in (QUEUED, RUNNING):
                    self._run_held_job(job_id)
        finally:
            with self._jobs_lock:
                self._jobs_here.discard(job_id)

    def _run_held_job(self, job_id: str) -> None:
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
        """Queue every unfinished job not queued here yet: cut off by a restart, or held by a replica that died
        (taken once its lease runs out; one still held elsewhere is skipped when its turn comes)."""
        for job in self.jobs.unfinished():
            if job.job_id not in self._jobs_here:
                log.info("job %s, unfinished, is queued here", job.job_id)
                self._queue_job(job.job_id)

    def _scratch(self) -> Path:
        path = self.spool / "work" / self.leases.holder.replace(":", "-")
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        return path

    def _clean_scratch(self) -> None:
        """Scratch folders of processes of this host that have ended (a crash cut their analyses off; the inputs
        live on in the job store or the inbox). Other hosts' folders are theirs to clean."""
        self._scratch()
        for leftover in (self.spool / "work").iterdir():
            owner = leftover.name.rsplit("-", 2)  # the holder name host:pid:nonce, written with dashes
            if leftover.is_dir() and len(owner) == 3 and holder_gone(":".join(owner)):
                shutil.rmtree(leftover, ignore_errors=True)

    def _watch_inbox(self) -> None:
        """Analyse each pushed study once it has been quiet for serve_study_quiet_seconds; deliver the results due;
        every ADOPT_EVERY rounds, queue the unfinished jobs of replicas that died."""
        rounds = 0
        while not self._stop.wait(1.0):
            rounds += 1
            try:
                self.inbox.process_due(self._analyze_pushed, quiet_seconds=self.settings.serve_study_quiet_seconds)
                if self.destination is not None:
                    self.outbox.deliver_due(self._send)
                if rounds % ADOPT_EVERY == 0:
                    self._resume_jobs()
                    self.leases.sweep()
            except Exception:  # the watcher must survive anything (a full disk, a lost database connection)
                log.exception("inbox watcher")

    def _send(self, destination, datasets) -> None:
        send_results(destination, datasets, self.settings)

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
            if self.destination is not None:  # one outbox item per analysis, whichever replica analysed it
                label = f"analysis {analysis.analysis_id}"
                datasets = result_datasets(result)
                self.outbox.enqueue(datasets, self.destination, label=label, item_id=f"analysis-{analysis.analysis_id}")
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
