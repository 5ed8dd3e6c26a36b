"""Nested cross-validation of the outcome classifiers: the shipping rule picks an informative family where there is
signal and the base rate where there is none; the inner folds never see the outer test part."""

from __future__ import annotations

import numpy as np
import pytest

from training.outcome import nested_cv
from training.outcome.linear import fit_logistic
from training.outcome.nested_cv import nested_cross_validate, simplest_not_worse

NAMES = ["signal", "noise_1", "noise_2"]


@pytest.fixture(autouse=True)
def _two_strengths(monkeypatch):
    monkeypatch.setattr(nested_cv, "L2_GRID", (1.0, 100.0))  # keeps the test short; the logic is the same


def _fits():
    def family(active):
        def fit(x, y, l2):
            return fit_logistic(x, y, NAMES, l2=l2, active=set(active))

        return fit

    return {"base_rate": family(()), "noise_only": family(("noise_1", "noise_2")), "with_signal": family(NAMES)}


def _data(signal_strength: float, n: int = 240, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    y = (rng.random(n) < 1 / (1 + np.exp(-(signal_strength * x[:, 0] - 1.0)))).astype(int)
    return x, y


def test_a_family_with_real_signal_ships_over_the_base_rate():
    x, y = _data(2.5)
    results, selection = nested_cross_validate(x, y, _fits(), n_repeats=1, seed=1)
    shipped, reason = simplest_not_worse(list(results.values()), y)
    assert shipped.family == "with_signal", reason
    assert results["with_signal"].auroc_mean > 0.8
    assert results["base_rate"].auroc_mean == pytest.approx(0.5)
    assert selection.choices.get("with_signal", 0) >= 4  # of 5 outer splits


@pytest.mark.parametrize("seed", [0, 1])
def test_pure_noise_ships_the_base_rate(seed):
    x, y = _data(0.0, seed=seed)
    results, _ = nested_cross_validate(x, y, _fits(), n_repeats=1, seed=1)
    shipped, reason = simplest_not_worse(list(results.values()), y)
    assert shipped.family == "base_rate", reason
    assert results["base_rate"].auroc_mean == 0.5  # ranks nobody, by definition
    assert results["with_signal"].auroc_mean < 0.65  # nested CV does not flatter a fit to noise


def test_the_inner_folds_never_see_the_outer_test_rows(monkeypatch):
    x, y = _data(2.0, n=100)
    x[:, 2] = np.arange(len(y))  # a row id in a column no family uses for its decision
    seen: list[set[int]] = []
    original = nested_cv.best_l2

    def spy(x_train, y_train, fit, *, seed):
        seen.append({int(v) for v in x_train[:, 2]})
        return original(x_train, y_train, fit, seed=seed)

    monkeypatch.setattr(nested_cv, "best_l2", spy)
    outer = list(nested_cv.RepeatedStratifiedKFold(n_splits=5, n_repeats=1, random_state=3).split(x, y))
    nested_cross_validate(x, y, {"with_signal": _fits()["with_signal"]}, n_repeats=1, seed=3)
    assert len(seen) == len(outer)
    for rows, (_, test) in zip(seen, outer, strict=True):
        assert rows.isdisjoint(set(test.tolist()))
