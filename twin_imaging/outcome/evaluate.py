"""Score the shipped outcome model (no retraining) on a dataset in the KiTS layout: per target AUROC, Brier score,
cases and events, each case under the operation it actually had."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from twin_imaging.errors import InputError
from twin_imaging.outcome.features import MODEL_FEATURES, feature_row
from twin_imaging.outcome.imputation import impute_clinical
from twin_imaging.outcome.kits import load_kits_dataset
from twin_imaging.outcome.model import OutcomeModel


@dataclass(frozen=True)
class TargetScore:
    auroc: float | None  # None where only one class is present
    brier: float
    n: int
    events: int

    def to_json(self) -> dict:
        return {"auroc": self.auroc, "brier": self.brier, "n": self.n, "events": self.events}


def auroc(y: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve by the rank-sum (Mann-Whitney U) identity, ties counted half."""
    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = rankdata(scores)
    return float((ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives))


@dataclass(frozen=True)
class NewBaselineScore:
    mae: float  # mL/min/1.73 m²
    n: int
    within_10: float

    def to_json(self) -> dict:
        return {"mae": round(self.mae, 3), "n": self.n, "within_10": round(self.within_10, 4)}


def score_new_baseline(model: OutcomeModel, cases, imputation: dict) -> NewBaselineScore | None:
    """The shipped eGFR model on every case with both eGFR values and a partial or radical nephrectomy, each under
    the operation it had; None where the package has no eGFR model or no case qualifies."""
    from twin_imaging.outcome.new_baseline_egfr import covariates_of, predict_new_baseline, split_renal_function

    egfr_model = model.card.new_baseline_egfr
    if egfr_model is None:
        return None
    errors = []
    for case in cases:
        pre = case.clinical.preop_egfr_ml_min_1_73m2
        if pre is None or case.first_postop_egfr is None or case.actual_resection is None:
            continue
        clinical, _ = impute_clinical(case.clinical, imputation)
        srf = split_renal_function(case.features, case.actual_resection)
        predicted = predict_new_baseline(egfr_model, pre, srf, covariates_of(clinical), case.scenario.procedure)
        errors.append(abs(predicted.egfr_ml_min_1_73m2 - case.first_postop_egfr))
    if not errors:
        return None
    errors = np.array(errors)
    return NewBaselineScore(mae=float(errors.mean()), n=len(errors), within_10=float((errors <= 10.0).mean()))


def evaluate_outcomes(
    data_dir: str | os.PathLike,
    model: OutcomeModel | None = None,
    *,
    workers: int = 2,
    cache_dir: str | os.PathLike | None = None,
) -> tuple[dict[str, TargetScore], Counter, NewBaselineScore | None]:
    """Scores per target, why cases were left out (counted by reason), and the new-baseline eGFR's score."""
    model = model or OutcomeModel()
    dataset = load_kits_dataset(data_dir, workers=workers, cache_dir=cache_dir)
    imputation = dict(model.card.imputation)
    rows, used, excluded = [], [], Counter()
    for case in dataset.cases:
        if case.clinical is None or case.scenario is None or case.features is None:
            stage = "clinical" if case.clinical is None else "scenario" if case.scenario is None else "mask"
            excluded[f"{stage} refused"] += 1
            continue
        try:
            clinical, _ = impute_clinical(case.clinical, imputation)
            row = feature_row(clinical, case.scenario, case.features, case.actual_resection or {})
        except InputError:
            excluded["inputs missing"] += 1
            continue
        rows.append([row[name] for name in MODEL_FEATURES])
        used.append(case)
    if not rows:
        raise InputError(f"no usable case in {data_dir}: {dict(excluded)}")
    probabilities, _ = model.run(np.array(rows, dtype=np.float32))
    scores = {}
    for t, target in enumerate(model.card.targets):
        y = np.array([np.nan if c.targets.get(target.name) is None else c.targets[target.name] for c in used])
        known = ~np.isnan(y)
        p = probabilities[known, t, 0].astype(np.float64)
        y_known = y[known].astype(int)
        scores[target.name] = TargetScore(
            auroc=None if not known.any() else auroc(y_known, p),
            brier=float(np.mean((p - y_known) ** 2)) if known.any() else float("nan"),
            n=int(known.sum()),
            events=int(y_known.sum()),
        )
    return scores, excluded, score_new_baseline(model, used, imputation)
