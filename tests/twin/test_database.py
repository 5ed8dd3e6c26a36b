"""The SQLite twin holds patient data: its file, WAL and shared-memory files are owner-only, its folder too."""

from __future__ import annotations

import os
import stat

from twin_imaging.cli_twin import open_store
from twin_imaging.twin.store import TwinStore


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_sqlite_twin_and_its_wal_are_owner_only(tmp_path):
    old = os.umask(0o022)  # a usual umask: files would be 0644 unless created otherwise
    try:
        folder = tmp_path / "twin"
        with TwinStore(f"sqlite:///{folder / 'twin.sqlite3'}", artifacts_dir=folder / "artifacts") as store:
            store.register_patient("P-1", actor="test")
            for name in ("twin.sqlite3", "twin.sqlite3-wal", "twin.sqlite3-shm"):
                assert mode(folder / name) == 0o600, name
        assert mode(folder) == 0o700
    finally:
        os.umask(old)


def test_an_existing_world_readable_twin_is_tightened(tmp_path):
    path = tmp_path / "twin.sqlite3"
    with TwinStore(f"sqlite:///{path}", artifacts_dir=tmp_path / "artifacts"):
        pass
    os.chmod(path, 0o644)  # as an earlier version left it
    with TwinStore(f"sqlite:///{path}", artifacts_dir=tmp_path / "artifacts"):
        pass
    assert mode(path) == 0o600


def test_the_cli_data_folder_is_owner_only(tmp_path):
    with open_store(None, data_dir=tmp_path / "data"):  # what `analyze --data-dir` opens
        pass
    assert mode(tmp_path / "data") == 0o700
    assert mode(tmp_path / "data" / "twin.sqlite3") == 0o600
