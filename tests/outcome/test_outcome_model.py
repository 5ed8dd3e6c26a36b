"""The shipped outcome model: monotone in the surgical scenario over every KiTS patient, the predict and evaluate
commands, clear refusals of bad input, and the card's numbers reproduced by the training command."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

from tests.conftest import shared_file
from twin_imaging.cli import cli
from twin_imaging.errors import ModelError
from twin_imaging.outcome.features import MODEL_FEATURES, feature_row
from twin_imaging.outcome.imputation import impute_clinical
from twin_imaging.outcome.model import OutcomeModel, load_outcome_package
from twin_imaging.outcome.targets import TARGETS

CLINICAL = {
    "age_years": 64,
    "sex": "male",
    "bmi_kg_m2": 31.2,
    "preop_egfr_ml_min_1_73m2": 68,
    "radiographic_size_cm": 4.5,
    "smoking_history": "previous_smoker",
}


@pytest.fixture(scope="module")
def model() -> OutcomeModel:
    return OutcomeModel()


def test_the_package_has_every_target_and_family_side_by_side(model):
    card = model.card
    assert [t.name for t in card.targets] == list(TARGETS)
    for target in card.targets:
        families = {f.family for f in target.families}
        assert {"clinical_only", "clinical_mask"} <= families
        assert target.shipped_family in families
    assert card.feature_names == MODEL_FEATURES
    assert "CC BY-NC-SA" in card.data_licence
    assert any("image network" in item for item in card.limitations)
    for target in card.targets:  # the image network family is shown beside the others, and did not win
        image = next(f for f in target.families if f.family == "image_network")
        assert image.auroc <= max(f.auroc for f in target.families if f.family != "image_network")


def test_radical_never_predicts_less_egfr_decline_than_partial_for_any_patient(kits, model):
    partial_rows, radical_rows = [], []
    for case in kits.cases:
        if case.clinical is None or case.features is None or case.resections is None:
            continue
        clinical, _ = impute_clinical(case.clinical, dict(model.card.imputation))
        for procedure, rows in (("partial_nephrectomy", partial_rows), ("radical_nephrectomy", radical_rows)):
            from twin_imaging.outcome.clinical import SurgicalScenario

            approach = case.scenario.approach if case.scenario is not None else "robotic"
            scenario = SurgicalScenario(procedure=procedure, approach=approach)
            row = feature_row(clinical, scenario, case.features, case.resections[procedure])
            rows.append([row[name] for name in MODEL_FEATURES])
    assert len(partial_rows) >= 370
    partial, _ = model.run(np.array(partial_rows))
    radical, _ = model.run(np.array(radical_rows))
    t = [target.name for target in model.card.targets].index("egfr_decline")
    # every bootstrap member too, so the intervals are monotone as well
    assert np.all(radical[:, t, :] >= partial[:, t, :] - 1e-6)


def test_evaluate_prints_the_json_of_every_target_and_the_new_baseline_egfr(shared_data):
    root = shared_file(shared_data, "kits23")
    result = CliRunner().invoke(cli, ["outcome", "evaluate", "--data", str(root), "--format", "json"])
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert set(scores) == {*TARGETS, "new_baseline_egfr"}
    shipped = {t.name: t.shipped_family for t in load_outcome_package().card.targets}
    for name in TARGETS:
        values = scores[name]
        assert set(values) == {"auroc", "brier", "n", "events"}
        if shipped[name] == "base_rate":  # one rate for everyone ranks nobody
            assert values["auroc"] == 0.5
        else:
            assert 0.5 < values["auroc"] <= 1.0
        assert 0.0 <= values["brier"] <= 0.25
        assert 0 < values["events"] < values["n"] <= 400
    # the patients it is scored on, and the no-change baseline, counted here from kits23.json itself
    records = json.loads((root / "kits23.json").read_text())
    both = [
        r
        for r in records
        if r.get("surgical_procedure") in ("partial_nephrectomy", "radical_nephrectomy", "nephroureterectomy")
        and (r.get("last_preop_egfr") or {}).get("value") is not None
        and (r.get("first_postop_egfr") or {}).get("value") is not None
    ]
    no_change = np.mean([abs(r["last_preop_egfr"]["value"] - r["first_postop_egfr"]["value"]) for r in both])
    egfr = scores["new_baseline_egfr"]
    assert set(egfr) == {"mae", "n", "within_10"}
    assert 0.9 * len(both) <= egfr["n"] <= len(both)  # a few cases' clinical input or masks are refused
    assert egfr["mae"] < 0.75 * no_change  # in-distribution, but far from "nothing changes"
    assert 0.3 < egfr["within_10"] <= 1.0


@pytest.fixture()
def one_case(shared_data, tmp_path):
    mask = shared_file(shared_data, "kits23/case_00000/segmentation.nii.gz")
    clinical = tmp_path / "clinical.json"
    clinical.write_text(json.dumps(CLINICAL))
    return mask, clinical


def test_predict_gives_both_scenarios_with_intervals_and_drivers(one_case):
    mask, clinical = one_case
    result = CliRunner().invoke(cli, ["outcome", "predict", "--mask", str(mask), "--clinical", str(clinical), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    predictions = document["predictions"]
    assert {(p["target"], p["scenario"]) for p in predictions} == {
        (t, s) for t in TARGETS for s in ("partial_nephrectomy", "radical_nephrectomy")
    }
    base_rate = {t.name for t in load_outcome_package().card.targets if t.shipped_family == "base_rate"}
    for p in predictions:
        low, high = p["interval_90"]
        assert 0 <= low <= high <= 1
        assert bool(p["drivers"]) == (p["target"] not in base_rate)  # the cohort's rate has no driver
    assert any("alcohol_use" in item for item in document["imputed"])  # said, not hidden
    egfr = {p["scenario"]: p for p in document["new_baseline_egfr"]}
    assert set(egfr) == {"partial_nephrectomy", "radical_nephrectomy"}
    partial, radical = egfr["partial_nephrectomy"], egfr["radical_nephrectomy"]
    assert (
        0 < radical["egfr_ml_min_1_73m2"] < partial["egfr_ml_min_1_73m2"] < CLINICAL["preop_egfr_ml_min_1_73m2"] * 1.3
    )
    assert radical["preserved_fraction_of_affected"] == 0 < partial["preserved_fraction_of_affected"] <= 1
    for p in (partial, radical):
        low, high = p["interval_90"]
        assert low <= p["egfr_ml_min_1_73m2"] <= high
    text = CliRunner().invoke(cli, ["outcome", "predict", "--mask", str(mask), "--clinical", str(clinical)])
    assert "| egfr_decline |" in text.output and "imputed" in text.output
    assert "| new-baseline eGFR" in text.output
    for name in base_rate:
        assert f"{name} / partial_nephrectomy: the cohort's rate" in text.output


def test_no_new_baseline_egfr_without_a_measured_pre_operative_egfr(one_case, tmp_path):
    mask, _ = one_case
    clinical = tmp_path / "no_egfr.json"
    clinical.write_text(json.dumps({k: v for k, v in CLINICAL.items() if k != "preop_egfr_ml_min_1_73m2"}))
    result = CliRunner().invoke(cli, ["outcome", "predict", "--mask", str(mask), "--clinical", str(clinical), "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert document["new_baseline_egfr"] == []
    assert "pre-operative eGFR" in document["new_baseline_egfr_missing"]


def _mask_with(tmp_path, source, change) -> str:
    image = nib.load(source)
    array = np.asarray(image.dataobj).astype(np.uint8)
    array = change(array)
    path = tmp_path / "edited.nii.gz"
    nib.save(nib.Nifti1Image(array, image.affine), path)
    return str(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: np.where(a == 1, 0, a).astype(np.uint8), "kidney"),
        (lambda a: np.where(np.indices(a.shape).sum(0) < 3, 7, a).astype(np.uint8), "unexpected label"),
    ],
)
def test_bad_masks_are_refused_with_the_reason(one_case, tmp_path, change, message):
    mask, clinical = one_case
    bad = _mask_with(tmp_path, mask, change)
    result = CliRunner().invoke(cli, ["outcome", "predict", "--mask", bad, "--clinical", str(clinical)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert message in result.output.lower()


def test_bad_clinical_input_lists_every_problem(one_case, tmp_path):
    mask, _ = one_case
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"sex": "male", "bmi_kg_m2": 500}))
    result = CliRunner().invoke(cli, ["outcome", "predict", "--mask", str(mask), "--clinical", str(bad)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "age_years" in result.output and "bmi_kg_m2" in result.output


def test_a_changed_onnx_file_is_refused(tmp_path):
    package = load_outcome_package()
    copy = tmp_path / "pkg"
    shutil.copytree(package.root, copy)
    onnx = copy / package.card.onnx.file
    onnx.write_bytes(onnx.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(ModelError, match="sha256"):
        load_outcome_package(copy)


@pytest.mark.slow
def test_the_training_command_reproduces_the_cards_cross_validated_numbers(shared_data, tmp_path):
    from training.outcome.train import train
    from training.paths import REPO_ROOT

    root = shared_file(shared_data, "kits23")
    card = train(
        root,
        tmp_path / "pkg",
        cache_dir=tmp_path / "cache",
        n_repeats=5,
        workers=2,
        docs_dir=tmp_path,
        evidence_dir=tmp_path,
        image_network_cv=REPO_ROOT / "training" / "evaluations" / "nephrectomy_outcomes_image_network_cv.json",
    )
    shipped = load_outcome_package().card
    for ours, theirs in zip(card.targets, shipped.targets, strict=True):
        assert ours.shipped_family == theirs.shipped_family
        for a, b in zip(ours.families, theirs.families, strict=True):
            assert (a.auroc, a.brier, a.n, a.events) == (b.auroc, b.brier, b.n, b.events)
