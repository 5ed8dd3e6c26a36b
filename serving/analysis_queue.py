"""Analyses on threads of their own: the service's request threads stay free for reads however many analyses wait.

    queue = AnalysisQueue(workers=1, waiting_max=8)
    result = await queue.run(analyse, path)               # a synchronous request: 429 when the queue is full
    result = await queue.run(analyse, path, bounded=False)  # a job or a pushed study: always queued

A request waits for its analysis on the event loop (``asyncio.wrap_future``), holding no thread; the analyses
themselves run ``workers`` at a time, so memory stays bounded. Written here because BentoML's own concurrency
setting bounds requests of every kind together, which is what let ten analyses starve every read.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class AnalysisQueueClosed(RuntimeError):
    """The service is stopping: no new analysis starts (a pushed study waits for the next start)."""


class AnalysisQueueFull(Exception):
    def __init__(self, waiting: int) -> None:
        super().__init__(
            f"{waiting} analyses are already waiting; retry later or submit the study as a job "
            "(POST /v1/analyze_job/submit), which queues without a limit"
        )


class AnalysisQueue:
    def __init__(self, *, workers: int, waiting_max: int) -> None:
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="analysis")
        self._bounded_slots = threading.BoundedSemaphore(workers + waiting_max)
        self._lock = threading.Lock()
        self._pending = 0
        self.waiting_max = waiting_max

    @property
    def pending(self) -> int:
        """Analyses running or waiting, of every kind."""
        return self._pending

    def submit(self, call: Callable[..., T], *args: Any, bounded: bool = True) -> Future[T]:
        """Queue ``call(*args)``; AnalysisQueueFull where ``bounded`` and every slot is taken."""
        if bounded and not self._bounded_slots.acquire(blocking=False):
            raise AnalysisQueueFull(self.waiting_max)
        with self._lock:
            self._pending += 1
        try:
            future = self._executor.submit(call, *args)
        except RuntimeError:  # shut down, or the interpreter is exiting
            self._done(bounded)
            raise AnalysisQueueClosed("the service is stopping; no new analysis starts") from None
        future.add_done_callback(lambda _: self._done(bounded))
        return future

    async def run(self, call: Callable[..., T], *args: Any, bounded: bool = True) -> T:
        return await asyncio.wrap_future(self.submit(call, *args, bounded=bounded))

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _done(self, bounded: bool) -> None:
        with self._lock:
            self._pending -= 1
        if bounded:
            self._bounded_slots.release()
