"""What an observation's unit and time may be: the UCUM unit each known LOINC code is reported in, and a sane date.

A lab value stored in the wrong unit is worse than none: an eGFR "60 u" (UCUM's atomic mass unit) or a creatinine in
mg/dL under the µmol/L code would feed the outcome scenarios and alerts silently. For the codes below the unit must
be the code's UCUM unit (common spellings of it are accepted and stored as the UCUM code); other codes keep the
unit they are given. Times must lie between 1900 and a day from now: lab results are not recorded ahead.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from twin_imaging.errors import TwinError

LOINC = "http://loinc.org"
_EGFR = "mL/min/{1.73_m2}"
# LOINC code → (UCUM code, spellings accepted for it)
EXPECTED_UNITS: dict[str, tuple[str, tuple[str, ...]]] = {
    **{
        code: (_EGFR, ("mL/min/1.73m2", "mL/min/1.73 m2", "mL/min/1.73m²", "mL/min/1.73 m²", "ml/min/1.73m2"))
        for code in ("62238-1", "33914-3", "48642-3", "48643-1", "50044-7", "88293-6", "88294-4", "98979-8", "98980-6")
    },
    "2160-0": ("mg/dL", ("mg/dl",)),  # creatinine, serum or plasma, mass/volume
    "14682-9": ("umol/L", ("µmol/L", "μmol/L", "umol/l")),  # creatinine, serum or plasma, moles/volume
    "718-7": ("g/dL", ("g/dl",)),  # haemoglobin
}
EARLIEST = datetime(1900, 1, 1, tzinfo=UTC)


def checked_unit(code_system: str, code: str, unit: str) -> str:
    """The unit to store for this code: its UCUM code where the code is known, else ``unit`` as given."""
    unit = unit.strip()
    if not unit:
        raise TwinError(f"observation {code} needs a unit")
    expected = EXPECTED_UNITS.get(code) if code_system == LOINC else None
    if expected is None:
        return unit
    ucum, spellings = expected
    if unit == ucum or unit in spellings:
        return ucum
    raise TwinError(f"observation {code} is reported in {ucum} (UCUM); the unit {unit!r} is not that")


def check_effective_at(code: str, at: datetime, *, now: datetime | None = None) -> None:
    """``at`` (timezone-aware) must lie between 1900-01-01 and one day from now."""
    latest = (now or datetime.now(UTC)) + timedelta(days=1)
    if not EARLIEST <= at <= latest:
        raise TwinError(
            f"observation {code} at {at.date().isoformat()}: a date between {EARLIEST.date().isoformat()} and "
            "today is expected"
        )
