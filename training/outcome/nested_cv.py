"""Nested cross-validation of the outcome classifiers: every choice inside the folds, the simplest family shipped.

For each outer split (repeated stratified 5-fold), each family's L2 strength is chosen by inner stratified 5-fold
AUROC on the outer training part only, refitted there and scored on the outer test part: the family's nested AUROC.
The same inner scores also choose the family (the "best of all" procedure), scored the same way, so the number a
selection would have earned is reported too. The outer folds are shared by every family, so families compare paired.

Shipping rule (``simplest_not_worse``): families are ordered simplest first; the first whose paired bootstrap 95 % CI
of (its AUROC - the best family's AUROC) reaches 0 is shipped: a more complex family must be clearly better to ship.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold

from training.outcome.evaluation import bootstrap_auroc_ci, score_oof
from training.outcome.linear import LinearModel, PlattScaling

L2_GRID = (1.0, 10.0, 100.0, 1000.0)
INNER_SPLITS = 5
N_BOOTSTRAP = 2000

FamilyFit = Callable[[np.ndarray, np.ndarray, float], LinearModel]  # (x, y, l2) → model


@dataclass(frozen=True)
class NestedResult:
    family: str
    n: int
    events: int
    n_splits: int
    n_repeats: int
    oof_logits: np.ndarray  # (n_repeats, n)
    choices: dict[str, int]  # how often each L2 strength (or, for the selection, each family) won an inner CV
    auroc_per_repeat: tuple[float, ...]
    auroc_mean: float
    auroc_ci95: tuple[float, float]
    brier: float
    calibration: PlattScaling

    @property
    def cv(self) -> str:
        return (
            f"nested: {self.n_repeats} x repeated stratified {self.n_splits}-fold outer, "
            f"L2 chosen by inner stratified {INNER_SPLITS}-fold"
        )

    def summary(self) -> dict:
        return {
            "family": self.family,
            "n": self.n,
            "events": self.events,
            "auroc": round(self.auroc_mean, 4),
            "auroc_ci95": [round(v, 4) for v in self.auroc_ci95],
            "auroc_per_repeat": [round(v, 4) for v in self.auroc_per_repeat],
            "brier": round(self.brier, 4),
            "inner_choices": dict(sorted(self.choices.items())),
            "cv": self.cv,
        }


def best_l2(x: np.ndarray, y: np.ndarray, fit: FamilyFit, *, seed: int) -> tuple[float, dict[float, float]]:
    """The L2 strength with the best pooled out-of-fold AUROC of a stratified 5-fold CV on (x, y); ties: stronger."""
    folds = list(StratifiedKFold(INNER_SPLITS, shuffle=True, random_state=seed).split(x, y))
    scores = {}
    for l2 in L2_GRID:
        logits = np.zeros(len(y))
        for train, test in folds:
            logits[test] = fit(x[train], y[train], l2).logit(x[test])
        scores[l2] = float(roc_auc_score(y, logits))
    top = max(scores.values())
    return max(l2 for l2, s in scores.items() if s >= top - 1e-12), scores


def nested_cross_validate(
    x: np.ndarray,
    y: np.ndarray,
    fits: dict[str, FamilyFit],
    *,
    n_splits: int = 5,
    n_repeats: int = 5,
    seed: int = 0,
) -> tuple[dict[str, NestedResult], NestedResult]:
    """Per family its nested result, and the nested result of choosing the family as well (named "selected")."""
    outer = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=seed)
    names = list(fits)
    oof = {name: np.zeros((n_repeats, len(y))) for name in [*names, "selected"]}
    chosen: dict[str, Counter] = {name: Counter() for name in [*names, "selected"]}
    constant = dict.fromkeys(names, True)  # every fold's model gives every patient the same logit
    for index, (train, test) in enumerate(outer.split(x, y)):
        repeat = index // n_splits
        inner_best = []
        for name in names:
            l2, scores = best_l2(x[train], y[train], fits[name], seed=seed + index)
            chosen[name][l2] += 1
            model = fits[name](x[train], y[train], l2)
            oof[name][repeat, test] = model.logit(x[test])
            constant[name] &= bool(np.ptp(model.logit(x)) < 1e-9)
            inner_best.append((scores[l2], name))
        top = max(score for score, _ in inner_best)
        winner = next(name for score, name in inner_best if score >= top - 1e-12)  # simplest among the best
        chosen["selected"][winner] += 1
        oof["selected"][repeat, test] = oof[winner][repeat, test]
    for name in names:
        if constant[name]:
            # A family without inputs ranks nobody: its AUROC is 0.5 by definition. Left as they are, the folds'
            # slightly different training rates would rank patients by fold (an AUROC a little below 0.5).
            oof[name][:] = oof[name].mean()
    results = {name: _result(name, oof[name], y, chosen[name], n_splits, seed) for name in [*names, "selected"]}
    selected = results.pop("selected")
    return results, selected


def simplest_not_worse(results: Sequence[NestedResult], y: np.ndarray, *, seed: int = 0) -> tuple[NestedResult, str]:
    """The first family (simplest first) not found worse than the best (see the module docstring), and why."""
    best = max(results, key=lambda r: r.auroc_mean)
    for result in results:
        if result is best:
            return result, f"{result.family} has the highest nested AUROC ({result.auroc_mean:.3f})"
        low, high = paired_auroc_difference_ci(y, result.oof_logits.mean(0), best.oof_logits.mean(0), seed=seed)
        if high >= 0:
            return result, (
                f"{result.family} is the simplest family not found worse than {best.family} "
                f"(AUROC difference 95 % CI {low:+.3f} to {high:+.3f})"
            )
    return best, f"{best.family}: every simpler family is worse"


def paired_auroc_difference_ci(
    y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray, *, seed: int = 0
) -> tuple[float, float]:
    """Percentile 95 % CI of AUROC(a) - AUROC(b) over patients resampled with replacement (paired)."""
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(N_BOOTSTRAP):
        sample = rng.integers(0, len(y), len(y))
        if y[sample].min() == y[sample].max():
            continue
        values.append(roc_auc_score(y[sample], scores_a[sample]) - roc_auc_score(y[sample], scores_b[sample]))
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def _result(family: str, oof: np.ndarray, y: np.ndarray, chosen: Counter, n_splits: int, seed: int) -> NestedResult:
    aurocs, mean_logits, calibration, brier = score_oof(oof, y)
    return NestedResult(
        family=family,
        n=len(y),
        events=int(y.sum()),
        n_splits=n_splits,
        n_repeats=oof.shape[0],
        oof_logits=oof,
        choices={str(k): v for k, v in chosen.items()},
        auroc_per_repeat=aurocs,
        auroc_mean=float(np.mean(aurocs)),
        auroc_ci95=bootstrap_auroc_ci(y, mean_logits, seed=seed),
        brier=brier,
        calibration=calibration,
    )
