"""L2-regularised logistic regression with optional sign constraints on chosen coefficients.

Written by hand because scikit-learn's LogisticRegression cannot bound a coefficient's sign, and the egfr_decline
model must be monotone in the surgical scenario (less remaining parenchyma never lowers the risk). It is a small,
exact optimisation (L-BFGS-B with box bounds on the weights); everything else (folds, metrics) is scikit-learn.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit


@dataclass
class LinearModel:
    """Standardisation + weights: p = sigmoid(((x - mean) / scale) @ weights + bias)."""

    feature_names: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float

    def logit(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.weights + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return expit(self.logit(x))

    def contributions(self, x: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the logit, relative to the training mean (rows × features)."""
        return ((x - self.mean) / self.scale) * self.weights


def fit_logistic(
    x: np.ndarray,
    y: np.ndarray,
    feature_names: list[str],
    *,
    l2: float = 1.0,
    signs: Mapping[str, int] | None = None,
    sample_weight: np.ndarray | None = None,
    active: set[str] | None = None,
    mean: np.ndarray | None = None,
    scale: np.ndarray | None = None,
) -> LinearModel:
    """Fit on (x, y); ``signs`` maps feature names to +1 (weight ≥ 0) or -1 (weight ≤ 0); features outside
    ``active`` keep weight 0 (a model family that ignores them); ``mean``/``scale`` fix the standardisation
    (default: from ``x``), so models of one ensemble can share it."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if mean is None or scale is None:
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-12] = 1.0
    z = (x - mean) / scale
    w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    n = w.sum()

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        coef, bias = theta[:-1], theta[-1]
        logits = z @ coef + bias
        # log(1 + e^t) - y t, computed stably
        value = (w * (np.logaddexp(0.0, logits) - y * logits)).sum() / n + 0.5 * l2 * (coef @ coef) / n
        residual = w * (expit(logits) - y) / n
        gradient = np.concatenate([z.T @ residual + l2 * coef / n, [residual.sum()]])
        return value, gradient

    bounds = [(None, None)] * (z.shape[1] + 1)
    for name, sign in (signs or {}).items():
        if name in feature_names:
            index = feature_names.index(name)
            bounds[index] = (0.0, None) if sign > 0 else (None, 0.0)
    if active is not None:
        for index, name in enumerate(feature_names):
            if name not in active:
                bounds[index] = (0.0, 0.0)
    start = np.zeros(z.shape[1] + 1)
    prior = np.clip(np.average(y, weights=w), 1e-6, 1 - 1e-6)
    start[-1] = np.log(prior / (1 - prior))
    result = minimize(loss, start, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 2000})
    return LinearModel(list(feature_names), mean, scale, result.x[:-1].copy(), float(result.x[-1]))


@dataclass(frozen=True)
class PlattScaling:
    """Calibration on the logit: p = sigmoid(slope * logit + intercept), fitted on out-of-fold predictions."""

    slope: float
    intercept: float

    def apply_to(self, model: LinearModel) -> LinearModel:
        return LinearModel(
            model.feature_names,
            model.mean,
            model.scale,
            model.weights * self.slope,
            model.bias * self.slope + self.intercept,
        )


def fit_platt(oof_logits: np.ndarray, y: np.ndarray) -> PlattScaling:
    model = fit_logistic(oof_logits[:, None], y, ["logit"], l2=1e-6)
    slope = float(model.weights[0] / model.scale[0])
    intercept = float(model.bias - model.weights[0] * model.mean[0] / model.scale[0])
    return PlattScaling(slope, intercept)
