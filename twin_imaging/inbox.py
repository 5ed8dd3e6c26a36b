"""Where DICOM instances pushed to us (STOW-RS now, a C-STORE listener next) wait until their study is complete.

    inbox = StudyInbox(settings.serve_spool_dir / "inbox")
    inbox.store(part_bytes)                        # durable (fsync) before the sender is told it is stored
    for study in inbox.due(quiet_seconds=5):       # no instance of it has arrived for 5 s
        claimed = inbox.claim(study)               # atomic rename: one worker wins
        ... analyse claimed.path ...; inbox.finish(claimed, analysis_id=...) or inbox.fail(claimed, message)

Layout under the root: ``incoming/<study>/<sop>.dcm``, ``processing/<study>.<n>/``, ``failed/<study>.<n>/`` (with
``error.txt``; kept, so nothing pushed is lost), ``analysed/<study>/`` (the instances of an analysed study, kept for
``keep_analysed_seconds``: when more instances of the study arrive, they are analysed together with these, so a
study pushed in two bursts ends with one analysis of all of it), ``done/<study>.json`` and
``senders/<study>/<sha256 of sender>``
(who pushed the study: only they, or a key that reads everything, learn its state). A study left in ``processing``
by a crash goes back to ``incoming`` on ``recover()`` and is analysed again (attaching to the twin is idempotent).

Several service replicas may share one inbox (a volume they all mount) when it is given a ``LeaseBoard``
(``twin_imaging.twin.leases``, in the twin's database): a study is then taken through its lease before it is moved to
``processing``, the lease is renewed while it is analysed, and a study left in ``processing`` by a replica that died
goes back to ``incoming`` once that lease has run out (``recover``, called at start and then on every round), never
while its replica lives. Uploads still streaming in are left alone by the others (only stale ones are removed).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import io
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from twin_imaging.errors import DicomInputError
from twin_imaging.files import FILE_MODE, atomic_path, fsync_directory, rename_durably, write_bytes_atomic

log = logging.getLogger(__name__)
LEASE_KIND = "inbox_study"
STALE_UPLOAD_SECONDS = 3600.0  # an upload untouched this long was cut off (a live one writes as it streams)
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
# Image storage SOP classes the pipeline can analyse (CT, Enhanced CT, MR, Enhanced MR).
IMAGE_SOP_CLASSES = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.2",
        "1.2.840.10008.5.1.4.1.1.2.1",
        "1.2.840.10008.5.1.4.1.1.4",
        "1.2.840.10008.5.1.4.1.1.4.1",
    }
)


class UnsupportedSopClassError(DicomInputError):
    def __init__(self, sop_class_uid: str) -> None:
        super().__init__(f"SOP class {sop_class_uid} is not a CT or MR image this service analyses")
        self.sop_class_uid = sop_class_uid


class NotNow(Exception):
    """Raised by a handler that cannot take the study now (the service is stopping): it goes back to incoming."""


class StudyMismatchError(DicomInputError):
    def __init__(self, sop_class_uid: str, sop_instance_uid: str) -> None:
        super().__init__("the instance belongs to another study than the one it was sent for")
        self.sop_class_uid, self.sop_instance_uid = sop_class_uid, sop_instance_uid


@dataclass(frozen=True)
class StoredInstance:
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str


@dataclass(frozen=True)
class ClaimedStudy:
    study_instance_uid: str
    path: Path


class StudyInbox:
    def __init__(self, root: str | os.PathLike, *, keep_analysed_seconds: float = 24 * 3600.0, leases=None) -> None:
        self.root = Path(root)
        self.keep_analysed_seconds = keep_analysed_seconds
        self.leases = leases  # a LeaseBoard where replicas share this inbox; None: this process alone uses it
        for name in ("incoming", "processing", "failed", "done", "senders", "receiving", "analysed"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def receiving_dir(self) -> Path:
        """Where uploads are written while they stream in (same file system: an instance is moved into place);
        what a crash leaves there is removed by ``recover``."""
        return self.root / "receiving"

    def store(self, data: bytes, *, sender: str | None = None) -> StoredInstance:
        """Check one Part 10 instance and write it durably, noting its ``sender`` (an audit actor such as
        ``api:router-a``); refuses non-DICOM bytes and non-image SOP classes."""
        instance = _checked(io.BytesIO(data))
        self._note_sender(instance.study_instance_uid, sender)
        write_bytes_atomic(self._place_of(instance), data)
        return instance

    def store_file(self, path: Path, *, sender: str | None = None, only_study: str | None = None) -> StoredInstance:
        """As ``store``, for an instance already written to ``path`` on the inbox's file system (a streamed upload
        part): checked from its header alone and moved into place, so no instance is ever held in memory.
        ``only_study``: refuse (StudyMismatchError) an instance of any other study."""
        instance = _checked(path)
        if only_study is not None and instance.study_instance_uid != only_study:
            raise StudyMismatchError(instance.sop_class_uid, instance.sop_instance_uid)
        self._note_sender(instance.study_instance_uid, sender)
        with open(path, "rb") as stream:
            os.fsync(stream.fileno())
        target = self._place_of(instance)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path, FILE_MODE)
        rename_durably(path, target)
        return instance

    def _place_of(self, instance: StoredInstance) -> Path:
        return self.root / "incoming" / instance.study_instance_uid / f"{instance.sop_instance_uid}.dcm"

    def _note_sender(self, study_instance_uid: str, sender: str | None) -> None:
        if sender is None:
            return
        # one file per sender: concurrent pushes of one study never race on a shared file
        mark = self.root / "senders" / study_instance_uid / hashlib.sha256(sender.encode("utf-8")).hexdigest()
        if not mark.is_file():
            write_bytes_atomic(mark, sender.encode("utf-8"))

    def senders(self, study_instance_uid: str) -> list[str]:
        """Who pushed instances of the study, sorted."""
        folder = self.root / "senders" / study_instance_uid
        if not _UID.match(study_instance_uid or "") or not folder.is_dir():
            return []
        return sorted(p.read_text(encoding="utf-8") for p in folder.iterdir() if len(p.name) == 64)

    def due(self, *, quiet_seconds: float) -> list[str]:
        """Studies in ``incoming`` whose newest instance arrived at least ``quiet_seconds`` ago, oldest first."""
        now, found = time.time(), []
        for folder in (self.root / "incoming").iterdir():
            try:
                newest = max((f.stat().st_mtime for f in folder.iterdir()), default=folder.stat().st_mtime)
            except FileNotFoundError:  # claimed meanwhile
                continue
            if now - newest >= quiet_seconds:
                found.append((newest, folder.name))
        return [name for _, name in sorted(found)]

    def claim(self, study_instance_uid: str) -> ClaimedStudy | None:
        """Move the study to ``processing`` (atomic), together with its instances that arrived before (kept
        after an analysis, or after a failure): the study is analysed whole. None where another worker claimed it
        first."""
        target = self._fresh(self.root / "processing", study_instance_uid)
        try:
            rename_durably(self.root / "incoming" / study_instance_uid, target)
        except FileNotFoundError:
            return None
        earlier = [self.root / "analysed" / study_instance_uid, *_claims_of(self.root / "failed", study_instance_uid)]
        for folder in earlier:
            _move_instances(folder, target)
        return ClaimedStudy(study_instance_uid, target)

    def finish(self, claimed: ClaimedStudy, **outcome: object) -> None:
        record = {"state": "done", "finished": time.time(), **outcome}
        write_bytes_atomic(self.root / "done" / f"{claimed.study_instance_uid}.json", json.dumps(record).encode())
        if self.keep_analysed_seconds > 0:  # kept for a later part of the study
            kept = self.root / "analysed" / claimed.study_instance_uid
            kept.mkdir(mode=0o700, exist_ok=True)
            _move_instances(claimed.path, kept)
            os.utime(kept)
        shutil.rmtree(claimed.path, ignore_errors=True)

    def expire_analysed(self) -> int:
        """Delete the kept instances of studies analysed longer ago than ``keep_analysed_seconds``; how many."""
        removed = 0
        for folder in (self.root / "analysed").iterdir():
            try:
                expired = time.time() - folder.stat().st_mtime > self.keep_analysed_seconds
            except FileNotFoundError:
                continue
            if expired:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        return removed

    def fail(self, claimed: ClaimedStudy, message: str) -> Path:
        """Keep the instances in ``failed`` with the reason, for a person to look at or resubmit."""
        target = self._fresh(self.root / "failed", claimed.study_instance_uid)
        rename_durably(claimed.path, target)
        with atomic_path(target / "error.txt") as temporary:
            temporary.write_text(message + "\n", encoding="utf-8")
        return target

    def state(self, study_instance_uid: str, *, only_sent_by: str | None = None) -> dict[str, object]:
        """Where a study stands: waiting, processing, done (with its outcome), failed (with the reason), unknown.
        ``only_sent_by``: a caller that may learn only about studies it pushed; any other study is unknown to it."""
        if not _UID.match(study_instance_uid or ""):
            raise DicomInputError(f"{study_instance_uid!r} is not a DICOM UID")
        if only_sent_by is not None and only_sent_by not in self.senders(study_instance_uid):
            return {"state": "unknown"}
        incoming = self.root / "incoming" / study_instance_uid
        if incoming.is_dir():
            return {"state": "waiting", "instances": sum(1 for _ in incoming.glob("*.dcm"))}
        if _claims_of(self.root / "processing", study_instance_uid):
            return {"state": "processing"}
        failed = _claims_of(self.root / "failed", study_instance_uid)
        done = self.root / "done" / f"{study_instance_uid}.json"
        if done.is_file() and (not failed or done.stat().st_mtime >= failed[-1].stat().st_mtime):
            return json.loads(done.read_text(encoding="utf-8"))
        if failed:
            return {"state": "failed", "error": (failed[-1] / "error.txt").read_text(encoding="utf-8").strip()}
        return {"state": "unknown"}

    def process_due(self, handle: Callable[[ClaimedStudy], dict], *, quiet_seconds: float) -> int:
        """Claim each quiet study and ``handle`` it; what it returns is recorded as done (e.g. the analysis id), what it
        raises sends the study to ``failed`` with the reason. Returns how many studies this call handled."""
        handled = 0
        self.expire_analysed()
        if self.leases is not None:
            self.recover()  # what a replica that died left in processing, once its lease has run out
        for study in self.due(quiet_seconds=quiet_seconds):
            if self.leases is not None and not self.leases.take(LEASE_KIND, study):
                continue  # another replica works on it
            with self._leased(study):
                claimed = self.claim(study)
                if claimed is None:
                    continue
                handled += 1
                try:
                    outcome = handle(claimed)
                except NotNow:
                    self._unclaim(claimed)
                    break
                except Exception as exc:  # any failure of one study is recorded with it; the others go on
                    log.warning("a received study failed (%s); kept in the failed queue", type(exc).__name__)
                    self.fail(claimed, f"{type(exc).__name__}: {exc}")
                    continue
                if self.leases is not None:  # which replica analysed it
                    outcome = {**outcome, "handled_by": self.leases.holder}
                self.finish(claimed, **outcome)
        return handled

    def _leased(self, study_instance_uid: str):
        """Renew the study's lease while the block runs and release it after; nothing without leases."""
        if self.leases is None:
            return contextlib.nullcontext()
        return self.leases.held(LEASE_KIND, study_instance_uid)

    def _unclaim(self, claimed: ClaimedStudy) -> None:
        target = self.root / "incoming" / claimed.study_instance_uid
        target.mkdir(exist_ok=True)
        for item in claimed.path.iterdir():
            os.replace(item, target / item.name)
        fsync_directory(target)
        claimed.path.rmdir()

    def recover(self) -> int:
        """Studies a crash left in ``processing`` go back to ``incoming`` (returns how many); uploads it cut off
        mid-body (never acknowledged to their sender) are removed. With leases, only what no live replica holds:
        a study whose lease can be taken (run out, or its process gone), an upload untouched for an hour."""
        now = time.time()
        for leftover in self.receiving_dir().iterdir():
            try:
                stale = now - leftover.stat().st_mtime > STALE_UPLOAD_SECONDS
            except FileNotFoundError:
                continue
            if self.leases is None or stale:
                shutil.rmtree(leftover, ignore_errors=True) if leftover.is_dir() else leftover.unlink(missing_ok=True)
        moved = 0
        for folder in (self.root / "processing").iterdir():
            study = folder.name.rsplit(".", 1)[0]
            if self.leases is not None and not self.leases.take(LEASE_KIND, study):
                continue  # a live replica analyses it
            try:
                if folder.is_dir() and any(folder.glob("*.dcm")):
                    self._unclaim(ClaimedStudy(study, folder))
                    moved += 1
                elif folder.is_dir():  # its instances were kept as analysed before the crash: nothing to redo
                    shutil.rmtree(folder, ignore_errors=True)
            finally:
                if self.leases is not None:
                    self.leases.release(LEASE_KIND, study)
        return moved

    @staticmethod
    def _fresh(parent: Path, study_instance_uid: str) -> Path:
        return parent / f"{study_instance_uid}.{time.time_ns()}"


def _move_instances(source: Path, target: Path) -> None:
    """Move the ``*.dcm`` files of ``source`` into ``target`` (an instance already there is the same one, resent:
    the newer copy wins), durably."""
    if not source.is_dir():
        return
    for item in source.glob("*.dcm"):
        os.replace(item, target / item.name)
    fsync_directory(target)
    fsync_directory(source)


def _checked(source: Path | io.BytesIO) -> StoredInstance:
    """The UIDs of a Part 10 instance, from its header (pixel data not read); DicomInputError where it is not an
    image this service analyses."""
    try:
        header = pydicom.dcmread(source, stop_before_pixels=True)
    except (InvalidDicomError, Exception) as exc:  # pydicom raises several kinds on garbage
        raise DicomInputError(f"not a DICOM Part 10 instance: {exc}") from None
    uids = [str(header.get(k, "")) for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
    sop_class = str(header.get("SOPClassUID", ""))
    if not all(_UID.match(u) and len(u) <= 64 for u in [*uids, sop_class]):
        raise DicomInputError(
            "the instance lacks a valid StudyInstanceUID, SeriesInstanceUID, SOPInstanceUID or SOPClassUID"
        )
    if sop_class not in IMAGE_SOP_CLASSES:
        raise UnsupportedSopClassError(sop_class)
    return StoredInstance(*uids, sop_class)


def _claims_of(parent: Path, study_instance_uid: str) -> list[Path]:
    """The folders ``_fresh`` made for exactly this study, oldest first. A glob such as ``1.*`` would also match
    every study whose UID starts with ``1.`` (UIDs hold dots): the name must be the UID, a dot and the 19 digits of
    ``time.time_ns()``."""
    pattern = re.compile(re.escape(study_instance_uid) + r"\.\d{19}")
    matches = [p for p in parent.glob(f"{glob.escape(study_instance_uid)}.*") if pattern.fullmatch(p.name)]
    return sorted(matches, key=lambda p: int(p.name.rsplit(".", 1)[1]))
