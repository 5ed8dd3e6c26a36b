"""Pre-operative clinical inputs and the surgical scenario of the outcome models, validated, imputed and vectorised.

Only what is known before the operation is an input: age, sex, BMI, the KiTS Charlson comorbidity items, smoking,
alcohol, the last pre-operative eGFR and the radiographic tumour size. KiTS records no hypertension, so there is none.
``aua_risk_score`` is NOT an input although the data README lists it as pre-operative: in KiTS23 it is the AUA
post-nephrectomy risk group, derived from pathology ("benign" for 33 of the 33 benign tumours with a risk group,
"very_high_risk" for pN1/pM1/pT4, "high_risk" for pT3), so it would leak the outcome of the pathology report.

Required: ``age_years`` and ``sex``. Every other input may be missing: ``imputation.impute_clinical`` fills it
from training values and lists what it filled. A pre-operative eGFR is not required,
because 158 of KiTS23's 400 cases lack one; the ``egfr_decline`` target itself needs it (see ``targets``), and a
prediction of that target from an imputed eGFR must say so.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from twin_imaging.errors import InputError

CHARLSON_ITEMS = (
    "myocardial_infarction",
    "congestive_heart_failure",
    "peripheral_vascular_disease",
    "cerebrovascular_disease",
    "dementia",
    "copd",
    "connective_tissue_disease",
    "peptic_ulcer_disease",
    "uncomplicated_diabetes_mellitus",
    "diabetes_mellitus_with_end_organ_damage",
    "chronic_kidney_disease",
    "hemiplegia_from_stroke",
    "leukemia",
    "malignant_lymphoma",
    "localized_solid_tumor",
    "metastatic_solid_tumor",
    "mild_liver_disease",
    "moderate_to_severe_liver_disease",
    "aids",
)
CARDIOVASCULAR_ITEMS = (
    "myocardial_infarction",
    "congestive_heart_failure",
    "peripheral_vascular_disease",
    "cerebrovascular_disease",
)
DIABETES_ITEMS = ("uncomplicated_diabetes_mellitus", "diabetes_mellitus_with_end_organ_damage")

# The only keys of a kits23.json record that ``ClinicalInput.from_kits`` reads.
PREOPERATIVE_FIELDS = (
    "gender",
    "age_at_nephrectomy",
    "bmi",
    "comorbidities",
    "smoking_history",
    "pack_years",
    "alcohol_use",
    "radiographic_size",
    "last_preop_egfr",
)
# The only keys ``scenario_from_kits`` reads: the operation done, which is the scenario a case was observed under.
TREATMENT_FIELDS = ("surgical_procedure", "surgery_type", "surgical_approach")
# KiTS keys never accepted as inputs (outcomes, intra-operative events, pathology, and the pathology-derived AUA group).
NON_INPUT_KITS_FIELDS = frozenset(
    {
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
    }
)
_KITS_NAMES = {
    "gender": "sex",
    "age_at_nephrectomy": "age_years",
    "bmi": "bmi_kg_m2",
    "radiographic_size": "radiographic_size_cm",
    "last_preop_egfr": "preop_egfr_ml_min_1_73m2",
}
KITS_PROCEDURES = {  # KiTS surgical_procedure → modelled procedure; None: not a modelled scenario
    "partial_nephrectomy": "partial_nephrectomy",
    "radical_nephrectomy": "radical_nephrectomy",
    "nephroureterectomy": "radical_nephrectomy",  # the whole kidney is removed, as in a radical nephrectomy
    "cryoablation": None,  # an ablation, not a resection: excluded from scenario-based training
}
DEFAULT_MARGIN_MM = 5.0
_NOT_FOUND = "not_found_in_emr"

Sex = Literal["male", "female"]
SmokingHistory = Literal["never_smoked", "previous_smoker", "current_smoker"]
AlcoholUse = Literal[
    "never_or_not_in_the_last_3_months", "quit_in_last_3_months", "two_or_less_daily", "more_than_two_daily"
]
Procedure = Literal["partial_nephrectomy", "radical_nephrectomy"]
Approach = Literal["open", "laparoscopic", "robotic"]
PeritonealAccess = Literal["transperitoneal", "retroperitoneal"]


class ClinicalInputError(InputError):
    """Clinical input refused; ``problems`` holds one "field: problem" line per missing or invalid field."""

    def __init__(self, problems: list[str], *, what: str = "clinical input") -> None:
        self.problems = list(problems)
        count = f"{len(problems)} problem" + ("s" if len(problems) != 1 else "")
        super().__init__(f"{what} refused ({count}):\n" + "\n".join(f"  {line}" for line in problems))


class ClinicalInput(BaseModel):
    """What is known about the patient before the operation. Valid once constructed; None means not known."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    age_years: float = Field(ge=18, le=100, description="age at the operation, years")
    sex: Sex
    bmi_kg_m2: float | None = Field(default=None, ge=12, le=80, description="body-mass index, kg/m²")
    preop_egfr_ml_min_1_73m2: float | None = Field(
        default=None, ge=5, le=150, description="last pre-operative eGFR, mL/min/1.73 m² (KiTS caps values at 90)"
    )
    preop_egfr_days_before_surgery: int | None = Field(default=None, ge=0, description="days from that eGFR to surgery")
    radiographic_size_cm: float | None = Field(default=None, ge=0.1, le=30, description="tumour size on imaging, cm")
    smoking_history: SmokingHistory | None = None
    pack_years: float | None = Field(default=None, ge=0, le=300, description="packs per day × years smoked")
    alcohol_use: AlcoholUse | None = None
    comorbidities: dict[str, bool | None] = Field(
        default_factory=dict, description="KiTS Charlson item → present; an item absent or null is not known"
    )

    @model_validator(mode="before")
    @classmethod
    def _never_smoked_has_no_pack_years(cls, data: Any) -> Any:
        if (
            isinstance(data, Mapping)
            and data.get("smoking_history") == "never_smoked"
            and data.get("pack_years") is None
        ):
            return {**data, "pack_years": 0.0}
        return data

    @field_validator("comorbidities")
    @classmethod
    def _known_items(cls, value: dict[str, bool | None]) -> dict[str, bool | None]:
        unknown = sorted(set(value) - set(CHARLSON_ITEMS))
        if unknown:
            names = ", ".join(map(repr, unknown))
            raise ValueError(f"unknown item(s) {names}; the KiTS Charlson items are in clinical.CHARLSON_ITEMS")
        return {item: value[item] for item in CHARLSON_ITEMS if item in value}

    @property
    def charlson_count(self) -> int:
        """How many Charlson items are present (unweighted); a lower bound while some items are not known."""
        return sum(bool(self.comorbidities.get(item)) for item in CHARLSON_ITEMS)

    @property
    def has_chronic_kidney_disease(self) -> bool | None:
        return self.comorbidities.get("chronic_kidney_disease")

    @property
    def has_diabetes(self) -> bool | None:
        return _any_of(self.comorbidities, DIABETES_ITEMS)

    def missing_fields(self) -> list[str]:
        """The inputs not known, as field names (``comorbidities.<item>`` for a Charlson item)."""
        missing = [name for name in _IMPUTABLE if getattr(self, name) is None]
        return missing + [f"comorbidities.{item}" for item in CHARLSON_ITEMS if self.comorbidities.get(item) is None]

    @classmethod
    def from_kits(cls, record: Mapping[str, Any]) -> ClinicalInput:
        """The pre-operative inputs of one kits23.json record, reading only the keys in ``PREOPERATIVE_FIELDS``."""
        pre = {key: record.get(key) for key in PREOPERATIVE_FIELDS}
        egfr = pre["last_preop_egfr"] or {}
        has_egfr = egfr.get("value") is not None
        data = {
            "age_years": pre["age_at_nephrectomy"],
            "sex": pre["gender"],
            "bmi_kg_m2": pre["bmi"],
            "preop_egfr_ml_min_1_73m2": egfr.get("value"),
            "preop_egfr_days_before_surgery": egfr.get("days_before_nephrectomy") if has_egfr else None,
            "radiographic_size_cm": pre["radiographic_size"],
            "smoking_history": None if pre["smoking_history"] == _NOT_FOUND else pre["smoking_history"],
            "pack_years": pre["pack_years"],
            "alcohol_use": None if pre["alcohol_use"] == _NOT_FOUND else pre["alcohol_use"],
            "comorbidities": dict(pre["comorbidities"] or {}),
        }
        return parse_clinical(data, what="KiTS record's clinical input")


_IMPUTABLE = (
    "bmi_kg_m2",
    "preop_egfr_ml_min_1_73m2",
    "radiographic_size_cm",
    "smoking_history",
    "pack_years",
    "alcohol_use",
)


class SurgicalScenario(BaseModel):
    """The planned operation. ``margin_mm`` (partial only; default 5 mm) drives the virtual resection only."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    procedure: Procedure
    approach: Approach = Field(description="KiTS surgery_type")
    peritoneal_access: PeritonealAccess | None = Field(default=None, description="KiTS surgical_approach")
    margin_mm: float | None = Field(default=None, ge=0, le=20, description="resection margin, mm (partial only)")

    @model_validator(mode="before")
    @classmethod
    def _margin_for_partial_only(cls, data: Any) -> Any:
        if not isinstance(data, Mapping):
            return data
        if data.get("procedure") == "partial_nephrectomy" and data.get("margin_mm") is None:
            return {**data, "margin_mm": DEFAULT_MARGIN_MM}
        if data.get("procedure") == "radical_nephrectomy" and data.get("margin_mm") is not None:
            raise ValueError("margin_mm applies to a partial nephrectomy only")
        return data


def scenario_from_kits(record: Mapping[str, Any]) -> SurgicalScenario:
    """The operation a KiTS case had, reading only ``TREATMENT_FIELDS``; InputError where it is not modelled."""
    kits_procedure = record.get("surgical_procedure")
    if kits_procedure not in KITS_PROCEDURES:
        raise InputError(f"surgical_procedure {kits_procedure!r} is not a KiTS procedure")
    procedure = KITS_PROCEDURES[kits_procedure]
    if procedure is None:
        raise InputError(f"{kits_procedure} is not a modelled scenario: excluded from scenario-based training")
    access = record.get("surgical_approach")  # trans_to_retro (2 cases, a conversion) is left as not stated
    data = {
        "procedure": procedure,
        "approach": record.get("surgery_type"),
        "peritoneal_access": access if access in ("transperitoneal", "retroperitoneal") else None,
    }
    return _validate(SurgicalScenario, data, what="KiTS record's scenario")


def parse_clinical(data: Mapping[str, Any], *, what: str = "clinical input") -> ClinicalInput:
    """A ClinicalInput from a mapping of its fields (null = not known), or one error listing every problem."""
    return _validate(ClinicalInput, {key: value for key, value in data.items() if value is not None}, what=what)


def load_clinical_json(path_or_dict: str | os.PathLike | Mapping[str, Any]) -> ClinicalInput:
    """A ClinicalInput from a JSON file (or an already parsed object) whose keys are ClinicalInput's fields."""
    if isinstance(path_or_dict, Mapping):
        return parse_clinical(path_or_dict)
    path = Path(path_or_dict)
    if not path.is_file():
        raise InputError(f"clinical JSON not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path.name} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"{path.name} must hold a JSON object of clinical fields, got {type(data).__name__}")
    return parse_clinical(data, what=f"clinical input {path.name}")


CLINICAL_VECTOR_NAMES = (
    "age_years",
    "sex_female",  # 1 female, 0 male
    "bmi_kg_m2",
    "preop_egfr_ml_min_1_73m2",
    "radiographic_size_cm",
    "smoking_previous",  # one-hot of smoking_history; never_smoked is the reference (all 0)
    "smoking_current",
    "pack_years",
    "alcohol_two_or_less_daily",  # one-hot of alcohol_use; none, or quit in the last 3 months, is the reference
    "alcohol_more_than_two_daily",
    "charlson_count",
    "comorbidity_chronic_kidney_disease",
    "comorbidity_diabetes",  # either kind
    "comorbidity_cardiovascular",  # myocardial infarction, heart failure, peripheral or cerebrovascular disease
    "comorbidity_copd",
    "comorbidity_metastatic_solid_tumor",
    "procedure_radical",  # 1 radical, 0 partial nephrectomy
    "approach_open",  # one-hot of the approach; robotic is the reference
    "approach_laparoscopic",
    "access_retroperitoneal",  # 1 retroperitoneal, 0 transperitoneal or not stated
)


def clinical_vector(clinical: ClinicalInput, scenario: SurgicalScenario) -> tuple[np.ndarray, list[str]]:
    """The model's clinical inputs as a float64 vector in ``CLINICAL_VECTOR_NAMES`` order, and those names.

    Every input must be known: impute first (``impute_clinical``). ``margin_mm`` is not in it (KiTS does not record
    a margin, so a model cannot learn from it); it acts through the virtual resection's features.
    """
    missing = clinical.missing_fields()
    if missing:
        raise ClinicalInputError([f"{name}: missing; impute it first (impute_clinical)" for name in missing])
    values = clinical_values(clinical, scenario)
    return np.array([values[name] for name in CLINICAL_VECTOR_NAMES], dtype=np.float64), list(CLINICAL_VECTOR_NAMES)


def clinical_values(clinical: ClinicalInput | None, scenario: SurgicalScenario | None) -> dict[str, float]:
    """``CLINICAL_VECTOR_NAMES`` → value, NaN where an input (or the whole input, or the scenario) is not known."""
    nan = float("nan")
    values = dict.fromkeys(CLINICAL_VECTOR_NAMES, nan)
    if clinical is not None:
        c = clinical
        smoking, alcohol, items = c.smoking_history, c.alcohol_use, c.comorbidities
        all_known = all(items.get(item) is not None for item in CHARLSON_ITEMS)
        values.update(
            age_years=c.age_years,
            sex_female=float(c.sex == "female"),
            bmi_kg_m2=_number(c.bmi_kg_m2),
            preop_egfr_ml_min_1_73m2=_number(c.preop_egfr_ml_min_1_73m2),
            radiographic_size_cm=_number(c.radiographic_size_cm),
            smoking_previous=nan if smoking is None else float(smoking == "previous_smoker"),
            smoking_current=nan if smoking is None else float(smoking == "current_smoker"),
            pack_years=_number(c.pack_years),
            alcohol_two_or_less_daily=nan if alcohol is None else float(alcohol == "two_or_less_daily"),
            alcohol_more_than_two_daily=nan if alcohol is None else float(alcohol == "more_than_two_daily"),
            charlson_count=float(c.charlson_count) if all_known else nan,
            comorbidity_chronic_kidney_disease=_number(items.get("chronic_kidney_disease")),
            comorbidity_diabetes=_number(_any_of(items, DIABETES_ITEMS)),
            comorbidity_cardiovascular=_number(_any_of(items, CARDIOVASCULAR_ITEMS)),
            comorbidity_copd=_number(items.get("copd")),
            comorbidity_metastatic_solid_tumor=_number(items.get("metastatic_solid_tumor")),
        )
    if scenario is not None:
        values.update(
            procedure_radical=float(scenario.procedure == "radical_nephrectomy"),
            approach_open=float(scenario.approach == "open"),
            approach_laparoscopic=float(scenario.approach == "laparoscopic"),
            access_retroperitoneal=float(scenario.peritoneal_access == "retroperitoneal"),
        )
    return values


def _any_of(items: Mapping[str, bool | None], names: Iterable[str]) -> bool | None:
    """True if any is present; False if all are known absent; None otherwise."""
    states = [items.get(name) for name in names]
    if any(states):
        return True
    return None if any(state is None for state in states) else False


def _number(value: float | bool | None) -> float:
    return float("nan") if value is None else float(value)


def _validate(model: type[BaseModel], data: Mapping[str, Any], *, what: str) -> Any:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise ClinicalInputError([_problem(error) for error in exc.errors()], what=what) from None


def _problem(error: Mapping[str, Any]) -> str:
    """One pydantic error as "field: problem"."""
    field = ".".join(str(part) for part in error["loc"]) or "input"
    kind, value, context = error["type"], error.get("input"), error.get("ctx") or {}
    if kind == "missing":
        text = "required, missing"
    elif kind == "extra_forbidden" and field in NON_INPUT_KITS_FIELDS:
        text = "known only during or after the operation (outcome or pathology): never an input"
    elif kind == "extra_forbidden" and field in _KITS_NAMES:
        text = f"unknown field; the input is named {_KITS_NAMES[field]} (ClinicalInput.from_kits reads KiTS records)"
    elif kind == "extra_forbidden":
        text = "unknown field"
    elif kind in ("greater_than_equal", "greater_than"):
        text = f"{value!r} is below the minimum {_bound(context.get('ge', context.get('gt')))}"
    elif kind in ("less_than_equal", "less_than"):
        text = f"{value!r} is above the maximum {_bound(context.get('le', context.get('lt')))}"
    elif kind == "literal_error":
        text = f"{value!r} is not one of {context.get('expected')}"
    else:
        text = str(error["msg"]).removeprefix("Value error, ")
    return f"{field}: {text}"


def _bound(value: Any) -> str:
    return f"{value:g}" if isinstance(value, int | float) else str(value)
