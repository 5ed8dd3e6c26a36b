"""Observation units and dates are checked; a conflicting duplicate is a conflict."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from twin_imaging.errors import TwinConflictError, TwinError
from twin_imaging.twin.observation_units import LOINC, check_effective_at, checked_unit
from twin_imaging.twin.views import ObservationInput


@pytest.mark.parametrize(
    ("code", "unit", "stored"),
    [
        ("62238-1", "mL/min/{1.73_m2}", "mL/min/{1.73_m2}"),
        ("62238-1", "mL/min/1.73m2", "mL/min/{1.73_m2}"),
        ("2160-0", "mg/dl", "mg/dL"),
        ("14682-9", "µmol/L", "umol/L"),
        ("12345-6", "whatever/unit", "whatever/unit"),  # a code without a known unit keeps what it is given
    ],
)
def test_known_codes_take_their_ucum_unit(code, unit, stored):
    assert checked_unit(LOINC, code, unit) == stored


@pytest.mark.parametrize(("code", "unit"), [("62238-1", "u"), ("62238-1", "mg/dL"), ("2160-0", "umol/L"), ("x", " ")])
def test_wrong_units_are_refused(code, unit):
    with pytest.raises(TwinError, match="unit"):
        checked_unit(LOINC, code, unit)


@pytest.mark.parametrize("when", [datetime(9999, 12, 31, tzinfo=UTC), datetime(1899, 12, 31, tzinfo=UTC)])
def test_dates_outside_1900_to_today_are_refused(when):
    with pytest.raises(TwinError, match="between 1900-01-01 and today"):
        check_effective_at("62238-1", when)
    check_effective_at("62238-1", datetime(2024, 5, 1, tzinfo=UTC))


def test_a_conflicting_duplicate_is_a_conflict_and_the_same_one_is_not(store):
    store.register_patient("OBS-1", actor="test")
    key = store.resolve_patient_key("OBS-1")
    at = datetime(2024, 5, 1, 8, tzinfo=UTC)
    first = ObservationInput(code="62238-1", display="eGFR", value=71.0, unit="mL/min/1.73m2", effective_at=at)
    recorded = store.record_observation(key, first, actor="lab")
    assert recorded.unit == "mL/min/{1.73_m2}"
    assert store.record_observation(key, first, actor="lab") == recorded  # the same again: returned, not doubled
    with pytest.raises(TwinConflictError, match="already recorded"):
        store.record_observation(key, ObservationInput(**{**first.__dict__, "value": 12.0}), actor="lab")
