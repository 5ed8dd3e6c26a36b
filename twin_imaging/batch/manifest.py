"""A cohort to analyse: one study per row of a CSV or JSON manifest.

CSV, with a header row::

    source,patient_id
    /archive/ct/0001,
    /archive/ct/0002.zip,
    dicomweb:1.2.840.113619.2.55.3,
    /archive/nifti/0003.nii.gz,ANON-3

A source is a DICOM folder, zip or file, ``dicomweb:<StudyInstanceUID>`` (retrieved from ``settings.dicomweb_url``),
or a NIfTI, which needs its patient id. Lines starting with ``#`` are comments.

JSON: ``[{"source": "...", "patient_id": "..."}, ...]`` or ``{"studies": [...]}``. Relative paths are taken from
the manifest's folder. Every problem is reported with its row, and nothing runs, where the manifest is malformed.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from twin_imaging.errors import InputError
from twin_imaging.io.nifti import is_nifti_path

DICOMWEB_PREFIX = "dicomweb:"
MAX_ROWS = 1_000_000


@dataclass(frozen=True)
class BatchItem:
    row: int  # 1-based row of the manifest (header excluded)
    source: str  # a path (absolute) or "dicomweb:<StudyInstanceUID>"
    patient_id: str | None = None

    @property
    def is_dicomweb(self) -> bool:
        return self.source.startswith(DICOMWEB_PREFIX)

    @property
    def study_instance_uid(self) -> str:
        return self.source[len(DICOMWEB_PREFIX) :]

    @property
    def label(self) -> str:
        """How the summary names it: the row and the source's last part (never a patient identifier)."""
        tail = self.source if self.is_dicomweb else Path(self.source).name
        return f"row {self.row} ({tail})"


def read_manifest(path: str | Path) -> list[BatchItem]:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"the manifest {path} cannot be read: {exc}") from None
    rows = _json_rows(text, path) if path.suffix.lower() == ".json" else _csv_rows(text, path)
    if len(rows) > MAX_ROWS:
        raise InputError(f"the manifest has {len(rows)} rows; at most {MAX_ROWS}")
    items, problems, seen = [], [], {}
    for number, row in enumerate(rows, start=1):
        source = str(row.get("source") or "").strip()
        patient = str(row.get("patient_id") or "").strip() or None
        if not source:
            problems.append(f"row {number}: no source")
            continue
        if source.startswith(DICOMWEB_PREFIX):
            uid = source[len(DICOMWEB_PREFIX) :].strip()
            if not uid or len(uid) > 64 or any(c not in "0123456789." for c in uid):
                problems.append(f"row {number}: {source!r} is not dicomweb:<StudyInstanceUID>")
                continue
            source = DICOMWEB_PREFIX + uid
        else:
            resolved = (path.parent / source).resolve()
            if not resolved.exists():
                problems.append(f"row {number}: {source} does not exist")
                continue
            if is_nifti_path(resolved) and patient is None:
                problems.append(f"row {number}: a NIfTI carries no patient; give its patient_id")
                continue
            source = str(resolved)
        if source in seen:
            problems.append(f"row {number}: {source} is listed already (row {seen[source]})")
            continue
        seen[source] = number
        items.append(BatchItem(number, source, patient))
    if problems:
        shown = problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else [])
        raise InputError("the manifest has problems, nothing was run:\n  " + "\n  ".join(shown))
    if not items:
        raise InputError(f"the manifest {path} lists no study")
    return items


def _csv_rows(text: str, path: Path) -> list[dict]:
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or "source" not in [f.strip() for f in reader.fieldnames]:
        raise InputError(f"the manifest {path} needs a header row with a 'source' column (and optionally patient_id)")
    return [{(k or "").strip(): v or "" for k, v in row.items()} for row in reader]


def _json_rows(text: str, path: Path) -> list[dict]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"the manifest {path} is not JSON: {exc}") from None
    rows = data.get("studies") if isinstance(data, dict) else data
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise InputError(f"the manifest {path} must be a list of objects with 'source' (or {{'studies': [...]}})")
    return rows
