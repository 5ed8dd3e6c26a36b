"""Fit and cross-validate the new-baseline eGFR model (twin_imaging.outcome.new_baseline_egfr) on KiTS23.

Patients: a partial or radical nephrectomy (nephroureterectomy counts as radical), a measured last pre-operative and
first post-operative eGFR, and masks with features. Every choice is made inside the folds (nested cross-validation):
the clinical imputation, the model's terms (among ``CANDIDATES``, by inner 5-fold MAE) and its 90 % interval (from
the inner out-of-fold residuals). Compared on the same outer folds with three baselines: no change (the new baseline
equals the pre-operative eGFR), a linear regression on clinical fields and the procedure, and the published
split-renal-function formula on the same masks (no fitting).

    python -m training.outcome.new_baseline_egfr --data ../shared/data/kits23      # prints the table
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import lsq_linear
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import KFold, RepeatedKFold

from training.paths import REPO_ROOT
from twin_imaging.outcome.card import NewBaselineEgfrModel, RegressionMetrics
from twin_imaging.outcome.imputation import fit_imputation, impute_clinical
from twin_imaging.outcome.kits import KitsCase, load_kits_dataset
from twin_imaging.outcome.new_baseline_egfr import (
    SCENARIO_TERMS,
    covariates_of,
    design_matrix,
    design_row,
    published_split_renal_function,
    split_renal_function,
)

log = logging.getLogger(__name__)

CANDIDATES: dict[str, tuple[str, ...]] = {  # simplest first; ties go to the simpler
    "physiology": SCENARIO_TERMS,
    "physiology + intercept": (*SCENARIO_TERMS, "intercept"),
    "physiology + intercept, age": (*SCENARIO_TERMS, "intercept", "age_per_decade_from_60"),
    "physiology + intercept, age, CKD, diabetes": (
        *SCENARIO_TERMS,
        "intercept",
        "age_per_decade_from_60",
        "chronic_kidney_disease",
        "diabetes",
    ),
    "physiology + intercept, age, CKD, diabetes, BMI": (
        *SCENARIO_TERMS,
        "intercept",
        "age_per_decade_from_60",
        "chronic_kidney_disease",
        "diabetes",
        "bmi_per_5_from_28",
    ),
}
CLINICAL_LINEAR_FIELDS = ("pre_egfr", "age", "male", "bmi", "ckd", "diabetes", "radical", "radiographic_size_cm")
OUTER_FOLDS, OUTER_REPEATS, INNER_FOLDS = 5, 5, 5
N_BOOTSTRAP = 1000
SEED = 2026
DEFINITION = (
    "KiTS first_postop_egfr (mL/min/1.73 m², median about 4 months after surgery: the new baseline) after a partial "
    "or radical nephrectomy, predicted from the last pre-operative eGFR, the split renal function by parenchymal "
    "volume of the masks and the virtual resection; KiTS caps eGFR at 90."
)


@dataclass(frozen=True)
class EgfrCohort:
    cases: tuple[KitsCase, ...]
    observed: np.ndarray  # first post-operative eGFR
    pre_egfr: np.ndarray
    radical: np.ndarray  # bool


def egfr_cohort(cases: Sequence[KitsCase]) -> EgfrCohort:
    """The patients the model learns from and is scored on (see the module docstring)."""
    kept = [
        c
        for c in cases
        if c.clinical is not None
        and c.scenario is not None
        and c.features is not None
        and c.actual_resection is not None
        and c.first_postop_egfr is not None
        and c.clinical.preop_egfr_ml_min_1_73m2 is not None
    ]
    return EgfrCohort(
        cases=tuple(kept),
        observed=np.array([c.first_postop_egfr for c in kept], dtype=np.float64),
        pre_egfr=np.array([c.clinical.preop_egfr_ml_min_1_73m2 for c in kept], dtype=np.float64),
        radical=np.array([c.scenario.procedure == "radical_nephrectomy" for c in kept]),
    )


def design_rows(cases: Sequence[KitsCase], imputation: dict) -> list[dict[str, float]]:
    """Each case under the operation it had, clinical covariates imputed from ``imputation``."""
    rows = []
    for case in cases:
        clinical, _ = impute_clinical(case.clinical, imputation)
        srf = split_renal_function(case.features, case.actual_resection)
        rows.append(design_row(case.clinical.preop_egfr_ml_min_1_73m2, srf, covariates_of(clinical)))
    return rows


def published_predictions(cases: Sequence[KitsCase]) -> np.ndarray:
    return np.array(
        [
            published_split_renal_function(
                c.clinical.preop_egfr_ml_min_1_73m2,
                split_renal_function(c.features, c.actual_resection),
                c.scenario.procedure,
            )
            for c in cases
        ]
    )


def fit_terms(x: np.ndarray, y: np.ndarray, terms: Sequence[str]) -> np.ndarray:
    """Least squares with the scenario terms' weights >= 0 (the monotonicity of the module docstring)."""
    lower = np.array([0.0 if t in SCENARIO_TERMS else -np.inf for t in terms])
    return lsq_linear(x, y, bounds=(lower, np.full(len(terms), np.inf))).x


def select_terms(
    rows: list[dict[str, float]], y: np.ndarray, *, seed: int
) -> tuple[str, tuple[str, ...], np.ndarray, np.ndarray]:
    """(candidate name, terms, coefficients fitted on all ``rows``, out-of-fold residuals of that candidate)."""
    folds = list(KFold(INNER_FOLDS, shuffle=True, random_state=seed).split(rows))
    best = None
    for name, terms in CANDIDATES.items():
        x = design_matrix(rows, terms)
        residuals = np.empty(len(y))
        for train, test in folds:
            w = fit_terms(x[train], y[train], terms)
            residuals[test] = y[test] - np.maximum(x[test] @ w, 0.0)
        mae = float(np.mean(np.abs(residuals)))
        if best is None or mae < best[0] - 1e-9:
            best = (mae, name, terms, residuals)
    _, name, terms, residuals = best
    return name, terms, fit_terms(design_matrix(rows, terms), y, terms), residuals


def clinical_linear_matrix(cases: Sequence[KitsCase], imputation: dict) -> np.ndarray:
    rows = []
    for case in cases:
        c, _ = impute_clinical(case.clinical, imputation)
        rows.append(
            [
                case.clinical.preop_egfr_ml_min_1_73m2,
                c.age_years,
                float(c.sex == "male"),
                c.bmi_kg_m2,
                float(bool(c.has_chronic_kidney_disease)),
                float(bool(c.has_diabetes)),
                float(case.scenario.procedure == "radical_nephrectomy"),
                c.radiographic_size_cm,
            ]
        )
    return np.array(rows, dtype=np.float64)


def cross_validate_new_baseline(cohort: EgfrCohort) -> tuple[list[RegressionMetrics], dict]:
    """Nested CV of the learned model and the three baselines on the same outer folds."""
    cases, y = cohort.cases, cohort.observed
    n = len(cases)
    outer = RepeatedKFold(n_splits=OUTER_FOLDS, n_repeats=OUTER_REPEATS, random_state=SEED)
    methods = ("learned_split_renal_function", "published_split_renal_function", "no_change", "clinical_linear")
    predictions = {m: np.full((OUTER_REPEATS, n), np.nan) for m in methods}
    inside = np.zeros((OUTER_REPEATS, n), dtype=bool)
    chosen: dict[str, int] = {}
    published = published_predictions(cases)
    for split, (train, test) in enumerate(outer.split(np.arange(n))):
        repeat = split // OUTER_FOLDS
        train_cases = [cases[i] for i in train]
        test_cases = [cases[i] for i in test]
        imputation = fit_imputation([c.clinical for c in train_cases])
        rows_train, rows_test = design_rows(train_cases, imputation), design_rows(test_cases, imputation)
        name, terms, w, residuals = select_terms(rows_train, y[train], seed=SEED + split)
        chosen[name] = chosen.get(name, 0) + 1
        predicted = np.maximum(design_matrix(rows_test, terms) @ w, 0.0)
        low, high = np.quantile(residuals, [0.05, 0.95])
        predictions["learned_split_renal_function"][repeat, test] = predicted
        inside[repeat, test] = (y[test] >= predicted + low) & (y[test] <= predicted + high)
        predictions["published_split_renal_function"][repeat, test] = published[test]
        predictions["no_change"][repeat, test] = cohort.pre_egfr[test]
        linear = LinearRegression().fit(clinical_linear_matrix(train_cases, imputation), y[train])
        predictions["clinical_linear"][repeat, test] = linear.predict(clinical_linear_matrix(test_cases, imputation))
    outer_cv = f"{OUTER_REPEATS} x repeated 5-fold"
    validation = {
        "learned_split_renal_function": f"nested: {outer_cv} outer; terms and interval chosen by inner 5-fold CV",
        "published_split_renal_function": "no fitting: the published constants on the same patients",
        "no_change": "no fitting",
        "clinical_linear": f"{outer_cv}: fitted on each outer training part (nothing to choose)",
    }
    metrics = []
    rng = np.random.default_rng(SEED)
    for method in methods:
        errors = np.abs(predictions[method] - y[None, :])  # (repeats, n)
        per_patient = errors.mean(axis=0)
        boot = [per_patient[rng.integers(0, n, n)].mean() for _ in range(N_BOOTSTRAP)]
        metrics.append(
            RegressionMetrics(
                method=method,
                mae=round(float(errors.mean()), 3),
                mae_ci95=(round(float(np.quantile(boot, 0.025)), 3), round(float(np.quantile(boot, 0.975)), 3)),
                within_10=round(float((errors <= 10.0).mean()), 3),
                n=n,
                cv=validation[method],
                interval_coverage=round(float(inside.mean()), 3) if method == "learned_split_renal_function" else None,
            )
        )
    by_procedure = {
        procedure: {m: round(float(np.abs(predictions[m] - y[None, :])[:, mask].mean()), 3) for m in methods}
        | {"n": int(mask.sum())}
        for procedure, mask in (("partial", ~cohort.radical), ("radical", cohort.radical))
    }
    return metrics, {"terms_chosen_per_outer_fold": chosen, "mae_by_procedure": by_procedure}


def fit_new_baseline(cases: Sequence[KitsCase], imputation: dict) -> tuple[NewBaselineEgfrModel, dict]:
    """The shipped model: terms chosen and fitted on every usable patient, with its nested-CV evaluation."""
    cohort = egfr_cohort(cases)
    if len(cohort.cases) < 50:
        raise RuntimeError(f"only {len(cohort.cases)} patients with both eGFR values: too few to fit")
    metrics, details = cross_validate_new_baseline(cohort)
    rows = design_rows(cohort.cases, imputation)
    name, terms, w, residuals = select_terms(rows, cohort.observed, seed=SEED)
    low, high = np.quantile(residuals, [0.05, 0.95])
    model = NewBaselineEgfrModel(
        definition=DEFINITION,
        terms=terms,
        coefficients=tuple(round(float(v), 6) for v in w),
        residual_interval_90=(round(float(low), 2), round(float(high), 2)),
        evaluation=tuple(metrics),
        selection=f"{name} (lowest 5-fold MAE among {len(CANDIDATES)} nested term sets on all {len(rows)} patients)",
        notes=(
            f"MAE by procedure (nested CV): {details['mae_by_procedure']}",
            f"terms chosen in the outer folds: {details['terms_chosen_per_outer_fold']}",
        ),
    )
    return model, details


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "runs" / "kits_features")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dataset = load_kits_dataset(args.data, workers=args.workers, cache_dir=args.cache)
    usable = [c for c in dataset.cases if c.clinical is not None and c.scenario is not None and c.features is not None]
    model, _ = fit_new_baseline(usable, fit_imputation([c.clinical for c in usable]))
    print("| method | MAE (95 % CI) | within 10 | n |")
    print("|---|---|---|---|")
    for m in model.evaluation:
        print(f"| {m.method} | {m.mae:.2f} ({m.mae_ci95[0]:.2f}-{m.mae_ci95[1]:.2f}) | {m.within_10:.2f} | {m.n} |")
    print(f"selected: {model.selection}; coefficients {dict(zip(model.terms, model.coefficients, strict=True))}")
    print(f"90 % interval: prediction {model.residual_interval_90[0]:+.1f} to {model.residual_interval_90[1]:+.1f}")
    for note in model.notes:
        print(note)
    return 0


if __name__ == "__main__":
    sys.exit(main())
