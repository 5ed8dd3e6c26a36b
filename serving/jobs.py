"""Analysis jobs in the project's own durable store, never in BentoML's task database (which kept each request,
bearer token included, in a world-readable SQLite file and lost running jobs on a crash).

    jobs = JobStore(spool / "jobs")
    job = jobs.create(owner="api:router-a", stage=lambda folder: stage_upload(files, folder, ...))
    jobs.start(job.job_id); ...; jobs.finish(job.job_id, result) or jobs.fail(job.job_id, message)
    jobs.get(job_id, only_sent_by="api:router-b")   # UnknownJobError: another key's job is unknown, never forbidden
    for job in jobs.unfinished(): ...               # after a restart: queued and running jobs go round again

Layout: ``<root>/<job id>/job.json`` (state, owner, times, the staged input's path and kind, the patient id where
one was sent with a NIfTI, the result or the error; no request header, no credential) and ``<root>/<job id>/input/``
(the upload, moved there before the job is acknowledged, removed when the job ends). Folders 0700, files 0600; every
write is atomic and fsynced. Job ids are 128-bit random.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from twin_imaging.errors import UnknownJobError
from twin_imaging.files import atomic_path, fsync_directory

QUEUED, RUNNING, COMPLETED, FAILED = "queued", "running", "completed", "failed"
STALE_STAGING_SECONDS = 600.0  # a job folder without its record this long was cut off while its upload was staged
_JOB_ID_CHARS = frozenset("0123456789abcdef")


@dataclass
class Job:
    job_id: str
    owner: str  # the audit actor of the key that submitted it
    state: str
    created: float
    input_path: str = ""  # what the pipeline reads, under the job's input/ folder
    input_kind: str = ""  # dicom, zip, nifti
    params: dict[str, Any] = field(default_factory=dict)  # patient_id, series_instance_uid
    started: float | None = None
    finished: float | None = None
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: str | None = None

    def status(self) -> dict[str, Any]:
        """What a caller may see of it (never the input's path)."""
        out = {"job_id": self.job_id, "status": self.state, "created": self.created, "finished": self.finished}
        if self.error is not None:
            out["error"] = self.error
        return out


class JobStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        self._lock = threading.Lock()

    def create(
        self, *, owner: str, stage: Callable[[Path], tuple[Path, str]], params: dict[str, Any] | None = None
    ) -> Job:
        """A queued job whose input ``stage(folder)`` has moved into its own folder; where staging fails, nothing
        is left behind."""
        job_id = secrets.token_hex(16)
        folder = self.root / job_id
        folder.mkdir(mode=0o700)
        try:
            source, kind = stage(folder / "input")
            job = Job(job_id, owner, QUEUED, time.time(), str(source), kind, dict(params or {}))
            self._save(job)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return job

    def get(self, job_id: str, *, only_sent_by: str | None = None) -> Job:
        """The job; UnknownJobError where there is none, or it is not ``only_sent_by``'s (where given)."""
        if not isinstance(job_id, str) or len(job_id) != 32 or set(job_id) - _JOB_ID_CHARS:
            raise UnknownJobError(job_id)
        try:
            job = Job(**json.loads((self.root / job_id / "job.json").read_text(encoding="utf-8")))
        except (FileNotFoundError, ValueError, TypeError):
            raise UnknownJobError(job_id) from None
        if only_sent_by is not None and job.owner != only_sent_by:
            raise UnknownJobError(job_id)
        return job

    def start(self, job_id: str) -> Job:
        return self._update(job_id, state=RUNNING, started=time.time(), attempts_plus=1)

    def finish(self, job_id: str, result: dict[str, Any]) -> Job:
        job = self._update(job_id, state=COMPLETED, finished=time.time(), result=result)
        shutil.rmtree(self.root / job_id / "input", ignore_errors=True)  # the results live in the twin
        return job

    def fail(self, job_id: str, message: str) -> Job:
        job = self._update(job_id, state=FAILED, finished=time.time(), error=message)
        shutil.rmtree(self.root / job_id / "input", ignore_errors=True)
        return job

    def unfinished(self) -> list[Job]:
        """Queued and running jobs (a running one was cut off by a crash), oldest first; folders without a job
        record (a crash between staging and recording: never acknowledged) are removed."""
        found = []
        for folder in self.root.iterdir():
            if not folder.is_dir():
                continue
            if not (folder / "job.json").is_file():
                try:  # a replica sharing this store may be staging it right now: only a stale one is removed
                    stale = time.time() - folder.stat().st_mtime > STALE_STAGING_SECONDS
                except FileNotFoundError:
                    continue
                if stale:
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            try:
                job = self.get(folder.name)
            except UnknownJobError:  # removed meanwhile
                continue
            if job.state in (QUEUED, RUNNING):
                found.append(job)
        return sorted(found, key=lambda j: j.created)

    def _update(self, job_id: str, *, attempts_plus: int = 0, **changes: Any) -> Job:
        with self._lock:
            job = self.get(job_id)
            for name, value in changes.items():
                setattr(job, name, value)
            job.attempts += attempts_plus
            self._save(job)
            return job

    def _save(self, job: Job) -> None:
        folder = self.root / job.job_id
        with atomic_path(folder / "job.json", mode=0o600) as temporary:
            temporary.write_text(json.dumps(asdict(job)), encoding="utf-8")
        fsync_directory(folder)
