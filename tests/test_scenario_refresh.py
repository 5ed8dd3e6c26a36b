"""Labs that reach the twin after the scan: the scenarios that count run again with them (the new-baseline eGFR
appears once a pre-operative eGFR exists), the same labs again record nothing, and the set that counts holds each
prediction once, as last computed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.test_expert_intake import GEOMETRY, KIDNEYS_AND_TUMOUR, PATIENT, MassCase
from twin_imaging.expert_intake import receive_expert_seg
from twin_imaging.inference.segment import Segmenter
from twin_imaging.models import default_segmentation_package
from twin_imaging.outcome.model import OutcomeModel
from twin_imaging.outcome.twin_scenarios import current_scenarios
from twin_imaging.pipeline import analyze_study
from twin_imaging.scenario_refresh import refresh_scenarios
from twin_imaging.settings import Settings
from twin_imaging.testing import SeriesSpec, StudySpec, write_phantom_study
from twin_imaging.testing.phantom import RENAL_TUMOUR, PhantomAnatomy
from twin_imaging.twin.store import TwinStore
from twin_imaging.twin.views import ObservationInput


@pytest.fixture
def case_without_labs(tmp_path) -> MassCase:
    study = write_phantom_study(
        tmp_path / "study",
        (SeriesSpec(geometry=GEOMETRY),),
        patient=PATIENT,
        study=StudySpec(study_date="20240301"),
        anatomy=PhantomAnatomy().with_structure(RENAL_TUMOUR),
    )
    result = analyze_study(tmp_path / "study", tmp_path / "out", segmenter=Segmenter(default_segmentation_package()))
    store = TwinStore(
        f"sqlite:///{tmp_path / 'twin.sqlite3'}", artifacts_dir=tmp_path / "artifacts", settings=Settings()
    )
    analysis = store.attach_analysis(result, actor="pacs")
    yield MassCase(tmp_path / "study", study.series[0], store, analysis.analysis_id, OutcomeModel(), result)
    store.close()


def _egfr(value: float, day: int) -> ObservationInput:
    return ObservationInput(
        code="62238-1",
        display="eGFR",
        value=value,
        unit="mL/min/{1.73_m2}",
        effective_at=datetime(2024, 2, day, tzinfo=UTC),
    )


def test_an_egfr_that_arrives_after_the_seg_brings_the_new_baseline_egfr(case_without_labs):
    case = case_without_labs
    store, model = case.store, case.model
    receipt = receive_expert_seg(store, case.seg_bytes(KIDNEYS_AND_TUMOUR), via="api", actor="x", outcome_model=model)
    first = receipt["scenarios"]
    assert first["computed"] and not first["new_baseline_egfr"]  # no eGFR on the twin yet
    key = store.patient_key_for(PATIENT.patient_id)
    assert [r.computed for r in refresh_scenarios(store, key, actor="lab", outcome_model=model)] == [False]  # same

    store.record_observation(key, _egfr(71.0, 20), actor="lab")
    (run,) = refresh_scenarios(store, key, actor="lab", outcome_model=model)
    assert run.computed and run.mask_source == first["mask_source"]  # the radiologist's masks, again
    egfr = {e["scenario"]: e["egfr_ml_min_1_73m2"] for e in run.report["new_baseline_egfr"]}
    assert 0 < egfr["radical_nephrectomy"] < egfr["partial_nephrectomy"] < 71.0 * 1.3
    (shown,) = current_scenarios(store.summary(key, actor="t"))
    pairs = [(p["target"], p["scenario"]) for p in shown["predictions"]]
    assert len(pairs) == len(set(pairs))  # each prediction once, as last computed
    shown_egfr = {p["scenario"]: p["value"] for p in shown["predictions"] if p["target"] == "new_baseline_egfr"}
    assert shown_egfr == pytest.approx(egfr, abs=0.05)  # the report rounds to 0.1
    assert not any("preop_egfr" in i for i in shown["imputed"])

    recorded = len(store.summary(key, actor="t").predictions)
    (again,) = refresh_scenarios(store, key, actor="lab", outcome_model=model)
    assert not again.computed and again.reason.startswith("unchanged")
    assert len(store.summary(key, actor="t").predictions) == recorded  # nothing recorded twice

    store.record_observation(key, _egfr(52.0, 27), actor="lab")  # a later pre-operative eGFR replaces it
    (lower,) = refresh_scenarios(store, key, actor="lab", outcome_model=model)
    assert lower.computed
    lower_egfr = {e["scenario"]: e["egfr_ml_min_1_73m2"] for e in lower.report["new_baseline_egfr"]}
    assert lower_egfr["partial_nephrectomy"] < egfr["partial_nephrectomy"]


def test_a_patient_without_scenarios_has_nothing_to_refresh(case_without_labs):
    store = case_without_labs.store
    key = store.patient_key_for(PATIENT.patient_id)
    store.record_observation(key, _egfr(71.0, 20), actor="lab")
    assert refresh_scenarios(store, key, actor="lab", outcome_model=case_without_labs.model) == []


def test_a_lab_long_after_the_scan_does_not_change_its_scenarios(case_without_labs):
    case = case_without_labs
    store, model = case.store, case.model
    receive_expert_seg(store, case.seg_bytes(KIDNEYS_AND_TUMOUR), via="api", actor="x", outcome_model=model)
    key = store.patient_key_for(PATIENT.patient_id)
    late = ObservationInput(  # a year after the scan of 2024-03-01: another work-up, not this scan's
        code="62238-1",
        display="eGFR",
        value=40.0,
        unit="mL/min/{1.73_m2}",
        effective_at=datetime(2025, 3, 1, tzinfo=UTC),
    )
    store.record_observation(key, late, actor="lab")
    recorded = len(store.summary(key, actor="t").predictions)
    (run,) = refresh_scenarios(store, key, actor="lab", outcome_model=model)
    assert not run.computed and run.reason.startswith("unchanged")
    assert len(store.summary(key, actor="t").predictions) == recorded


def test_only_codes_that_feed_the_scenarios_trigger_a_refresh():
    from twin_imaging.outcome.twin_inputs import is_scenario_input

    assert is_scenario_input("62238-1") and is_scenario_input("2160-0") and is_scenario_input("39156-5")
    assert not is_scenario_input("718-7")  # haemoglobin
