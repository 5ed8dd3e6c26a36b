"""The streamed multipart/related reader: the same parts whatever the chunking of the body, each on disk and none in
memory; a truncated or malformed body is refused by name and leaves no file behind."""

from __future__ import annotations

import random

import pytest

from serving.stow_parts import PartSpooler
from twin_imaging.errors import DicomInputError

BOUNDARY = "b0undary-42"


def body_of(parts: list[tuple[str | None, bytes]], *, close: bool = True) -> bytes:
    out = b""
    for content_type, data in parts:
        header = f"Content-Type: {content_type}\r\n" if content_type else ""
        out += f"--{BOUNDARY}\r\n{header}\r\n".encode() + data + b"\r\n"
    return out + (f"--{BOUNDARY}--\r\n".encode() if close else b"")


def spool(body: bytes, folder, chunk_sizes=(65536,)) -> PartSpooler:
    spooler = PartSpooler(BOUNDARY, folder)
    rng, position = random.Random(7), 0
    while position < len(body):
        size = rng.choice(chunk_sizes)
        spooler.write(body[position : position + size])
        position += size
    return spooler


@pytest.mark.parametrize("chunk_sizes", [(1,), (1, 2, 3, 5, 7, 11), (4096,), (1 << 20,)])
def test_the_parts_are_the_same_whatever_the_chunking(tmp_path, chunk_sizes):
    rng = random.Random(1)
    # part payloads that contain CRLFs, dashes and the boundary's prefix, as binary DICOM can
    payloads = [bytes(rng.randrange(256) for _ in range(n)) for n in (0, 1, 5000, 70000)]
    payloads.append(b"\r\n--b0undary-4 not the boundary\r\n--")
    parts = [("application/dicom", p) for p in payloads] + [(None, b"no type")]
    got = spool(body_of(parts), tmp_path, chunk_sizes).finish()
    assert [p.content_type for p in got] == ["application/dicom"] * len(payloads) + ["text/plain"]
    assert [p.path.read_bytes() for p in got] == [*payloads, b"no type"]
    assert all(p.path.parent == tmp_path for p in got)


def test_a_body_cut_off_before_its_closing_boundary_is_refused_and_removed(tmp_path):
    body = body_of([("application/dicom", b"x" * 10000)] * 3, close=False)
    spooler = spool(body[: len(body) - 500], tmp_path, (777,))
    with pytest.raises(DicomInputError, match="ends before its closing boundary"):
        spooler.finish()
    assert list(tmp_path.iterdir()) == []


def test_a_body_without_the_announced_boundary_is_malformed(tmp_path):
    spooler = PartSpooler(BOUNDARY, tmp_path)
    with pytest.raises(DicomInputError, match="malformed"):
        spooler.write(b"--another-boundary\r\nContent-Type: application/dicom\r\n\r\nxx\r\n--another-boundary--\r\n")
