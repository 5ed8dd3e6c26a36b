"""A radiologist's SEG of an analysed phantom series with a renal tumour: recorded with its author, the scenarios
recomputed on its masks (probabilities and new-baseline eGFR, inputs from the twin), idempotent, and refused with
the reason (nothing recorded) when it references no analysed series, another patient, or no kidney."""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pydicom
import pytest

from twin_imaging.expert_intake import ExpertSegError, receive_expert_seg
from twin_imaging.inference.segment import Segmenter
from twin_imaging.models import default_segmentation_package
from twin_imaging.outcome.model import OutcomeModel
from twin_imaging.outcome.twin_scenarios import current_scenarios
from twin_imaging.pipeline import analyze_study
from twin_imaging.settings import Settings
from twin_imaging.testing import PatientSpec, PhantomGeometry, SeriesSpec, StudySpec, write_phantom_study
from twin_imaging.testing.expert_seg import radiologist_seg
from twin_imaging.testing.phantom import RENAL_TUMOUR, PhantomAnatomy
from twin_imaging.twin.store import TwinStore
from twin_imaging.twin.views import ObservationInput, ProcedureInput

GEOMETRY = PhantomGeometry(shape=(160, 160, 64), spacing_mm=(2.5, 2.0, 3.0))
PATIENT = PatientSpec(
    patient_id="KIDNEY-MASS-7", patient_name="Roe^Rob", patient_birth_date="19580712", patient_sex="M"
)
TUMOUR = RENAL_TUMOUR
KIDNEYS_AND_TUMOUR = {"kidney_right": "kidney_right", "kidney_left": "kidney_left", "renal_tumor": "renal_tumor"}


@dataclass(frozen=True)
class MassCase:
    study_dir: Path
    series: object  # PhantomSeries
    store: TwinStore
    analysis_id: str
    model: OutcomeModel
    result: object  # the pipeline's AnalysisResult

    def seg_bytes(self, structures=KIDNEYS_AND_TUMOUR, **kwargs) -> bytes:
        sources = [pydicom.dcmread(p) for p in self.series.paths]
        seg = radiologist_seg(sources, self.series.phantom.labels, structures, **kwargs)
        buffer = io.BytesIO()
        seg.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()


@pytest.fixture
def mass_case(tmp_path) -> MassCase:
    anatomy = PhantomAnatomy().with_structure(TUMOUR)
    study = write_phantom_study(
        tmp_path / "study",
        (SeriesSpec(geometry=GEOMETRY),),
        patient=PATIENT,
        study=StudySpec(study_date="20240301"),
        anatomy=anatomy,
    )
    result = analyze_study(tmp_path / "study", tmp_path / "out", segmenter=Segmenter(default_segmentation_package()))
    store = TwinStore(
        f"sqlite:///{tmp_path / 'twin.sqlite3'}", artifacts_dir=tmp_path / "artifacts", settings=Settings()
    )
    analysis = store.attach_analysis(result, actor="pacs")
    key = store.patient_key_for(PATIENT.patient_id)
    egfr = ObservationInput(
        code="62238-1",
        display="eGFR",
        value=71.0,
        unit="mL/min/{1.73_m2}",
        effective_at=datetime(2024, 2, 20, 8, tzinfo=UTC),
    )
    store.record_observation(key, egfr, actor="lab")
    yield MassCase(tmp_path / "study", study.series[0], store, analysis.analysis_id, OutcomeModel(), result)
    store.close()


def test_a_radiologists_seg_is_recorded_and_the_scenarios_run_on_its_masks(mass_case):
    receipt = receive_expert_seg(
        mass_case.store, mass_case.seg_bytes(), via="api", actor="api:reading-room", outcome_model=mass_case.model
    )
    assert receipt["analysis_id"] == mass_case.analysis_id and not receipt["already_recorded"]
    assert receipt["author"] == "Radiologist Rita"
    assert {s["structure"] for s in receipt["segments"]} == {"kidney_right", "kidney_left", "renal_tumor"}
    scenarios = receipt["scenarios"]
    assert scenarios["computed"], scenarios
    assert scenarios["mask_source"].startswith("expert_seg:")
    assert "62238-1" in scenarios["inputs"]["sources"]["preop_egfr_ml_min_1_73m2"]
    assert scenarios["inputs"]["sources"]["radiographic_size_cm"]  # measured on the expert tumour
    assert "smoking_history" in scenarios["inputs"]["missing"]
    egfr = {e["scenario"]: e["egfr_ml_min_1_73m2"] for e in scenarios["new_baseline_egfr"]}
    assert 0 < egfr["radical_nephrectomy"] < egfr["partial_nephrectomy"] < 71.0 * 1.3
    key = mass_case.store.patient_key_for(PATIENT.patient_id)
    summary = mass_case.store.summary(key, actor="test")
    recorded = [p for p in summary.predictions if p.mask_source == scenarios["mask_source"]]
    assert len(recorded) == len(scenarios["recorded_prediction_ids"]) == len(scenarios["predictions"]) + 2
    for p in recorded:  # what drove each probability, and what was imputed, kept on the twin for the page
        assert any("smoking_history" in i for i in p.imputed), p.imputed
        logits = [abs(d["logit"]) for d in p.drivers]
        assert len(logits) <= 5 and logits == sorted(logits, reverse=True), p.drivers
    with_drivers = {p.target for p in recorded if p.drivers}
    assert {"any_complication", "prolonged_stay"} <= with_drivers  # (a base-rate target has none)
    assert "new_baseline_egfr" not in with_drivers
    (shown,) = current_scenarios(summary)
    assert all("drivers" in p for p in shown["predictions"]) and shown["imputed"]
    (analysis,) = summary.analyses
    (expert,) = analysis.expert_segmentations
    assert expert.author == "Radiologist Rita" and expert.received_via == "api"
    assert mass_case.store.artifacts.exists(expert.artifact_sha256)
    (event,) = [e for e in mass_case.store.timeline(key, actor="t") if e.kind == "expert_segmentation"]
    assert "Radiologist Rita (via api)" in event.summary and "renal_tumor" in event.summary

    again = receive_expert_seg(
        mass_case.store, mass_case.seg_bytes(), via="api", actor="api:reading-room", outcome_model=mass_case.model
    )
    assert not again["already_recorded"]  # a new SEG (new UIDs): recorded as a second reading
    same = mass_case.seg_bytes()
    first = receive_expert_seg(mass_case.store, same, via="c-store", actor="x", outcome_model=mass_case.model)
    repeat = receive_expert_seg(mass_case.store, same, via="c-store", actor="x", outcome_model=mass_case.model)
    assert repeat["already_recorded"] and repeat["expert_segmentation_id"] == first["expert_segmentation_id"]
    assert repeat["scenarios"] is None  # nothing recomputed
    after = mass_case.store.summary(key, actor="test")
    assert len(after.predictions) == 3 * len(recorded)


def test_no_scenarios_for_a_scan_after_the_kidney_operation(mass_case):
    key = mass_case.store.patient_key_for(PATIENT.patient_id)
    operation = ProcedureInput(
        "175905003", "Radical nephrectomy", datetime(2024, 2, 1).date(), "http://snomed.info/sct"
    )
    mass_case.store.record_procedure(key, operation, actor="dr.who")
    receipt = receive_expert_seg(
        mass_case.store, mass_case.seg_bytes(), via="api", actor="x", outcome_model=mass_case.model
    )
    assert not receipt["scenarios"]["computed"]
    assert "pre-operative scans only" in receipt["scenarios"]["reason"]
    assert mass_case.store.summary(key, actor="t").predictions == ()


def _refused(case: MassCase, data: bytes, message: str) -> None:
    key = case.store.patient_key_for(PATIENT.patient_id)
    with pytest.raises(ExpertSegError, match=message):
        receive_expert_seg(case.store, data, via="api", actor="x", outcome_model=case.model)
    summary = case.store.summary(key, actor="t")
    assert summary.analyses[0].expert_segmentations == () and summary.predictions == ()


def test_a_seg_of_an_unanalysed_series_is_refused(mass_case):
    dataset = pydicom.dcmread(io.BytesIO(mass_case.seg_bytes()))
    dataset.ReferencedSeriesSequence[0].SeriesInstanceUID = "1.2.3.4.5"
    buffer = io.BytesIO()
    dataset.save_as(buffer)
    _refused(mass_case, buffer.getvalue(), "no completed analysis of series 1.2.3.4.5")


def test_a_seg_of_another_patient_is_refused(mass_case):
    _refused(mass_case, mass_case.seg_bytes(patient_id="SOMEONE-ELSE"), "not the patient")


def test_a_seg_without_kidney_or_mass_is_refused(mass_case):
    _refused(mass_case, mass_case.seg_bytes({"liver": "liver"}), "no kidney, renal tumour or renal cyst segment")


def test_bytes_that_are_no_dicom_are_refused(mass_case):
    _refused(mass_case, b"not dicom at all" * 20, "not a readable DICOM instance")


def test_masks_with_a_renal_mass_run_the_scenarios_after_attach_and_a_seg_recomputes_them(mass_case):
    from dataclasses import replace

    from twin_imaging.outcome.twin_scenarios import scenarios_after_attach

    store, result = mass_case.store, mass_case.result
    analysis = store.analysis(mass_case.analysis_id, actor="test")
    assert scenarios_after_attach(store, result, analysis, actor="pipeline", model=mass_case.model) is None  # organs
    truth = mass_case.series.phantom.labels  # the phantom's own labels, tumour included
    with_mass = replace(result, segmentation=replace(result.segmentation, labels=truth))
    run = scenarios_after_attach(store, with_mass, analysis, actor="pipeline", model=mass_case.model)
    assert run.computed and run.mask_source == "model"
    receipt = receive_expert_seg(store, mass_case.seg_bytes(), via="api", actor="x", outcome_model=mass_case.model)
    key = store.patient_key_for(PATIENT.patient_id)
    sources = [p.mask_source for p in store.summary(key, actor="t").predictions]
    assert sources.count("model") == sources.count(receipt["scenarios"]["mask_source"]) > 0  # both kept
    from twin_imaging.outcome.twin_scenarios import current_scenarios

    (current,) = current_scenarios(store.summary(key, actor="t"))
    assert current["mask_source"] == receipt["scenarios"]["mask_source"]  # the radiologist's masks count
    assert current["other_mask_sources"] == ["model"]
    egfr = {p["scenario"]: p["value"] for p in current["predictions"] if p["target"] == "new_baseline_egfr"}
    assert egfr["radical_nephrectomy"] < egfr["partial_nephrectomy"]
