"""The post-operative outcomes the models predict, each defined once, as code and as text for the model card.

Every target is a function of one kits23.json record: 1 (the event happened), 0 (it did not), or None (the record
does not say). Events over KiTS23's 400 cases (measured 2026-11-26, dataset 0.1.4; ``tests/outcome/test_targets.py``
recomputes them):

| target             | events | non-events | not computable |
| ------------------ | ------ | ---------- | -------------- |
| any_complication   |     74 |        326 |              0 |
| major_complication |     21 |        379 |              0 |
| prolonged_stay     |     92 |        308 |              0 |
| egfr_decline       |    142 |         68 |            190 |

These counts include the 18 cryoablations and 8 cases whose clinical input is refused; the counts a model trains on
are those of the cases it keeps. Of the 210 cases with ``egfr_decline`` defined, 52 already had a pre-operative eGFR
below 60 (and so count as events whenever the post-operative value stays below 60); 134 meet the < 60 criterion and 90
the 25 % fall.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

CLAVIEN_GRADES = ("0", "1", "2", "3a", "3b", "4", "5")
MAJOR_CLAVIEN_GRADES = frozenset({"3a", "3b", "4", "5"})

PROLONGED_STAY_DAYS = 4
"""A stay longer than this is prolonged. It is the 75th percentile of ``hospitalization`` over KiTS23's 400 cases
(numpy's linear percentile; 25th 1 day, median 2, 75th 4, 90th 6; measured 2026-11-26): "above the 75th percentile"
flags the longest quarter of stays, a common definition of prolonged length of stay that needs no outside reference
and keeps enough events (92) for a model. Ties at 4 days fall below, so the events are 23 %, not 25 %."""

EGFR_FLOOR_ML_MIN_1_73M2 = 60.0  # below 60: CKD stage 3 or worse (KDIGO)
EGFR_RELATIVE_FALL = 0.25


@dataclass(frozen=True)
class Target:
    name: str
    description: str  # one line, for people
    definition: str  # exact, for the model card
    compute: Callable[[Mapping[str, Any]], int | None]
    required_inputs: tuple[str, ...] = ()  # ClinicalInput fields a prediction of it must have measured, not imputed


def clavien_grade(record: Mapping[str, Any]) -> str | None:
    """The Clavien-Dindo grade of the surgical complications ("0" none … "5" death), or None if not recorded."""
    value = record.get("clavien_surgical_complications")
    if value is None:
        return None
    grade = str(value).strip().lower()
    return grade if grade in CLAVIEN_GRADES else None


def any_complication(record: Mapping[str, Any]) -> int | None:
    """1 if the Clavien-Dindo grade is 1 or more (any surgical complication), 0 if it is 0."""
    grade = clavien_grade(record)
    return None if grade is None else int(grade != "0")


def major_complication(record: Mapping[str, Any]) -> int | None:
    """1 if the Clavien-Dindo grade is 3a or more (needing an intervention, intensive care, or death)."""
    grade = clavien_grade(record)
    return None if grade is None else int(grade in MAJOR_CLAVIEN_GRADES)


def prolonged_stay(record: Mapping[str, Any]) -> int | None:
    """1 if the hospital stay was longer than ``PROLONGED_STAY_DAYS`` days."""
    days = record.get("hospitalization")
    if days is None or days < 0:
        return None
    return int(days > PROLONGED_STAY_DAYS)


def egfr_decline(record: Mapping[str, Any]) -> int | None:
    """1 if the first post-operative eGFR is below 60, or at least 25 % below the last pre-operative one.

    None unless both values are recorded (and the pre-operative one is positive): a post-operative value below 60 in a
    patient whose pre-operative eGFR is unknown is not counted, since the decline may have been there before.
    """
    preop = _egfr(record, "last_preop_egfr")
    postop = _egfr(record, "first_postop_egfr")
    if preop is None or postop is None or preop <= 0:
        return None
    fall = (preop - postop) / preop
    return int(postop < EGFR_FLOOR_ML_MIN_1_73M2 or fall >= EGFR_RELATIVE_FALL)


TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        Target(
            "any_complication",
            "any surgical complication",
            'Clavien-Dindo grade of the surgical complications >= 1 (KiTS clavien_surgical_complications "1" to "5").',
            any_complication,
        ),
        Target(
            "major_complication",
            "a major surgical complication",
            'Clavien-Dindo grade >= 3a (KiTS clavien_surgical_complications "3a", "3b", "4" or "5").',
            major_complication,
        ),
        Target(
            "prolonged_stay",
            f"a hospital stay longer than {PROLONGED_STAY_DAYS} days",
            f"KiTS hospitalization (length of stay, days) > {PROLONGED_STAY_DAYS}, the 75th percentile of KiTS23's "
            "400 cases.",
            prolonged_stay,
        ),
        Target(
            "egfr_decline",
            "a decline of kidney function",
            "first post-operative eGFR < 60 mL/min/1.73 m², or (pre-operative - first post-operative) / pre-operative "
            ">= 0.25, using KiTS last_preop_egfr and first_postop_egfr; not defined where either is missing. KiTS "
            "caps eGFR at 90, so falls from above 90 are underestimated.",
            egfr_decline,
            required_inputs=("preop_egfr_ml_min_1_73m2",),
        ),
    )
}


def compute_targets(record: Mapping[str, Any]) -> dict[str, int | None]:
    """Every target of one kits23.json record, in ``TARGETS`` order."""
    return {name: target.compute(record) for name, target in TARGETS.items()}


def _egfr(record: Mapping[str, Any], key: str) -> float | None:
    entry = record.get(key)
    value = entry.get("value") if isinstance(entry, Mapping) else None
    return None if value is None else float(value)
