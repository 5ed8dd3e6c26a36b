"""UIDs of the objects an analysis derives from a series (SEG, SR, their series), and SR tracking identifiers.

Derived, not random: the same source images analysed by the same model (id, version, ONNX sha256) get the same
series UIDs, and, with the same result, the same instance UIDs, so analysing a study again (a repeated pull, a
resent study) files the same objects into the PACS, which keeps one, instead of adding a duplicate SEG each time.
A changed result (a fix in the code, more instances of the series) gets new instance UIDs in the same series, so
the PACS does not keep the stale object under the old UID. Tracking identifiers are stable per patient and
structure, so that TID 1500 can follow one finding (the left kidney) across studies. A name-based UUID (RFC 4122
version 5, SHA-1) of the inputs makes a ``2.25.`` UID (PS3.5 B.2); pydicom's ``generate_uid(prefix=None)`` would
ignore the inputs (random UUID).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/twin-imaging/twin-imaging/uids")


def uid_from(*parts: str) -> str:
    """A DICOM UID that is a function of ``parts``: ``2.25.`` and the decimal of their name-based UUID."""
    return f"2.25.{uuid.uuid5(_NAMESPACE, chr(31).join(parts)).int}"


def derived_uid(source_headers: Sequence[Dataset], card, kind: str, *content: str) -> str:
    """``kind`` names the object and level, e.g. "seg.series", "seg.instance", "sr.instance"; ``content`` is what
    defines an instance beyond its inputs and model (e.g. ``content_digest`` of the label map)."""
    sources = [str(h.SOPInstanceUID) for h in source_headers]
    return uid_from("twin-imaging", kind, card.model_id, card.version, card.weights_sha256, *sources, *content)


def content_digest(array: np.ndarray) -> str:
    """A fingerprint of an array's values, shape and type (for UIDs, not for integrity: BLAKE2b, 128 bits).

    The values are read in Fortran order (first axis fastest), the order of a label map on a DICOM or NIfTI grid,
    so that the usual map is hashed where it lies, with no 78 MB transposing copy (0.2 s); the same values give the
    same fingerprint whatever the array's memory order. Before 2026-12-05 (version 0.1.0) the values were read in C
    order: a SEG of an unchanged result made before that has another instance UID than one made after (once; a
    PACS then holds both, the newer one with the same content)."""
    values = np.asfortranarray(array).T  # C-contiguous view of the Fortran-order values
    digest = hashlib.blake2b(f"{values.dtype.str}{array.shape}".encode(), digest_size=16)
    digest.update(memoryview(values).cast("B"))
    return digest.hexdigest()


def tracking_uid(source_headers: Sequence[Dataset], structure: str) -> str:
    """The same UID for one structure of one patient in every study (the study, where the PatientID is blank)."""
    header = source_headers[0]
    patient = str(header.get("PatientID", "") or "") or f"study {header.get('StudyInstanceUID', '')}"
    return uid_from("twin-imaging tracking", patient, structure)
