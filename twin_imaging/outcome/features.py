"""The outcome model's input row: clinical variables and planned operation, mask features, virtual resection.

One function builds the row for training (a KiTS case under the operation it had) and for prediction (a patient
under each scenario asked for), so the two cannot drift. Names are the ONNX input order (``MODEL_FEATURES``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from twin_imaging.errors import InputError
from twin_imaging.outcome.clinical import CLINICAL_VECTOR_NAMES, ClinicalInput, SurgicalScenario, clinical_values

MASK_FEATURES = (
    "tumor_volume_ml",
    "cyst_volume_ml",
    "affected_parenchyma_ml",
    "contralateral_parenchyma_ml",
    "total_parenchyma_ml",
    "tumor_max_diameter_mm",
    "tumor_to_kidney_ratio",
    "exophytic_fraction",
    "tumor_to_kidney_centroid_mm",
    "tumor_to_hilum_mm",
    "tumor_to_sinus_mm",
    "renal_score",
)
RESECTION_FEATURES = ("remaining_total_ml", "remaining_fraction")  # under the scenario's virtual resection

MODEL_FEATURES: tuple[str, ...] = (
    *(f"clinical.{name}" for name in CLINICAL_VECTOR_NAMES),
    *(f"mask.{name}" for name in MASK_FEATURES),
    *(f"resection.{name}" for name in RESECTION_FEATURES),
)
# A plain clinical logistic regression: the handful of variables a clinician would put in one.
PLAIN_CLINICAL = (
    "age_years",
    "sex_female",
    "bmi_kg_m2",
    "preop_egfr_ml_min_1_73m2",
    "charlson_count",
    "procedure_radical",
)
FAMILY_FEATURES: dict[str, tuple[str, ...]] = {  # simplest first: the order the shipping rule reads them in
    "base_rate": (),  # no input: every patient gets the cohort's rate (what ships where nothing discriminates)
    "clinical_plain": tuple(f"clinical.{name}" for name in PLAIN_CLINICAL),
    "clinical_only": tuple(f"clinical.{name}" for name in CLINICAL_VECTOR_NAMES),
    "clinical_mask": MODEL_FEATURES,
}
# The features that change between scenarios, and the sign their weight must have for the risk of losing kidney
# function to never be lower after a radical than after a partial nephrectomy of the same patient.
SCENARIO_SIGNS: dict[str, int] = {
    "clinical.procedure_radical": +1,
    "resection.remaining_total_ml": -1,
    "resection.remaining_fraction": -1,
}


def feature_row(
    clinical: ClinicalInput,
    scenario: SurgicalScenario,
    mask_features: Mapping[str, Any],
    resection: Mapping[str, Any],
) -> dict[str, float]:
    """``MODEL_FEATURES`` → value for one patient under one scenario (clinical inputs already imputed)."""
    values = {f"clinical.{k}": v for k, v in clinical_values(clinical, scenario).items()}
    values.update({f"mask.{k}": _number(mask_features.get(k)) for k in MASK_FEATURES})
    values.update({f"resection.{k}": _number(resection.get(k)) for k in RESECTION_FEATURES})
    missing = [name for name in MODEL_FEATURES if not np.isfinite(values[name])]
    if missing:
        raise InputError(f"the outcome model needs these inputs, which are missing: {', '.join(missing)}")
    return {name: float(values[name]) for name in MODEL_FEATURES}


def feature_matrix(cases: Sequence[Any], *, imputation: Mapping[str, Any]) -> np.ndarray:
    """Rows of ``KitsCase``s (twin_imaging.outcome.kits) under the operation each had, clinical inputs imputed."""
    from twin_imaging.outcome.imputation import impute_clinical

    rows = []
    for case in cases:
        clinical, _ = impute_clinical(case.clinical, imputation)
        row = feature_row(clinical, case.scenario, case.features, case.actual_resection or {})
        rows.append([row[name] for name in MODEL_FEATURES])
    return np.array(rows, dtype=np.float64)


def _number(value: Any) -> float:
    if value is None or isinstance(value, str):
        return float("nan")
    return float(value)
