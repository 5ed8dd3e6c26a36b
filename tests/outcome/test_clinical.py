import json
import math

import numpy as np
import pytest

from tests.conftest import shared_file
from twin_imaging.errors import InputError
from twin_imaging.outcome.clinical import (
    CHARLSON_ITEMS,
    CLINICAL_VECTOR_NAMES,
    NON_INPUT_KITS_FIELDS,
    PREOPERATIVE_FIELDS,
    TREATMENT_FIELDS,
    ClinicalInput,
    ClinicalInputError,
    SurgicalScenario,
    clinical_values,
    clinical_vector,
    load_clinical_json,
    parse_clinical,
    scenario_from_kits,
)
from twin_imaging.outcome.imputation import fit_imputation, impute_clinical

# The data README's kits23 section, copied here on purpose: outcomes, intra-operative events and pathology. None of
# them may ever be read as an input. aua_risk_score is listed by the README as pre-operative, but in KiTS23 it is the
# AUA post-nephrectomy risk group, derived from pathology (test_aua_risk_score_is_derived_from_pathology).
README_OUTCOMES = (
    "hospitalization",
    "clavien_surgical_complications",
    "er_visit",
    "readmission",
    "intraoperative_complications",
    "estimated_blood_loss",
    "operative_time",
    "ischemia_time",
    "first_postop_egfr",
    "last_postop_egfr",
    "vital_status",
    "vital_days_after_surgery",
)
README_PATHOLOGY = (
    "pathologic_size",
    "malignant",
    "tumor_isup_grade",
    "pathology_t_stage",
    "pathology_n_stage",
    "pathology_m_stage",
    "tumor_histologic_subtype",
    "tumor_necrosis",
    "positive_resection_margins",
    "sarcomatoid_features",
    "rhabdoid_features",
    "aua_risk_score",
)
README_TREATMENT = ("surgery_type", "surgical_approach", "surgical_procedure")
# In kits23.json but in none of the README's lists: identifiers, and history not used as an input.
UNUSED_KITS_FIELDS = ("case_id", "age_when_quit_smoking", "chewing_tobacco_use", "cytoreductive")

RECORD = {  # a hand-made kits23.json record (all fields, as in KiTS)
    "case_id": "case_99999",
    "gender": "female",
    "age_at_nephrectomy": 61,
    "bmi": 31.2,
    "comorbidities": dict.fromkeys(CHARLSON_ITEMS, False) | {"chronic_kidney_disease": True, "copd": True},
    "smoking_history": "previous_smoker",
    "pack_years": 20.0,
    "alcohol_use": "not_found_in_emr",
    "radiographic_size": 3.5,
    "aua_risk_score": "high_risk",
    "last_preop_egfr": {"days_before_nephrectomy": 10, "value": 55.0},
    "surgical_procedure": "partial_nephrectomy",
    "surgery_type": "robotic",
    "surgical_approach": "retroperitoneal",
    "hospitalization": 3,
    "clavien_surgical_complications": "2",
    "first_postop_egfr": {"days_after_nephrectomy": 2, "value": 40.0},
    "pathologic_size": 3.1,
    "malignant": True,
}
FULL = {
    "age_years": 60,
    "sex": "male",
    "bmi_kg_m2": 27.0,
    "preop_egfr_ml_min_1_73m2": 80.0,
    "radiographic_size_cm": 4.0,
    "smoking_history": "current_smoker",
    "pack_years": 30.0,
    "alcohol_use": "more_than_two_daily",
    "comorbidities": dict.fromkeys(CHARLSON_ITEMS, False) | {"uncomplicated_diabetes_mellitus": True},
}


@pytest.fixture(scope="module")
def kits_records(shared_data):
    return json.loads(shared_file(shared_data, "kits23/kits23.json").read_text())


class RecordingDict(dict):
    """A record that remembers which keys were read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)


# --- the allowlist --------------------------------------------------------------------------------------------------


def test_allowlist_holds_no_outcome_pathology_or_treatment_field():
    assert not set(PREOPERATIVE_FIELDS) & set(README_OUTCOMES + README_PATHOLOGY + README_TREATMENT)
    assert set(README_OUTCOMES + README_PATHOLOGY) <= NON_INPUT_KITS_FIELDS
    assert set(TREATMENT_FIELDS) == set(README_TREATMENT)
    assert "aua_risk_score" not in PREOPERATIVE_FIELDS


def test_from_kits_reads_only_the_allowlist():
    record = RecordingDict(RECORD)
    ClinicalInput.from_kits(record)
    assert record.read <= set(PREOPERATIVE_FIELDS)
    scenario_record = RecordingDict(RECORD)
    scenario_from_kits(scenario_record)
    assert scenario_record.read <= set(TREATMENT_FIELDS)


def test_outcome_and_pathology_fields_do_not_change_the_input():
    changed = {key: value for key, value in RECORD.items() if key in PREOPERATIVE_FIELDS}
    assert ClinicalInput.from_kits(changed) == ClinicalInput.from_kits(RECORD)


def test_every_real_kits_field_is_classified(kits_records):
    known = set(PREOPERATIVE_FIELDS) | set(TREATMENT_FIELDS) | NON_INPUT_KITS_FIELDS | set(UNUSED_KITS_FIELDS)
    present = {key for record in kits_records for key in record}
    assert present <= known, f"review new KiTS fields before using them: {sorted(present - known)}"


def test_aua_risk_score_is_derived_from_pathology(kits_records):
    """Why aua_risk_score is excluded: its "benign" group is the pathology's benign tumours, nearly one for one."""
    scored = [r for r in kits_records if r["aua_risk_score"] is not None and r["malignant"] is not None]
    benign_by_aua = {r["case_id"] for r in scored if r["aua_risk_score"] == "benign"}
    benign_by_pathology = {r["case_id"] for r in scored if not r["malignant"]}
    assert len(benign_by_pathology) >= 30
    assert len(benign_by_aua ^ benign_by_pathology) <= 2


# --- from_kits ------------------------------------------------------------------------------------------------------


def test_from_kits_hand_made_record():
    clinical = ClinicalInput.from_kits(RECORD)
    assert clinical.sex == "female" and clinical.age_years == 61
    assert clinical.preop_egfr_ml_min_1_73m2 == 55.0 and clinical.preop_egfr_days_before_surgery == 10
    assert clinical.alcohol_use is None  # not_found_in_emr is not known
    assert clinical.charlson_count == 2 and clinical.has_chronic_kidney_disease and clinical.has_diabetes is False
    assert clinical.missing_fields() == ["alcohol_use"]


def test_from_kits_real_record(kits_records):
    record = next(r for r in kits_records if r["case_id"] == "case_00000")
    clinical = ClinicalInput.from_kits(record)
    assert clinical.model_dump() == {
        "age_years": 49.0,
        "sex": "male",
        "bmi_kg_m2": 29.47,
        "preop_egfr_ml_min_1_73m2": 77.0,
        "preop_egfr_days_before_surgery": 54,
        "radiographic_size_cm": 2.4,
        "smoking_history": "never_smoked",
        "pack_years": 0.0,
        "alcohol_use": "two_or_less_daily",
        "comorbidities": dict.fromkeys(CHARLSON_ITEMS, False),
    }
    assert clinical.charlson_count == 0 and clinical.missing_fields() == []


def test_real_records_refused_are_the_children_the_zero_ages_and_one_unrecorded_sex(kits_records):
    refused = {}
    for record in kits_records:
        try:
            ClinicalInput.from_kits(record)
        except InputError as exc:
            refused[record["case_id"]] = str(exc)
    assert len(refused) == 8, refused
    assert sum("age_years" in message and "below the minimum 18" in message for message in refused.values()) == 7
    assert "sex: 'transgender_male_to_female' is not one of" in refused["case_00299"]


# --- bad input ------------------------------------------------------------------------------------------------------


def test_json_missing_age_and_with_bmi_500_names_both_in_one_error(tmp_path):
    path = tmp_path / "clinical.json"
    path.write_text(json.dumps({"sex": "female", "bmi_kg_m2": 500}))
    with pytest.raises(ClinicalInputError) as caught:
        load_clinical_json(path)
    message = str(caught.value)
    assert "2 problems" in message
    assert "age_years: required, missing" in message
    assert "bmi_kg_m2: 500 is above the maximum 80" in message
    assert caught.value.problems == ["age_years: required, missing", "bmi_kg_m2: 500 is above the maximum 80"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"sex": "male", "age_years": 17}, "age_years: 17 is below the minimum 18"),
        ({"sex": "other", "age_years": 50}, "sex: 'other' is not one of"),
        ({"sex": "male", "age_years": 50, "preop_egfr_ml_min_1_73m2": 2}, "preop_egfr_ml_min_1_73m2: 2 is below"),
        ({"sex": "male", "age_years": 50, "radiographic_size_cm": 45}, "radiographic_size_cm: 45 is above the maximum"),
        ({"sex": "male", "age_years": 50, "pack_years": -1}, "pack_years: -1 is below the minimum 0"),
        ({"sex": "male", "age_years": 50, "smoking_history": "sometimes"}, "smoking_history: 'sometimes' is not"),
        ({"sex": "male", "age_years": 50, "comorbidities": {"hypertension": True}}, "unknown item(s) 'hypertension'"),
        ({"sex": "male", "age_years": 50, "pathologic_size": 3.0}, "pathologic_size: known only during or after"),
        ({"sex": "male", "age_years": 50, "aua_risk_score": "low_risk"}, "aua_risk_score: known only during or after"),
        ({"sex": "male", "age_years": 50, "bmi": 25}, "bmi: unknown field; the input is named bmi_kg_m2"),
        ({"sex": "male", "age_years": float("nan")}, "age_years:"),
    ],
)
def test_out_of_range_or_unknown_fields_are_refused_by_name(data, expected):
    with pytest.raises(ClinicalInputError) as caught:
        load_clinical_json(data)
    assert expected in str(caught.value)


def test_null_means_not_known():
    clinical = load_clinical_json({"sex": "male", "age_years": 50, "bmi_kg_m2": None})
    assert clinical.bmi_kg_m2 is None
    with pytest.raises(ClinicalInputError, match="sex: required, missing"):
        load_clinical_json({"sex": None, "age_years": 50})


@pytest.mark.parametrize(
    ("content", "expected"),
    [(None, "not found"), ("{not json", "is not valid JSON"), ("[1, 2]", "must hold a JSON object")],
)
def test_unreadable_clinical_json(tmp_path, content, expected):
    path = tmp_path / "clinical.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InputError, match=expected):
        load_clinical_json(path)


def test_never_smoker_has_zero_pack_years():
    assert parse_clinical({"sex": "male", "age_years": 50, "smoking_history": "never_smoked"}).pack_years == 0.0


# --- the scenario ---------------------------------------------------------------------------------------------------


def test_scenario_margin_is_for_partial_only():
    assert SurgicalScenario(procedure="partial_nephrectomy", approach="open").margin_mm == 5.0
    assert SurgicalScenario(procedure="radical_nephrectomy", approach="open").margin_mm is None
    with pytest.raises(ValueError, match="partial nephrectomy only"):
        SurgicalScenario(procedure="radical_nephrectomy", approach="open", margin_mm=5)
    with pytest.raises(ValueError, match="less than or equal to 20"):
        SurgicalScenario(procedure="partial_nephrectomy", approach="open", margin_mm=25)


@pytest.mark.parametrize(
    ("procedure", "surgery_type", "approach", "expected"),
    [
        ("partial_nephrectomy", "robotic", "retroperitoneal", ("partial_nephrectomy", "robotic", "retroperitoneal")),
        ("radical_nephrectomy", "open", "transperitoneal", ("radical_nephrectomy", "open", "transperitoneal")),
        ("nephroureterectomy", "laparoscopic", "transperitoneal", ("radical_nephrectomy", "laparoscopic", "trans")),
        ("partial_nephrectomy", "robotic", "trans_to_retro", ("partial_nephrectomy", "robotic", None)),
    ],
)
def test_scenario_from_kits(procedure, surgery_type, approach, expected):
    record = {"surgical_procedure": procedure, "surgery_type": surgery_type, "surgical_approach": approach}
    scenario = scenario_from_kits(record)
    assert (scenario.procedure, scenario.approach) == expected[:2]
    if expected[2] is None:
        assert scenario.peritoneal_access is None
    else:
        assert scenario.peritoneal_access.startswith(expected[2])


def test_cryoablation_is_not_a_scenario():
    record = {"surgical_procedure": "cryoablation", "surgery_type": "percutaneous", "surgical_approach": None}
    with pytest.raises(InputError, match="cryoablation is not a modelled scenario"):
        scenario_from_kits(record)


# --- imputation and the vector --------------------------------------------------------------------------------------


def test_fit_imputation_medians_and_modes():
    inputs = [
        parse_clinical(FULL | {"bmi_kg_m2": bmi, "smoking_history": smoking, "pack_years": packs})
        for bmi, smoking, packs in [(20, "never_smoked", None), (30, "previous_smoker", 10), (40, "never_smoked", 0)]
    ]
    values = fit_imputation([*inputs, RECORD])
    assert values["bmi_kg_m2"] == 30.6  # median of 20, 30, 40 and the KiTS record's 31.2
    assert values["smoking_history"] == "never_smoked"
    assert values["pack_years"] == 15.0  # smokers only: 10 and RECORD's 20
    assert values["comorbidities.copd"] is False


def test_imputation_is_reported_and_the_vector_refuses_missing_inputs():
    clinical = parse_clinical({"sex": "female", "age_years": 70, "comorbidities": {"copd": True}})
    scenario = SurgicalScenario(procedure="radical_nephrectomy", approach="laparoscopic")
    with pytest.raises(ClinicalInputError, match="bmi_kg_m2: missing; impute it first") as caught:
        clinical_vector(clinical, scenario)
    assert len(caught.value.problems) == 6 + len(CHARLSON_ITEMS) - 1

    imputation = fit_imputation([parse_clinical(FULL)])
    imputed, report = impute_clinical(clinical, imputation)
    assert report.fields[:3] == ["bmi_kg_m2", "preop_egfr_ml_min_1_73m2", "radiographic_size_cm"]
    assert "comorbidities.copd" not in report.fields and "comorbidities.aids" in report.fields
    assert "bmi_kg_m2 = 27.0 (training median)" in report.summary()
    assert "smoking_history = current_smoker (training mode)" in report.summary()
    assert imputed.missing_fields() == []
    assert imputed.comorbidities["copd"] is True

    vector, names = clinical_vector(imputed, scenario)
    values = dict(zip(names, vector, strict=True))
    assert names == list(CLINICAL_VECTOR_NAMES) and vector.dtype == np.float64
    assert values["sex_female"] == 1 and values["procedure_radical"] == 1 and values["approach_laparoscopic"] == 1
    assert values["approach_open"] == 0 and values["access_retroperitoneal"] == 0
    assert values["smoking_current"] == 1 and values["smoking_previous"] == 0
    assert values["comorbidity_copd"] == 1 and values["comorbidity_diabetes"] == 1 and values["charlson_count"] == 2


def test_never_smoker_imputed_gets_zero_pack_years():
    imputation = fit_imputation([parse_clinical(FULL | {"smoking_history": "never_smoked", "pack_years": None})])
    imputed, report = impute_clinical(parse_clinical({"sex": "male", "age_years": 40}), imputation)
    assert imputed.smoking_history == "never_smoked" and imputed.pack_years == 0.0
    assert {"field": "pack_years", "value": 0.0, "source": "never-smoker"} in report.model_dump()["imputed"]


def test_imputation_without_a_value_is_refused():
    with pytest.raises(ClinicalInputError, match="bmi_kg_m2: missing, and the imputation values have none"):
        impute_clinical(parse_clinical({"sex": "male", "age_years": 40}), {})


def test_complete_input_imputes_nothing():
    imputed, report = impute_clinical(parse_clinical(FULL), {})
    assert imputed == parse_clinical(FULL) and report.summary() == "no inputs imputed"


def test_clinical_values_are_nan_where_unknown():
    values = clinical_values(parse_clinical({"sex": "male", "age_years": 40}), None)
    assert values["age_years"] == 40 and values["sex_female"] == 0
    assert math.isnan(values["bmi_kg_m2"]) and math.isnan(values["charlson_count"])
    assert math.isnan(values["procedure_radical"])
    partial = clinical_values(None, SurgicalScenario(procedure="partial_nephrectomy", approach="open"))
    assert partial["procedure_radical"] == 0 and partial["approach_open"] == 1 and math.isnan(partial["age_years"])


def test_fit_imputation_on_real_records(kits_records):
    values = fit_imputation(kits_records)
    assert 20 < values["bmi_kg_m2"] < 35 and 40 < values["preop_egfr_ml_min_1_73m2"] <= 90
    assert values["smoking_history"] in ("never_smoked", "previous_smoker")
    assert values["comorbidities.chronic_kidney_disease"] is False
