"""The outcome models' pre-operative clinical inputs, read from a patient's twin, with where each came from.

    inputs = clinical_inputs_from_twin(summary, scan_date=date(2024, 1, 15), tumour_diameter_mm=41.0)
    inputs.clinical       # a dict for ``load_clinical_json``
    inputs.sources        # field → "eGFR 68 mL/min/{1.73_m2} (LOINC 62238-1) on 2024-01-02"
    inputs.missing        # fields the twin does not hold (the models impute them and say so)

Pre-operative means before the first kidney operation recorded after the scan (or, with none recorded, anything up to
now): the latest such observation of each kind is used. The twin holds no date of birth, only the birth year, so the
age is the scan's year minus it (at most a year off). Without a measured eGFR, a serum creatinine of the same period
gives one by the CKD-EPI 2021 equation (race-free), and the source says so. Comorbidities are observations with a
SNOMED CT code (``COMORBIDITY_CODES``) and value 1 (present) or 0 (absent); smoking and alcohol are not coded as
numeric observations here and stay missing (imputed by the models, listed).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from twin_imaging.twin.views import ObservationView, ProcedureView, TwinSummary

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
EGFR_CKD_EPI_2021 = "98979-8"  # eGFR (CKD-EPI 2021, race-free): what a lab reports today
EGFR_CODES = ("62238-1", EGFR_CKD_EPI_2021, "98980-6", "33914-3", "48642-3", "48643-1", "50044-7", "88293-6", "88294-4")
CREATININE_MG_DL, CREATININE_UMOL_L = "2160-0", "14682-9"
UMOL_PER_MG_CREATININE = 88.42  # µmol/L per mg/dL
BMI_CODE = "39156-5"
WEIGHT_CODE, HEIGHT_CODE = "29463-7", "8302-2"  # kg, cm
COMORBIDITY_CODES: dict[str, str] = {  # SNOMED CT finding → KiTS Charlson item
    "22298006": "myocardial_infarction",
    "42343007": "congestive_heart_failure",
    "400047006": "peripheral_vascular_disease",
    "62914000": "cerebrovascular_disease",
    "52448006": "dementia",
    "13645005": "copd",
    "105969002": "connective_tissue_disease",
    "13200003": "peptic_ulcer_disease",
    "73211009": "uncomplicated_diabetes_mellitus",
    "74627003": "diabetes_mellitus_with_end_organ_damage",  # diabetic complication
    "709044004": "chronic_kidney_disease",
    "50582007": "hemiplegia_from_stroke",
    "93143009": "leukemia",
    "118600007": "malignant_lymphoma",
    "128462008": "metastatic_solid_tumor",
    "235856003": "mild_liver_disease",  # disorder of liver
    "19943007": "moderate_to_severe_liver_disease",  # cirrhosis of liver
    "62479008": "aids",
}
KIDNEY_OPERATION_CODES = {  # SNOMED CT procedures that end the pre-operative period
    "81516001": "partial nephrectomy",
    "175905003": "radical nephrectomy",
    "108022006": "nephrectomy",
    "70536003": "nephroureterectomy",
    "236112002": "cryoablation of kidney",
}


@dataclass(frozen=True)
class TwinClinicalInputs:
    clinical: dict[str, Any]  # for ``twin_imaging.outcome.clinical.load_clinical_json``
    sources: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()
    preoperative_until: date | None = None  # the first kidney operation after the scan, if recorded

    def to_json(self) -> dict[str, Any]:
        return {
            "sources": dict(self.sources),
            "missing": list(self.missing),
            "preoperative_until": None if self.preoperative_until is None else self.preoperative_until.isoformat(),
        }


class NotPreoperativeError(ValueError):
    """The scan was taken after a kidney operation: surgical scenarios are for planning one."""


def is_scenario_input(code: str) -> bool:
    """Whether an observation code feeds the surgical scenarios (eGFR, creatinine, BMI, weight, height, a
    comorbidity): only these rerun them when they arrive."""
    return code in (*EGFR_CODES, CREATININE_MG_DL, CREATININE_UMOL_L, BMI_CODE, WEIGHT_CODE, HEIGHT_CODE) or (
        code in COMORBIDITY_CODES
    )


def clinical_inputs_from_twin(
    summary: TwinSummary,
    *,
    scan_date: date,
    tumour_diameter_mm: float | None = None,
    labs_until: date | None = None,
) -> TwinClinicalInputs:
    """The clinical input for the scenarios of a scan on ``scan_date`` (see the module docstring); ``labs_until``:
    observations after that day are not used (a planning window: labs long after a scan belong to another one)."""
    operations = sorted(
        (p for p in summary.procedures if p.code in KIDNEY_OPERATION_CODES), key=lambda p: p.performed_on
    )
    before = [p for p in operations if p.performed_on <= scan_date]
    if before:
        raise NotPreoperativeError(
            f"the scan of {scan_date.isoformat()} follows a {_operation(before[-1])} on "
            f"{before[-1].performed_on.isoformat()}: surgical scenarios are computed for pre-operative scans only"
        )
    until = operations[0].performed_on if operations else None
    limit = datetime.combine(until, time(0), tzinfo=UTC) if until else None
    if labs_until is not None:
        window_end = datetime.combine(labs_until + timedelta(days=1), time(0), tzinfo=UTC)
        limit = window_end if limit is None else min(limit, window_end)
    usable = [o for o in summary.observations if limit is None or _utc(o.effective_at) < limit]
    clinical: dict[str, Any] = {}
    sources: dict[str, str] = {}
    patient = summary.patient
    if patient.birth_year is not None:
        clinical["age_years"] = float(scan_date.year - patient.birth_year)
        sources["age_years"] = f"birth year {patient.birth_year} and the scan's year (±1 year)"
    sex = {"M": "male", "F": "female"}.get((patient.sex or "").upper())
    if sex is not None:
        clinical["sex"] = sex
        sources["sex"] = f"patient sex {patient.sex}"
    egfr = _latest(usable, LOINC, EGFR_CODES)
    if egfr is not None:
        clinical["preop_egfr_ml_min_1_73m2"] = egfr.value
        sources["preop_egfr_ml_min_1_73m2"] = _said(egfr)
        clinical["preop_egfr_days_before_surgery"] = _days_before(egfr, until)
    else:
        creatinine = _latest(usable, LOINC, (CREATININE_MG_DL, CREATININE_UMOL_L))
        if creatinine is not None and "age_years" in clinical and sex is not None:
            mg_dl = (
                creatinine.value if creatinine.code == CREATININE_MG_DL else creatinine.value / UMOL_PER_MG_CREATININE
            )
            clinical["preop_egfr_ml_min_1_73m2"] = round(ckd_epi_2021(mg_dl, clinical["age_years"], sex), 1)
            sources["preop_egfr_ml_min_1_73m2"] = f"CKD-EPI 2021 from creatinine: {_said(creatinine)}"
            clinical["preop_egfr_days_before_surgery"] = _days_before(creatinine, until)
    bmi = _latest(usable, LOINC, (BMI_CODE,))
    if bmi is not None:
        clinical["bmi_kg_m2"] = bmi.value
        sources["bmi_kg_m2"] = _said(bmi)
    else:
        weight, height = _latest(usable, LOINC, (WEIGHT_CODE,)), _latest(usable, LOINC, (HEIGHT_CODE,))
        if weight is not None and height is not None and height.value > 0:
            clinical["bmi_kg_m2"] = round(weight.value / (height.value / 100.0) ** 2, 1)
            sources["bmi_kg_m2"] = f"weight {_said(weight)} and height {_said(height)}"
    if tumour_diameter_mm is not None and tumour_diameter_mm > 0:
        clinical["radiographic_size_cm"] = round(tumour_diameter_mm / 10.0, 1)
        sources["radiographic_size_cm"] = "the index tumour's greatest diameter on the masks"
    comorbidities = {}
    for code, item in COMORBIDITY_CODES.items():
        found = _latest(usable, SNOMED, (code,))
        if found is not None:
            comorbidities[item] = bool(found.value)
            sources[f"comorbidities.{item}"] = _said(found)
    if comorbidities:
        clinical["comorbidities"] = comorbidities
    wanted = ("age_years", "sex", "bmi_kg_m2", "preop_egfr_ml_min_1_73m2", "radiographic_size_cm")
    missing = [name for name in wanted if name not in clinical]
    missing += ["smoking_history", "pack_years", "alcohol_use"]
    missing += [f"comorbidities.{item}" for item in COMORBIDITY_CODES.values() if item not in comorbidities]
    return TwinClinicalInputs(clinical, sources, tuple(missing), until)


def ckd_epi_2021(creatinine_mg_dl: float, age_years: float, sex: str) -> float:
    """eGFR (mL/min/1.73 m²) by the race-free CKD-EPI 2021 creatinine equation (Inker et al., NEJM 2021)."""
    female = sex == "female"
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = creatinine_mg_dl / kappa
    value = 142.0 * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** -1.200 * 0.9938**age_years
    return value * (1.012 if female else 1.0)


def _latest(observations: list[ObservationView], system: str, codes: tuple[str, ...]) -> ObservationView | None:
    found = [o for o in observations if o.code_system == system and o.code in codes]
    return max(found, key=lambda o: _utc(o.effective_at)) if found else None


def _said(o: ObservationView) -> str:
    return f"{o.display} {o.value:g} {o.unit} ({o.code}) on {_utc(o.effective_at).date().isoformat()}"


def _days_before(o: ObservationView, until: date | None) -> int | None:
    return None if until is None else max((until - _utc(o.effective_at).date()).days, 0)


def _operation(p: ProcedureView) -> str:
    return KIDNEY_OPERATION_CODES.get(p.code, p.display)


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
