"""Results waiting to be delivered to a PACS, on disk, so that an outage or a restart loses nothing.

    outbox = Outbox(settings.outbox_dir)
    outbox.enqueue(datasets, Destination.dicomweb(url), label="analysis 12")   # written before anything is sent
    outbox.deliver_due(send)          # each due item: sent → moved to sent/; failed → retried later (backoff)

Layout: ``pending/<id>/`` (``job.json`` + one ``.dcm`` per instance; an item appears there whole, by rename),
``sent/<id>.json`` (what was delivered where, when). A failed item stays in ``pending`` with its attempts, its next
attempt time and the errors, and is retried with a doubling wait (capped at an hour); each item fails on its own,
whatever the error, and the others go on. After ``max_attempts`` an item moves to ``dead/<id>/`` (a dead letter,
listed by ``pacs outbox``, kept for a person to resend); nothing is dropped. Credentials are never written here: a
delivery reads them from the settings.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset

from twin_imaging.files import rename_durably, write_bytes_atomic
from twin_imaging.pacs.dicomweb import PacsError

log = logging.getLogger(__name__)

MAX_WAIT_S = 3600.0
LEASE_KIND = "outbox_item"
_ITEM_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _places_of(item_id: str) -> list[tuple[str, str]]:
    """Where an item of this id may be."""
    return [("pending", item_id), ("sent", f"{item_id}.json"), ("dead", item_id)]


@dataclass(frozen=True)
class Destination:
    kind: str  # "dicomweb" or "dimse"
    url: str | None = None  # dicomweb: the service root, e.g. http://pacs/dicom-web
    host: str | None = None  # dimse
    port: int | None = None
    ae_title: str | None = None

    @classmethod
    def dicomweb(cls, url: str) -> Destination:
        return cls("dicomweb", url=url.rstrip("/"))

    @classmethod
    def dimse(cls, host: str, port: int, ae_title: str) -> Destination:
        return cls("dimse", host=host, port=int(port), ae_title=ae_title)

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``http(s)://…`` (STOW-RS) or ``AET@host:port`` (C-STORE)."""
        if text.startswith(("http://", "https://")):
            return cls.dicomweb(text)
        aet, at, address = text.partition("@")
        host, colon, port = address.rpartition(":")
        if not (at and colon and aet and host and port.isdigit()):
            raise ValueError(f"a destination is a DICOMweb URL or AET@host:port, got {text!r}")
        return cls.dimse(host, int(port), aet)

    def describe(self) -> str:
        return self.url if self.kind == "dicomweb" else f"{self.ae_title}@{self.host}:{self.port}"


@dataclass
class OutboxItem:
    item_id: str
    destination: Destination
    label: str
    attempts: int = 0
    next_attempt: float = 0.0
    errors: list[str] = field(default_factory=list)
    path: Path | None = None

    def datasets(self) -> list[Dataset]:
        return [pydicom.dcmread(p) for p in sorted(self.path.glob("*.dcm"))]


@dataclass(frozen=True)
class DeliveryReport:
    sent: tuple[str, ...]
    retrying: tuple[str, ...]
    dead: tuple[str, ...] = ()


SendFunction = Callable[[Destination, list[Dataset]], None]


class Outbox:
    def __init__(
        self, root: str | os.PathLike, *, retry_seconds: float = 10.0, max_attempts: int = 20, leases=None
    ) -> None:
        self.root = Path(root)
        self.leases = leases  # a LeaseBoard where replicas share this outbox: each delivery is taken through it
        self.retry_seconds = retry_seconds
        self.max_attempts = max_attempts
        for name in ("staging", "pending", "sent", "dead"):
            (self.root / name).mkdir(parents=True, exist_ok=True)

    def enqueue(
        self, datasets: Sequence[Dataset], destination: Destination, *, label: str, item_id: str | None = None
    ) -> str:
        """Write the item whole before anything is sent. ``item_id`` names it where it must exist once (e.g. per
        analysis): an item of that id already pending, sent or dead is kept and nothing is added."""
        if item_id is not None:
            if not _ITEM_ID.match(item_id):
                raise ValueError(f"an outbox item id has letters, digits, - and _ only: {item_id!r}")
            if any((self.root / place / name).exists() for place, name in _places_of(item_id)):
                return item_id
        item_id = item_id or f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        staging = self.root / "staging" / item_id
        staging.mkdir()
        for number, dataset in enumerate(datasets):
            buffer = io.BytesIO()
            pydicom.dcmwrite(buffer, dataset, enforce_file_format=True)
            write_bytes_atomic(staging / f"{number:04d}.dcm", buffer.getvalue())
        self._write_job(staging, OutboxItem(item_id, destination, label))
        try:
            rename_durably(staging, self.root / "pending" / item_id)  # the item appears whole or not at all
        except OSError:  # a replica enqueued the same item meanwhile
            shutil.rmtree(staging, ignore_errors=True)
            if not (self.root / "pending" / item_id).is_dir():
                raise
        return item_id

    def pending(self) -> list[OutboxItem]:
        return self._items(self.root / "pending")

    @staticmethod
    def _items(parent: Path) -> list[OutboxItem]:
        items = []
        for folder in sorted(parent.iterdir()):
            try:
                data = json.loads((folder / "job.json").read_text(encoding="utf-8"))
            except FileNotFoundError:  # delivered (or being staged) by another replica meanwhile
                continue
            data["destination"] = Destination(**data["destination"])
            items.append(OutboxItem(**data, path=folder))
        return items

    def deliver_due(self, send: SendFunction, *, now: float | None = None, force: bool = False) -> DeliveryReport:
        """Try every item whose next attempt is due (every item with ``force``)."""
        now = time.time() if now is None else now
        sent, retrying, dead = [], [], []
        for item in self.pending():
            if not force and item.next_attempt > now:
                continue
            if self.leases is not None and not self.leases.take(LEASE_KIND, item.item_id):
                continue  # another replica delivers it
            try:
                self._deliver(item, send, sent, retrying, dead)
            finally:
                if self.leases is not None:
                    self.leases.release(LEASE_KIND, item.item_id)
        return DeliveryReport(tuple(sent), tuple(retrying), tuple(dead))

    def _deliver(self, item: OutboxItem, send: SendFunction, sent: list, retrying: list, dead: list) -> None:
        if not (item.path / "job.json").is_file():  # delivered by another replica since the list was read
            return
        try:
            send(item.destination, item.datasets())
        except Exception as exc:  # one item's failure, of any kind, is its own: the queue behind it goes on
            item.attempts += 1
            item.next_attempt = time.time() + min(self.retry_seconds * 2 ** (item.attempts - 1), MAX_WAIT_S)
            reason = str(exc) if isinstance(exc, PacsError) else f"{type(exc).__name__}: {exc}"
            item.errors = [*item.errors[-9:], f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {reason}"]
            self._write_job(item.path, item)
            if item.attempts >= self.max_attempts:
                rename_durably(item.path, self.root / "dead" / item.item_id)
                log.warning("outbox item %s given up after %d attempts: in dead/", item.item_id, item.attempts)
                dead.append(item.item_id)
            else:
                retrying.append(item.item_id)
            return
        record = {
            "item_id": item.item_id,
            "label": item.label,
            "destination": item.destination.describe(),
            "attempts": item.attempts + 1,
            "delivered": time.time(),
            "instances": len(list(item.path.glob("*.dcm"))),
        }
        write_bytes_atomic(self.root / "sent" / f"{item.item_id}.json", json.dumps(record).encode())
        shutil.rmtree(item.path)
        sent.append(item.item_id)

    def dead(self) -> list[OutboxItem]:
        """Items given up after ``max_attempts``: kept whole, for a person to look at and resend."""
        return self._items(self.root / "dead")

    @staticmethod
    def _write_job(folder: Path, item: OutboxItem) -> None:
        data = asdict(item)
        data.pop("path")
        write_bytes_atomic(folder / "job.json", json.dumps(data, indent=2).encode())
