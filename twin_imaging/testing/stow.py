"""A STOW-RS request body streamed from files, for tests and benchmarks that push large studies without holding
them in memory on the sending side either."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

CHUNK_BYTES = 1 << 20


def stow_body(paths: Iterable[Path], boundary: str = "twin-imaging-stow") -> Iterator[bytes]:
    """The multipart/related body (one application/dicom part per file), chunk by chunk."""
    for path in paths:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        with open(path, "rb") as stream:
            while chunk := stream.read(CHUNK_BYTES):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def stow_content_type(boundary: str = "twin-imaging-stow") -> str:
    return f'multipart/related; type="application/dicom"; boundary={boundary}'
