"""New-baseline eGFR after a partial or radical nephrectomy (mL/min/1.73 m²), from the split renal function.

From the masks (the same ``kidney_features`` and ``virtual_resection`` the classifiers use):
- ``srf_affected`` = affected kidney's parenchyma / both kidneys' parenchyma (tumour and cyst are not parenchyma);
  ``srf_contralateral`` = 1 - ``srf_affected``: the split renal function, by volume;
- ``preserved`` = the affected kidney's parenchyma left by the virtual resection / its parenchyma before (0 after a
  radical nephrectomy); ``lost`` = ``srf_affected`` x (1 - ``preserved``): the share of all parenchyma removed.

Two predictors, with E the last pre-operative eGFR:

- ``published_split_renal_function``: the Cleveland Clinic split-renal-function approach. Radical: 1.24 x E x
  ``srf_contralateral`` (the remaining kidney's share, with the 24 % functional compensation reported for it; Rathi
  et al.). Partial: E x (``srf_contralateral`` + 0.89 x ``srf_affected`` x ``preserved``) (the operated kidney
  recovers about 89 % of the function of the parenchyma saved; Campbell's group). The constants are the published
  ones as the project's search found them described (the papers' own text was not reachable from here); they are
  applied unchanged, as the baseline the learned model must beat.
- the learned model (``predict_new_baseline``): the same physiology with its constants fitted on KiTS's first
  post-operative eGFR (median about 4 months after surgery, so effectively the new baseline):

      eGFR_new = a·E·c + k·E·(c·lost + i·p) + d·E·i·p + covariate terms
      (c = srf_contralateral, i = srf_affected, p = preserved; a, k, d >= 0)

  ``a``: the contralateral kidney's share kept; ``k``: compensation of the remaining kidney in proportion to what
  was lost; ``k + d``: the function kept per unit of preserved parenchyma. Partial minus radical for the same
  patient is E·i·p·(k·(1 - c) + d) >= 0, so a radical nephrectomy never predicts a higher new baseline than a
  partial one. Covariate terms (chosen by nested cross-validation in training, listed in the card) do not depend
  on the scenario.

The pre-operative eGFR must be measured: it is never imputed here (the prediction is a fraction of it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from twin_imaging.errors import InputError
from twin_imaging.outcome.card import NewBaselineEgfrModel
from twin_imaging.outcome.clinical import ClinicalInput

PUBLISHED_RADICAL_COMPENSATION = 1.24  # radical: remaining kidney's function x 1.24 (Rathi et al.)
PUBLISHED_PARTIAL_RECOVERY = 0.89  # partial: 89 % of the function of the parenchyma saved (Campbell's group)

# Scenario terms first (their weights are bounded below by 0), then the covariates a model may add.
SCENARIO_TERMS = ("contralateral", "compensation", "preserved")
COVARIATE_TERMS = ("intercept", "age_per_decade_from_60", "chronic_kidney_disease", "diabetes", "bmi_per_5_from_28")
ALL_TERMS = SCENARIO_TERMS + COVARIATE_TERMS


@dataclass(frozen=True)
class SplitRenalFunction:
    srf_affected: float
    srf_contralateral: float
    preserved: float  # of the affected kidney's parenchyma, after the scenario's virtual resection

    @property
    def lost(self) -> float:
        return self.srf_affected * (1.0 - self.preserved)

    def to_json(self) -> dict[str, float]:
        return {
            "srf_affected": round(self.srf_affected, 4),
            "srf_contralateral": round(self.srf_contralateral, 4),
            "preserved_fraction_of_affected": round(self.preserved, 4),
        }


def split_renal_function(mask_features: Mapping[str, Any], resection: Mapping[str, Any]) -> SplitRenalFunction:
    """The split renal function and the share preserved, from ``kidney_features`` and ``virtual_resection`` values."""
    affected = _finite(mask_features.get("affected_parenchyma_ml"), "affected_parenchyma_ml")
    contralateral = _finite(mask_features.get("contralateral_parenchyma_ml"), "contralateral_parenchyma_ml")
    remaining = _finite(resection.get("remaining_affected_ml"), "remaining_affected_ml")
    total = affected + contralateral
    if total <= 0 or affected < 0 or contralateral < 0:
        raise InputError("the masks hold no kidney parenchyma: the split renal function is not defined")
    preserved = 0.0 if affected <= 0 else min(max(remaining / affected, 0.0), 1.0)
    return SplitRenalFunction(affected / total, contralateral / total, preserved)


def published_split_renal_function(pre_egfr: float, srf: SplitRenalFunction, procedure: str) -> float:
    """The published formula's new-baseline eGFR (see the module docstring)."""
    if procedure == "radical_nephrectomy":
        return PUBLISHED_RADICAL_COMPENSATION * pre_egfr * srf.srf_contralateral
    if procedure == "partial_nephrectomy":
        return pre_egfr * (srf.srf_contralateral + PUBLISHED_PARTIAL_RECOVERY * srf.srf_affected * srf.preserved)
    raise InputError(f"unknown procedure {procedure!r}")


@dataclass(frozen=True)
class NewBaselinePrediction:
    scenario: str
    egfr_ml_min_1_73m2: float
    interval_90: tuple[float, float]
    published_formula_ml_min_1_73m2: float  # the published split-renal-function formula, for comparison
    split: SplitRenalFunction

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "egfr_ml_min_1_73m2": round(self.egfr_ml_min_1_73m2, 1),
            "interval_90": [round(v, 1) for v in self.interval_90],
            "published_formula_ml_min_1_73m2": round(self.published_formula_ml_min_1_73m2, 1),
            **self.split.to_json(),
        }


def predict_new_baseline(
    model: NewBaselineEgfrModel,
    pre_egfr: float,
    srf: SplitRenalFunction,
    covariates: Mapping[str, float],
    scenario: str,
) -> NewBaselinePrediction:
    """The learned model's new-baseline eGFR for one scenario, with the 90 % interval of its cross-validated
    residuals (floored at 0)."""
    if not (pre_egfr is not None and np.isfinite(pre_egfr) and pre_egfr > 0):
        raise InputError("the new-baseline eGFR needs a measured pre-operative eGFR")
    row = design_row(pre_egfr, srf, covariates)
    value = float(apply_linear([row], model.terms, model.coefficients)[0])
    low, high = model.residual_interval_90
    return NewBaselinePrediction(
        scenario=scenario,
        egfr_ml_min_1_73m2=value,
        interval_90=(max(value + low, 0.0), max(value + high, 0.0)),
        published_formula_ml_min_1_73m2=published_split_renal_function(pre_egfr, srf, scenario),
        split=srf,
    )


def covariates_of(clinical: ClinicalInput) -> dict[str, float]:
    """The covariates of ``design_row`` from an imputed clinical input (an unknown comorbidity counts as absent)."""
    if clinical.bmi_kg_m2 is None:
        raise InputError("the new-baseline eGFR needs the BMI (impute it first)")
    return {
        "age_years": clinical.age_years,
        "bmi_kg_m2": clinical.bmi_kg_m2,
        "chronic_kidney_disease": float(bool(clinical.has_chronic_kidney_disease)),
        "diabetes": float(bool(clinical.has_diabetes)),
    }


def design_row(pre_egfr: float, srf: SplitRenalFunction, covariates: Mapping[str, float]) -> dict[str, float]:
    """Every term of ``ALL_TERMS`` for one patient under one scenario. ``covariates``: age_years, bmi_kg_m2 and
    chronic_kidney_disease / diabetes as 0 or 1 (imputed where missing)."""
    c, i, p = srf.srf_contralateral, srf.srf_affected, srf.preserved
    return {
        "contralateral": pre_egfr * c,
        "compensation": pre_egfr * (c * srf.lost + i * p),
        "preserved": pre_egfr * i * p,
        "intercept": 1.0,
        "age_per_decade_from_60": (float(covariates["age_years"]) - 60.0) / 10.0,
        "chronic_kidney_disease": float(covariates["chronic_kidney_disease"]),
        "diabetes": float(covariates["diabetes"]),
        "bmi_per_5_from_28": (float(covariates["bmi_kg_m2"]) - 28.0) / 5.0,
    }


def design_matrix(rows: Sequence[Mapping[str, float]], terms: Sequence[str]) -> np.ndarray:
    return np.array([[row[t] for t in terms] for row in rows], dtype=np.float64).reshape(len(rows), len(terms))


def apply_linear(
    rows: Sequence[Mapping[str, float]], terms: Sequence[str], coefficients: Sequence[float]
) -> np.ndarray:
    """The learned model's predictions, floored at 0 (a fraction of function cannot be negative)."""
    if len(terms) != len(coefficients):
        raise ValueError("one coefficient per term")
    unknown = set(terms) - set(ALL_TERMS)
    if unknown:
        raise ValueError(f"unknown term(s) {sorted(unknown)}")
    return np.maximum(design_matrix(rows, terms) @ np.asarray(coefficients, dtype=np.float64), 0.0)


def _finite(value: Any, name: str) -> float:
    if value is None or isinstance(value, str) or not np.isfinite(float(value)):
        raise InputError(f"the new-baseline eGFR needs {name} from the masks, which is missing")
    return float(value)
