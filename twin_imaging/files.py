"""Atomic, durable file writes: a temporary name in the target's folder, fsync, then a rename, so a reader (or a
crash) never leaves half a file under the real name; then the folder is fsynced too, since on POSIX a rename is
only durable once its directory is (what "written durably before the acknowledgement" promises). Files are
readable by others (0644), as outputs meant for other tools should be."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

FILE_MODE = 0o644
_CHUNK_BYTES = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 (hex) of a file, read in 1 MiB chunks: the project's one file hash."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str = "", mode: int = FILE_MODE) -> Iterator[Path]:
    """A temporary path to write to (by any library); renamed to ``path`` when the block ends without an error.
    ``mode``: the file's permissions (0600 for secrets), set before it takes the name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix or ".tmp")
    os.close(handle)
    try:
        yield Path(temporary)
        with open(temporary, "rb+") as stream:
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
        fsync_directory(path.parent)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def fsync_directory(folder: str | os.PathLike) -> None:
    """Make the entries of ``folder`` (a file renamed into or out of it) durable."""
    handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def rename_durably(source: str | os.PathLike, target: str | os.PathLike) -> None:
    """``os.rename`` (atomic; raises FileNotFoundError where another worker took ``source`` first), then fsync of
    both folders so the move survives a crash."""
    os.rename(source, target)
    fsync_directory(Path(target).parent)
    if Path(source).parent != Path(target).parent:
        fsync_directory(Path(source).parent)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as temporary:
        temporary.write_bytes(data)
    return Path(path)


def copy_atomic(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    if Path(source).resolve() == Path(target).resolve():
        return Path(target)
    with atomic_path(target) as temporary:
        shutil.copyfile(source, temporary)
    return Path(target)
