import json
import re
from collections import Counter

import numpy as np
import pytest

from tests.conftest import shared_file
from twin_imaging.outcome import targets as targets_module
from twin_imaging.outcome.targets import (
    PROLONGED_STAY_DAYS,
    TARGETS,
    any_complication,
    compute_targets,
    egfr_decline,
    major_complication,
    prolonged_stay,
)


def egfr_record(preop, postop):
    return {
        "last_preop_egfr": {"days_before_nephrectomy": 5, "value": preop},
        "first_postop_egfr": {"days_after_nephrectomy": 1, "value": postop},
    }


@pytest.mark.parametrize(
    ("grade", "any_event", "major_event"),
    [
        ("0", 0, 0),
        ("1", 1, 0),
        ("2", 1, 0),
        ("3a", 1, 1),
        ("3A", 1, 1),
        ("3b", 1, 1),
        ("4", 1, 1),
        ("5", 1, 1),
        (2, 1, 0),
        (None, None, None),
        ("unknown", None, None),
    ],
)
def test_clavien_targets(grade, any_event, major_event):
    record = {"clavien_surgical_complications": grade}
    assert any_complication(record) == any_event
    assert major_complication(record) == major_event


def test_missing_clavien_key():
    assert any_complication({}) is None and major_complication({}) is None


@pytest.mark.parametrize(
    ("days", "expected"),
    [(0, 0), (PROLONGED_STAY_DAYS, 0), (PROLONGED_STAY_DAYS + 1, 1), (59, 1), (None, None), (-1, None)],
)
def test_prolonged_stay(days, expected):
    assert prolonged_stay({"hospitalization": days}) == expected


@pytest.mark.parametrize(
    ("preop", "postop", "expected"),
    [
        (80.0, 75.0, 0),
        (80.0, 60.0, 1),  # a fall of exactly 25 %
        (80.0, 61.0, 0),  # 23.75 %
        (90.0, 59.0, 1),  # below 60
        (50.0, 55.0, 1),  # below 60 already before: counted, as defined
        (70.0, None, None),  # no post-operative value
        (None, 40.0, None),  # below 60, but no pre-operative value to compare with
        (0.0, 40.0, None),  # not a measured eGFR
        (None, None, None),
    ],
)
def test_egfr_decline(preop, postop, expected):
    assert egfr_decline(egfr_record(preop, postop)) == expected


def test_egfr_decline_with_the_entries_missing():
    assert egfr_decline({}) is None
    assert egfr_decline({"last_preop_egfr": None, "first_postop_egfr": {"value": 30.0}}) is None


def test_registry():
    assert list(TARGETS) == ["any_complication", "major_complication", "prolonged_stay", "egfr_decline"]
    for name, target in TARGETS.items():
        assert target.name == name and target.description and target.definition and callable(target.compute)
    assert TARGETS["egfr_decline"].required_inputs == ("preop_egfr_ml_min_1_73m2",)
    assert str(PROLONGED_STAY_DAYS) in TARGETS["prolonged_stay"].definition
    record = {"clavien_surgical_complications": "3b", "hospitalization": 9, **egfr_record(90.0, 80.0)}
    assert compute_targets(record) == {
        "any_complication": 1,
        "major_complication": 1,
        "prolonged_stay": 1,
        "egfr_decline": 0,
    }


# --- the real 400 ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kits_records(shared_data):
    return json.loads(shared_file(shared_data, "kits23/kits23.json").read_text())


def documented_counts() -> dict[str, tuple[int, int, int]]:
    """The event table in the targets module's docstring."""
    rows = re.findall(r"^\| (\w+)\s+\|\s+(\d+) \|\s+(\d+) \|\s+(\d+) \|$", targets_module.__doc__, flags=re.M)
    return {name: (int(events), int(non_events), int(missing)) for name, events, non_events, missing in rows}


def test_prolonged_stay_threshold_is_the_75th_percentile(kits_records):
    assert len(kits_records) == 400
    days = np.array([record["hospitalization"] for record in kits_records], dtype=float)
    assert np.percentile(days, 75) == PROLONGED_STAY_DAYS


def test_event_counts_are_those_documented(kits_records):
    documented = documented_counts()
    assert set(documented) == set(TARGETS)
    for name, target in TARGETS.items():
        counts = Counter(target.compute(record) for record in kits_records)
        assert (counts[1], counts[0], counts[None]) == documented[name], name
