"""A multipart/related body streamed to disk part by part, with python-multipart's streaming parser: memory stays
bounded by one network chunk (plus the parser's bounded headers) whatever the size of the body or of a part.

    spooler = PartSpooler(boundary, folder)
    async for chunk in request.stream():
        spooler.write(chunk)
    parts = spooler.finish()          # [(content type, path of the part's bytes)], in body order
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser

from twin_imaging.errors import DicomInputError


@dataclass
class SpooledPart:
    content_type: str
    path: Path


@dataclass
class _Current:
    stream: BinaryIO
    path: Path
    headers: dict[str, str] = field(default_factory=dict)
    field: bytes = b""
    value: bytes = b""


class PartSpooler:
    """Feeds the parser; each part's bytes go to a new file in ``folder`` (which should be on the file system of
    the inbox, so a part is moved, not copied, into place)."""

    def __init__(self, boundary: str, folder: Path) -> None:
        self.folder = folder
        self.parts: list[SpooledPart] = []
        self._current: _Current | None = None
        self._ended = False
        callbacks = {
            "on_part_begin": self._begin,
            "on_part_data": self._data,
            "on_part_end": self._end,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_end": self._on_end,
        }
        try:
            self._parser = MultipartParser(boundary.encode("latin-1"), callbacks)
        except (ValueError, UnicodeEncodeError) as exc:
            raise DicomInputError(f"unusable multipart boundary: {exc}") from None

    def write(self, chunk: bytes) -> None:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise DicomInputError(f"the multipart body is malformed: {exc}") from None

    def finish(self) -> list[SpooledPart]:
        """The parts, once the body has ended; DicomInputError where it stopped before its closing boundary."""
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise DicomInputError(f"the multipart body is malformed: {exc}") from None
        if self._current is not None or not self._ended:
            self.discard()
            raise DicomInputError("the multipart body ends before its closing boundary")
        return self.parts

    def discard(self) -> None:
        """Remove every file written so far (an aborted or refused upload)."""
        if self._current is not None:
            self._current.stream.close()
            self._current.path.unlink(missing_ok=True)
            self._current = None
        for part in self.parts:
            part.path.unlink(missing_ok=True)

    # --- parser callbacks ------------------------------------------------------------------------------------

    def _begin(self) -> None:
        handle, name = tempfile.mkstemp(dir=self.folder, prefix="part-", suffix=".dcm")
        self._current = _Current(os.fdopen(handle, "wb"), Path(name))

    def _data(self, data: bytes, start: int, end: int) -> None:
        assert self._current is not None
        self._current.stream.write(data[start:end])

    def _end(self) -> None:
        current = self._current
        assert current is not None
        current.stream.close()
        content_type = current.headers.get("content-type", "text/plain").split(";")[0].strip().lower()
        self.parts.append(SpooledPart(content_type, current.path))
        self._current = None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        assert self._current is not None
        self._current.field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        assert self._current is not None
        self._current.value += data[start:end]

    def _header_end(self) -> None:
        current = self._current
        assert current is not None
        current.headers[current.field.decode("latin-1").strip().lower()] = current.value.decode("latin-1").strip()
        current.field = current.value = b""

    def _on_end(self) -> None:
        self._ended = True
