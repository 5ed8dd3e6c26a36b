"""FHIR lab bundles as a hospital's LIS sends them, for tests and demos: eGFR Observations (LOINC 98979-8, CKD-EPI
2021) in a collection Bundle, one entry per (effectiveDateTime, value in mL/min/1.73 m²)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from twin_imaging.outcome.twin_inputs import EGFR_CKD_EPI_2021


def egfr_bundle(readings: Iterable[tuple[str, float]]) -> dict:
    """A collection Bundle with one final eGFR Observation per ``(effective ISO date-time, value)``."""
    unit = {"unit": "mL/min/{1.73_m2}", "system": "http://unitsofmeasure.org", "code": "mL/min/{1.73_m2}"}
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {
                "resource": {
                    "resourceType": "Observation",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": EGFR_CKD_EPI_2021, "display": "eGFR"}]},
                    "effectiveDateTime": when,
                    "valueQuantity": {"value": float(value), **unit},
                }
            }
            for when, value in readings
        ],
    }


def write_egfr_bundle(path: str | Path, readings: Iterable[tuple[str, float]]) -> Path:
    """``egfr_bundle(readings)`` written as JSON to ``path``."""
    path = Path(path)
    path.write_text(json.dumps(egfr_bundle(readings)), encoding="utf-8")
    return path
