"""UIDs of the objects an analysis derives from a series (SEG, SR, their series).

Derived, not random: the same source images analysed by the same model (id, version, ONNX sha256) get the same
UIDs, so analysing a study again (a repeated pull, a resent study) files the same objects into the PACS, which keeps
one, instead of adding a duplicate SEG series each time. A name-based UUID (RFC 4122 version 5, SHA-1) of the inputs
makes a ``2.25.`` UID (PS3.5 B.2); pydicom's ``generate_uid(prefix=None)`` would ignore the inputs (random UUID).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from pydicom.dataset import Dataset

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/twin-imaging/twin-imaging/uids")


def uid_from(*parts: str) -> str:
    """A DICOM UID that is a function of ``parts``: ``2.25.`` and the decimal of their name-based UUID."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, chr(31).join(parts)).int}"


def derived_uid(source_headers: Sequence[Dataset], card, kind: str) -> str:
    """``kind`` names the object and level, e.g. "seg.series", "seg.instance", "sr.instance"."""
    sources = [str(h.SOPInstanceUID) for h in source_headers]
    return uid_from("twin-imaging", kind, card.model_id, card.version, card.onnx.sha256, *sources)
