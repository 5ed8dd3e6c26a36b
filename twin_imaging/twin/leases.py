"""Leases on shared work, in the twin's database, so that several service replicas never do one thing twice.

    board = LeaseBoard(store.engine, seconds=60)
    if board.take("inbox_study", study_uid):       # this process now holds it (for 60 s)
        with board.held("inbox_study", study_uid):  # renewed every seconds/4 while the block runs; released after
            ... analyse ...

A lease is a row ``(kind, item) → holder, expires_at``. Taking is a compare-and-set: insert the row, or, where it
exists and may be taken (expired, or its holder is a process of this host that no longer runs), ``UPDATE ... WHERE
holder = <seen> AND expires_at = <seen>`` and count the rows changed; of two replicas racing, the database lets
exactly one change it (PostgreSQL row locks under READ COMMITTED, SQLite's single writer). A holder that dies stops
renewing: its lease runs out and another replica takes the work. No lock service, no queue of our own: the database
every replica already shares is the arbiter. Holders are named ``host:pid:nonce``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from datetime import timedelta

from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from twin_imaging.twin.schema import WorkLease, utc_now

log = logging.getLogger(__name__)
_HOST = socket.gethostname()[:64]


def this_process() -> str:
    """This process' holder name (a new nonce per process: a reused pid is another holder)."""
    global _HOLDER
    if _HOLDER is None or not _HOLDER.startswith(f"{_HOST}:{os.getpid()}:"):
        _HOLDER = f"{_HOST}:{os.getpid()}:{secrets.token_hex(4)}"
    return _HOLDER


_HOLDER: str | None = None


def holder_gone(holder: str) -> bool:
    """A holder on this host whose process no longer runs (a crash or SIGKILL): no need to wait for its lease."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != _HOST or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class LeaseBoard:
    def __init__(self, engine: Engine, *, seconds: float = 60.0, holder: str | None = None) -> None:
        self.engine = engine
        self.seconds = seconds
        self.holder = holder or this_process()

    def take(self, kind: str, item: str) -> bool:
        """Hold ``(kind, item)`` for ``seconds``; False where another live holder has it."""
        now = utc_now()
        expires = now + timedelta(seconds=self.seconds)
        with self.engine.begin() as connection:
            row = connection.execute(
                select(WorkLease.holder, WorkLease.expires_at, WorkLease.taken).where(
                    WorkLease.kind == kind, WorkLease.item == item
                )
            ).first()
        if row is None:
            try:
                with self.engine.begin() as connection:
                    connection.execute(
                        insert(WorkLease).values(kind=kind, item=item, holder=self.holder, expires_at=expires, taken=1)
                    )
                return True
            except IntegrityError:  # another replica inserted it first
                return False
        holder, until, taken = row
        if holder != self.holder and until > now and not holder_gone(holder):
            return False
        with self.engine.begin() as connection:
            changed = connection.execute(
                update(WorkLease)
                .where(
                    WorkLease.kind == kind,
                    WorkLease.item == item,
                    WorkLease.holder == holder,
                    WorkLease.expires_at == until,
                )
                .values(holder=self.holder, expires_at=expires, taken=taken + (holder != self.holder))
            ).rowcount
        if changed == 1 and holder != self.holder:
            log.info("took over %s %s from %s (lease run out or holder gone)", kind, item, holder)
        return changed == 1

    def renew(self, kind: str, item: str) -> bool:
        """Extend this holder's lease; False where it is no longer this holder's."""
        with self.engine.begin() as connection:
            return (
                connection.execute(
                    update(WorkLease)
                    .where(WorkLease.kind == kind, WorkLease.item == item, WorkLease.holder == self.holder)
                    .values(expires_at=utc_now() + timedelta(seconds=self.seconds))
                ).rowcount
                == 1
            )

    def release(self, kind: str, item: str) -> None:
        """Give the item up (its work is done, or handed back): the row goes, whoever comes next may take it."""
        with self.engine.begin() as connection:
            connection.execute(
                delete(WorkLease).where(WorkLease.kind == kind, WorkLease.item == item, WorkLease.holder == self.holder)
            )

    def sweep(self) -> int:
        """Delete leases that ran out a whole lease ago (a holder died after its work was done, before it released):
        as safe as their expiry, which already lets anyone take them; how many."""
        cutoff = utc_now() - timedelta(seconds=self.seconds)
        with self.engine.begin() as connection:
            return connection.execute(delete(WorkLease).where(WorkLease.expires_at < cutoff)).rowcount

    def holder_of(self, kind: str, item: str) -> str | None:
        with self.engine.begin() as connection:
            return connection.scalar(select(WorkLease.holder).where(WorkLease.kind == kind, WorkLease.item == item))

    @contextlib.contextmanager
    def held(self, kind: str, item: str) -> Iterator[None]:
        """Renew the lease every ``seconds / 4`` while the block runs, release it after (even on an error)."""
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(self.seconds / 4):
                try:
                    if not self.renew(kind, item):
                        log.warning("lost the lease on %s %s while working on it", kind, item)
                        return
                except Exception:  # a database hiccup: try again at the next beat
                    log.exception("renewing the lease on %s %s", kind, item)

        beat = threading.Thread(target=renew, name=f"lease-{kind}", daemon=True)
        beat.start()
        try:
            yield
        finally:
            stop.set()
            beat.join()
            self.release(kind, item)
