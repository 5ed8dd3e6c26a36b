"""The analysis queue: analyses run on threads of their own, a bounded number wait, the rest are refused by name;
unbounded submissions (jobs, pushed studies) always queue; waiting requests hold no thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from serving.analysis_queue import AnalysisQueue, AnalysisQueueClosed, AnalysisQueueFull


def test_a_bounded_number_wait_and_the_next_is_refused():
    queue = AnalysisQueue(workers=1, waiting_max=2)
    gate = threading.Event()
    futures = [queue.submit(gate.wait) for _ in range(3)]  # one running, two waiting
    with pytest.raises(AnalysisQueueFull, match=r"2 analyses are already waiting.*job"):
        queue.submit(gate.wait)
    job = queue.submit(gate.wait, bounded=False)  # a job queues whatever the load
    assert queue.pending == 4
    gate.set()
    assert all(f.result(timeout=10) for f in [*futures, job])
    assert queue.pending == 0
    assert queue.submit(lambda: 42).result(timeout=10) == 42  # the slots came back


def test_waiting_requests_hold_no_thread_and_analyses_run_on_their_own():
    queue = AnalysisQueue(workers=1, waiting_max=50)
    names, gate = [], threading.Event()

    def analyse(i: int) -> int:
        gate.wait(10)
        names.append(threading.current_thread().name)
        return i

    async def main() -> list[int]:
        tasks = [asyncio.ensure_future(queue.run(analyse, i)) for i in range(20)]
        await asyncio.sleep(0.2)
        threads_while_waiting = threading.active_count()
        gate.set()
        results = await asyncio.gather(*tasks)
        assert threads_while_waiting <= before + 1  # twenty waiting requests, one analysis thread
        return results

    before = threading.active_count()
    assert asyncio.run(main()) == list(range(20))
    assert set(names) == {names[0]} and names[0].startswith("analysis")


def test_a_stopped_queue_refuses_as_closed():
    queue = AnalysisQueue(workers=1, waiting_max=1)
    queue.shutdown()
    with pytest.raises(AnalysisQueueClosed):
        queue.submit(lambda: None)
    assert queue.pending == 0
