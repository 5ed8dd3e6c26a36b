"""Which scenario predictions count for an analysis (``current_scenarios``): the radiologist's masks over the model's,
the latest run of the same masks, and only the rows of the outcome model that ran last."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from twin_imaging.outcome.twin_scenarios import _same_predictions, current_scenarios
from twin_imaging.twin.views import PredictionView

T0 = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)


def _row(n: int, target: str, scenario: str, *, minutes: int, version: str = "1.0.0", source: str = "model", p=None):
    return PredictionView(
        prediction_id=n,
        target=target,
        scenario=scenario,
        probability=0.1 * n if p is None else p,
        lower=None,
        upper=None,
        model_id="nephrectomy_outcomes",
        model_version=version,
        analysis_id="A1",
        created_at=T0 + timedelta(minutes=minutes),
        mask_source=source,
    )


def _summary(*rows):
    return SimpleNamespace(predictions=list(rows), analyses=[SimpleNamespace(analysis_id="A1")])


def test_the_latest_run_of_the_same_masks_counts():
    (current,) = current_scenarios(
        _summary(_row(1, "egfr_decline", "partial", minutes=0), _row(2, "egfr_decline", "partial", minutes=5))
    )
    assert [p["probability"] for p in current["predictions"]] == [0.2]


def test_a_target_the_upgraded_outcome_model_dropped_does_not_linger():
    (current,) = current_scenarios(
        _summary(
            _row(1, "egfr_decline", "partial", minutes=0),
            _row(2, "prolonged_stay", "partial", minutes=0),
            _row(3, "egfr_decline", "partial", minutes=9, version="2.0.0"),
        )
    )
    assert [(p["target"], p["model"]) for p in current["predictions"]] == [
        ("egfr_decline", "nephrectomy_outcomes 2.0.0")
    ]


def test_a_radiologists_masks_win_over_the_models_even_when_older():
    (current,) = current_scenarios(
        _summary(
            _row(1, "egfr_decline", "partial", minutes=0, source="expert_seg:1.2.3"),
            _row(2, "egfr_decline", "partial", minutes=5),
        )
    )
    assert current["mask_source"] == "expert_seg:1.2.3" and current["other_mask_sources"] == ["model"]
    assert [p["probability"] for p in current["predictions"]] == [0.1]


def test_a_rerun_that_drops_a_target_or_changes_the_outcome_model_is_a_change_worth_recording():
    shown = current_scenarios(
        _summary(_row(1, "egfr_decline", "partial", minutes=0), _row(2, "prolonged_stay", "partial", minutes=0))
    )[0]
    same = [
        _row(3, "egfr_decline", "partial", minutes=5, p=0.1),
        _row(4, "prolonged_stay", "partial", minutes=5, p=0.2),
    ]
    assert _same_predictions(same, shown)
    assert not _same_predictions(same[:1], shown)  # a target dropped
    upgraded = [_row(5, "egfr_decline", "partial", minutes=5, version="2.0.0", p=0.1), same[1]]
    assert not _same_predictions(upgraded, shown)
