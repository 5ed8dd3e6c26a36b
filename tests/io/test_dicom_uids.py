"""Derived UIDs: the same content gives the same fingerprint whatever its memory layout; other content another."""

from __future__ import annotations

import numpy as np

from twin_imaging.io.dicom_uids import content_digest


def test_the_fingerprint_follows_the_values_not_the_memory_layout():
    labels = np.random.default_rng(0).integers(0, 14, size=(20, 16, 12), dtype=np.uint8)
    fingerprint = content_digest(labels)
    assert content_digest(np.asfortranarray(labels)) == fingerprint
    assert content_digest(labels[::-1][::-1]) == fingerprint  # a view of the same values
    changed = labels.copy()
    changed[3, 4, 5] = (changed[3, 4, 5] + 1) % 14
    assert content_digest(changed) != fingerprint
    assert content_digest(labels.astype(np.uint16)) != fingerprint  # the type is part of it
    assert content_digest(labels.reshape(16, 20, 12)) != fingerprint  # and the shape
