"""Run the shipped outcome model with ONNX Runtime: per target and scenario, a calibrated probability, a prediction
interval from the bootstrap refits, and the features that drove it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from twin_imaging.errors import InputError, ModelError
from twin_imaging.files import file_sha256
from twin_imaging.inference.sessions import create_session
from twin_imaging.models.package import CARD_FILE
from twin_imaging.outcome.card import OutcomeCard
from twin_imaging.settings import get_settings


@dataclass(frozen=True)
class Contribution:
    feature: str
    value: float
    logit: float  # contribution to the log-odds relative to the training mean (+ raises the risk)


@dataclass(frozen=True)
class TargetPrediction:
    target: str
    scenario: str
    probability: float
    interval: tuple[float, float]
    contributions: tuple[Contribution, ...]  # strongest first


@dataclass(frozen=True)
class OutcomePackage:
    root: Path
    card: OutcomeCard

    @property
    def onnx_path(self) -> Path:
        return self.root / self.card.onnx.file


def load_outcome_package(path: str | os.PathLike | None = None, *, verify: bool = True) -> OutcomePackage:
    """The outcome package in ``path`` (default: settings.models_dir / settings.default_outcome_model)."""
    settings = get_settings()
    path = Path(path) if path is not None else settings.models_dir / settings.default_outcome_model
    card_path = path if path.is_file() else path / CARD_FILE
    if not card_path.is_file():
        raise ModelError(f"no outcome model package at {path}: {CARD_FILE} not found")
    try:
        card = OutcomeCard.model_validate_json(card_path.read_bytes())
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(map(str, problem["loc"]))
        raise ModelError(f"{card_path} is not a valid outcome card: {where}: {problem['msg']}") from None
    package = OutcomePackage(card_path.parent, card)
    if not package.onnx_path.is_file():
        raise ModelError(f"outcome model {card.model_id}: {card.onnx.file} is missing")
    if verify and file_sha256(package.onnx_path) != card.onnx.sha256:
        raise ModelError(f"outcome model {card.model_id}: {card.onnx.file} does not match the sha256 in its card")
    return package


class OutcomeModel:
    def __init__(self, package: OutcomePackage | None = None) -> None:
        self.package = package or load_outcome_package()
        self.card = self.package.card
        self.session = create_session(self.package.onnx_path, providers="CPUExecutionProvider")

    def run(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, F) features → probabilities (N, T, 1 + B) and contributions (N, T, F)."""
        rows = np.asarray(rows, dtype=np.float32)
        if rows.ndim != 2 or rows.shape[1] != len(self.card.feature_names):
            raise InputError(f"expected rows of {len(self.card.feature_names)} features, got shape {rows.shape}")
        if not np.all(np.isfinite(rows)):
            raise InputError("feature values must be finite (impute missing inputs first)")
        probabilities, contributions = self.session.run(["probabilities", "contributions"], {"features": rows})
        return probabilities, contributions

    def predict(self, scenarios: Mapping[str, Mapping[str, float]], *, top: int = 5) -> list[TargetPrediction]:
        """One feature row per scenario (feature name → value) → a prediction per target and scenario."""
        names = list(self.card.feature_names)
        missing = {s: sorted(set(names) - set(row)) for s, row in scenarios.items() if set(names) - set(row)}
        if missing:
            raise InputError(f"features missing for the outcome model: {missing}")
        order = list(scenarios)
        rows = np.array([[scenarios[s][name] for name in names] for s in order], dtype=np.float32)
        probabilities, contributions = self.run(rows)
        low_q, high_q = (1 - self.card.interval_level) / 2, 1 - (1 - self.card.interval_level) / 2
        predictions = []
        for t, target in enumerate(self.card.targets):
            for i, scenario in enumerate(order):
                members = probabilities[i, t, 1:]
                interval = (float(np.quantile(members, low_q)), float(np.quantile(members, high_q)))
                ranked = np.argsort(-np.abs(contributions[i, t]))[:top]
                drivers = tuple(
                    Contribution(names[j], float(rows[i, j]), float(contributions[i, t, j]))
                    for j in ranked
                    if abs(contributions[i, t, j]) > 1e-6
                )
                predictions.append(
                    TargetPrediction(target.name, scenario, float(probabilities[i, t, 0]), interval, drivers)
                )
        return predictions
