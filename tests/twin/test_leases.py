"""Leases on shared work, on SQLite and PostgreSQL: one holder at a time, renewed while held, taken over once run
out or once the holder's process is gone, released when done; racing takers get it exactly once."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

from sqlalchemy import create_engine

from twin_imaging.settings import Settings
from twin_imaging.twin.leases import LeaseBoard
from twin_imaging.twin.store import TwinStore


def boards(database_url, tmp_path, *holders, seconds=60.0):
    store = TwinStore(database_url, artifacts_dir=tmp_path / "artifacts", settings=Settings())  # migrates
    store.close()
    engine = create_engine(database_url)
    return engine, [LeaseBoard(engine, seconds=seconds, holder=h) for h in holders]


def test_one_holder_at_a_time_until_released(database_url, tmp_path):
    engine, (a, b) = boards(database_url, tmp_path, "host-a:1:x", "host-b:2:y")
    assert a.take("inbox_study", "1.2.3")
    assert not b.take("inbox_study", "1.2.3")
    assert a.take("inbox_study", "1.2.3")  # its own lease: taken again (renewed)
    assert b.take("job", "1.2.3")  # another kind is another item
    assert a.holder_of("inbox_study", "1.2.3") == "host-a:1:x"
    assert not b.renew("inbox_study", "1.2.3") and a.renew("inbox_study", "1.2.3")
    b.release("inbox_study", "1.2.3")  # not b's: nothing happens
    assert not b.take("inbox_study", "1.2.3")
    a.release("inbox_study", "1.2.3")
    assert b.take("inbox_study", "1.2.3")
    engine.dispose()


def test_a_lease_that_runs_out_is_taken_over(database_url, tmp_path):
    engine, (a, b) = boards(database_url, tmp_path, "host-a:1:x", "host-b:2:y", seconds=0.5)
    assert a.take("outbox_item", "analysis-1")
    assert not b.take("outbox_item", "analysis-1")
    time.sleep(0.7)
    assert b.take("outbox_item", "analysis-1")
    assert not a.renew("outbox_item", "analysis-1")  # a, back from a long pause, learns it lost it
    assert a.take("job", "done-but-not-released")
    time.sleep(1.1)  # two leases long: its holder died after the work, before releasing
    assert a.sweep() >= 1 and a.holder_of("job", "done-but-not-released") is None
    engine.dispose()


def test_a_dead_local_holder_is_taken_over_at_once(database_url, tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    engine, (gone, alive) = boards(
        database_url, tmp_path, f"{socket.gethostname()[:64]}:{dead.stdout.strip()}:zz", "other:3:w"
    )
    assert gone.take("job", "j1")
    assert alive.take("job", "j1")  # no wait for the 60 s lease: the holder's process is gone
    engine.dispose()


def test_held_renews_while_working_and_releases_after(database_url, tmp_path):
    engine, (a, b) = boards(database_url, tmp_path, "host-a:1:x", "host-b:2:y", seconds=0.4)
    assert a.take("job", "long")
    with a.held("job", "long"):
        time.sleep(1.0)  # longer than the lease: the beat renews it
        assert not b.take("job", "long")
    assert b.take("job", "long")
    engine.dispose()


def test_racing_takers_get_it_exactly_once(database_url, tmp_path):
    holders = [f"host-{n}:{n}:n" for n in range(8)]
    engine, racers = boards(database_url, tmp_path, *holders, seconds=0.3)
    assert racers[0].take("inbox_study", "9.9")
    time.sleep(0.4)  # run out: every racer may now take it, only one may win
    wins, start = [], threading.Barrier(len(racers) - 1)

    def race(board):
        start.wait()
        if board.take("inbox_study", "9.9"):
            wins.append(board.holder)

    threads = [threading.Thread(target=race, args=(r,)) for r in racers[1:]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1, wins
    engine.dispose()
