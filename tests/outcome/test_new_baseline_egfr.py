"""The new-baseline eGFR model: split renal function from the masks, the published formula by hand, the learned
model monotone in the scenario for every KiTS patient, and its refusals."""

from __future__ import annotations

import pytest

from twin_imaging.errors import InputError
from twin_imaging.outcome.imputation import impute_clinical
from twin_imaging.outcome.model import load_outcome_package
from twin_imaging.outcome.new_baseline_egfr import (
    SplitRenalFunction,
    covariates_of,
    predict_new_baseline,
    published_split_renal_function,
    split_renal_function,
)

FEATURES = {"affected_parenchyma_ml": 150.0, "contralateral_parenchyma_ml": 50.0}


def test_split_renal_function_from_the_volumes():
    srf = split_renal_function(FEATURES, {"remaining_affected_ml": 120.0})
    assert (srf.srf_affected, srf.srf_contralateral, srf.preserved) == (0.75, 0.25, 0.8)
    assert srf.lost == pytest.approx(0.75 * 0.2)
    radical = split_renal_function(FEATURES, {"remaining_affected_ml": 0.0})
    assert radical.preserved == 0.0 and radical.lost == 0.75


def test_the_published_formula_by_hand():
    srf = SplitRenalFunction(srf_affected=0.6, srf_contralateral=0.4, preserved=0.9)
    assert published_split_renal_function(80.0, srf, "radical_nephrectomy") == pytest.approx(1.24 * 80 * 0.4)
    assert published_split_renal_function(80.0, srf, "partial_nephrectomy") == pytest.approx(80 * (0.4 + 0.89 * 0.54))


@pytest.mark.parametrize(
    ("features", "resection", "message"),
    [
        (
            {"affected_parenchyma_ml": 0.0, "contralateral_parenchyma_ml": 0.0},
            {"remaining_affected_ml": 0},
            "no kidney",
        ),
        (
            {"affected_parenchyma_ml": None, "contralateral_parenchyma_ml": 50.0},
            {"remaining_affected_ml": 0},
            "affected",
        ),
    ],
)
def test_masks_without_parenchyma_are_refused(features, resection, message):
    with pytest.raises(InputError, match=message):
        split_renal_function(features, resection)


def test_no_prediction_without_a_measured_pre_operative_egfr():
    model = load_outcome_package().card.new_baseline_egfr
    srf = SplitRenalFunction(0.5, 0.5, 0.9)
    covariates = {"age_years": 60, "bmi_kg_m2": 28, "chronic_kidney_disease": 0, "diabetes": 0}
    with pytest.raises(InputError, match="pre-operative eGFR"):
        predict_new_baseline(model, float("nan"), srf, covariates, "partial_nephrectomy")


def test_radical_never_predicts_a_higher_new_baseline_than_partial_for_any_kits_patient(kits):
    card = load_outcome_package().card
    model = card.new_baseline_egfr
    compared = 0
    for case in kits.cases:
        if case.clinical is None or case.features is None or case.resections is None:
            continue
        clinical, _ = impute_clinical(case.clinical, dict(card.imputation))
        pre = case.clinical.preop_egfr_ml_min_1_73m2 or clinical.preop_egfr_ml_min_1_73m2
        values = {}
        for procedure in ("partial_nephrectomy", "radical_nephrectomy"):
            srf = split_renal_function(case.features, case.resections[procedure])
            values[procedure] = predict_new_baseline(model, pre, srf, covariates_of(clinical), procedure)
        partial, radical = values["partial_nephrectomy"], values["radical_nephrectomy"]
        assert radical.egfr_ml_min_1_73m2 <= partial.egfr_ml_min_1_73m2 + 1e-9, case.case_id
        assert radical.interval_90[1] <= partial.interval_90[1] + 1e-9
        assert radical.split.preserved == 0.0
        compared += 1
    assert compared >= 370
