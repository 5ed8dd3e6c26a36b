"""Repeated stratified cross-validation, AUROC with a bootstrap 95 % CI, Brier score and calibration curves."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold

from training.outcome.linear import LinearModel, PlattScaling, fit_platt

FitFunction = Callable[[np.ndarray, np.ndarray], LinearModel]


@dataclass(frozen=True)
class CrossValidation:
    family: str
    target: str
    n: int
    events: int
    n_splits: int
    n_repeats: int
    oof_logits: np.ndarray  # (n_repeats, n): each repeat's out-of-fold logits
    auroc_per_repeat: tuple[float, ...]
    auroc_mean: float
    auroc_ci95: tuple[float, float]
    brier: float  # of the calibrated out-of-fold probabilities (repeat mean)
    calibration: PlattScaling

    def summary(self) -> dict:
        return {
            "family": self.family,
            "n": self.n,
            "events": self.events,
            "auroc": round(self.auroc_mean, 4),
            "auroc_ci95": [round(v, 4) for v in self.auroc_ci95],
            "auroc_per_repeat": [round(v, 4) for v in self.auroc_per_repeat],
            "brier": round(self.brier, 4),
            "cv": f"{self.n_repeats} x repeated stratified {self.n_splits}-fold",
        }


def cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    fit: FitFunction,
    *,
    family: str,
    target: str,
    n_splits: int = 5,
    n_repeats: int = 5,
    seed: int = 0,
    n_bootstrap: int = 2000,
) -> CrossValidation:
    folds = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    oof = np.zeros((n_repeats, len(y)))
    for index, (train, test) in enumerate(folds.split(x, y)):
        model = fit(x[train], y[train])
        oof[index // n_splits, test] = model.logit(x[test])
    aurocs, mean_logits, calibration, brier = score_oof(oof, y)
    return CrossValidation(
        family=family,
        target=target,
        n=len(y),
        events=int(y.sum()),
        n_splits=n_splits,
        n_repeats=n_repeats,
        oof_logits=oof,
        auroc_per_repeat=aurocs,
        auroc_mean=float(np.mean(aurocs)),
        auroc_ci95=bootstrap_auroc_ci(y, mean_logits, n_bootstrap=n_bootstrap, seed=seed),
        brier=brier,
        calibration=calibration,
    )


def score_oof(oof: np.ndarray, y: np.ndarray) -> tuple[tuple[float, ...], np.ndarray, PlattScaling, float]:
    """Out-of-fold logits (repeats, n) → AUROC per repeat, the repeat-mean logits, the Platt calibration fitted on
    them, and the Brier score of the calibrated probabilities (repeat mean)."""
    aurocs = tuple(float(roc_auc_score(y, logits)) for logits in oof)
    mean_logits = oof.mean(axis=0)
    calibration = fit_platt(mean_logits, y)
    calibrated = 1.0 / (1.0 + np.exp(-(calibration.slope * oof + calibration.intercept)))
    return aurocs, mean_logits, calibration, float(np.mean([brier_score_loss(y, p) for p in calibrated]))


def bootstrap_auroc_ci(
    y: np.ndarray, scores: np.ndarray, *, n_bootstrap: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95 % CI of the AUROC over patients resampled with replacement."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_bootstrap):
        sample = rng.integers(0, len(y), len(y))
        if y[sample].min() == y[sample].max():
            continue
        values.append(roc_auc_score(y[sample], scores[sample]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def save_calibration_plot(results: list[CrossValidation], y: np.ndarray, path: Path, *, title: str) -> Path:
    """Reliability diagram of each family's calibrated out-of-fold probabilities (deciles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    figure, axis = plt.subplots(figsize=(5, 5), dpi=110)
    axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for result in results:
        logits = result.oof_logits.mean(axis=0)
        probability = 1.0 / (1.0 + np.exp(-(result.calibration.slope * logits + result.calibration.intercept)))
        observed, predicted = calibration_curve(y, probability, n_bins=10, strategy="quantile")
        axis.plot(predicted, observed, marker="o", label=f"{result.family} (AUROC {result.auroc_mean:.2f})")
    axis.set_xlabel("predicted probability (calibrated, out of fold)")
    axis.set_ylabel("observed frequency")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=8, loc="upper left")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
