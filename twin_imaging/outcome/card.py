"""The outcome model's machine-readable card: targets and their definitions, the features in input order, every
family's cross-validated metrics side by side, the data and its licence, and the ONNX file's sha256."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from twin_imaging.models.card import OnnxFile

OUTCOME_CARD_SCHEMA_VERSION = "1.1"  # 1.1: the new-baseline eGFR model; 1.0 cards still load


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FamilyMetrics(_Strict):
    family: str  # clinical_only, clinical_mask, image_network
    n: int
    events: int
    auroc: float
    auroc_ci95: tuple[float, float]
    auroc_per_repeat: tuple[float, ...] = ()
    brier: float
    cv: str  # e.g. "5 x repeated stratified 5-fold"


class RegressionMetrics(_Strict):
    method: str  # learned_split_renal_function, published_split_renal_function, no_change, clinical_linear
    mae: float  # mL/min/1.73 m², mean over the repeats of the out-of-fold absolute errors
    mae_ci95: tuple[float, float]  # bootstrap over patients
    within_10: float  # share of patients predicted within 10 mL/min/1.73 m²
    n: int
    cv: str
    interval_coverage: float | None = None  # share of held-out patients inside the 90 % interval


class NewBaselineEgfrModel(_Strict):
    """The learned split-renal-function model (twin_imaging.outcome.new_baseline_egfr), its terms and weights."""

    definition: str
    terms: tuple[str, ...]
    coefficients: tuple[float, ...]
    residual_interval_90: tuple[float, float] = Field(
        description="5th and 95th percentiles of the cross-validated residuals (observed - predicted), mL/min/1.73 m²"
    )
    evaluation: tuple[RegressionMetrics, ...]
    selection: str = ""  # how the terms were chosen
    notes: tuple[str, ...] = ()


class OutcomeTarget(_Strict):
    name: str
    description: str
    definition: str
    shipped_family: str
    families: tuple[FamilyMetrics, ...]
    monotone_in_scenario: bool = Field(
        description="radical nephrectomy never predicts a lower risk than partial (sign-constrained weights)"
    )
    calibration_plot: str = ""  # file name in model_cards/
    notes: tuple[str, ...] = ()


class OutcomeCard(_Strict):
    schema_version: Literal["1.0", "1.1"] = OUTCOME_CARD_SCHEMA_VERSION
    model_id: str = Field(pattern=r"^[a-z0-9_]+$")
    version: str
    task: Literal["outcome"] = "outcome"
    title: str
    description: str
    intended_use: str
    limitations: tuple[str, ...] = ()
    data: str
    data_licence: str
    n_training_cases: int
    feature_names: tuple[str, ...]
    feature_descriptions: dict[str, str] = Field(default_factory=dict)
    imputation: dict[str, bool | float | str] = Field(
        description="value used for a missing optional clinical input (training median or most common value)"
    )
    targets: tuple[OutcomeTarget, ...]
    n_bootstrap: int = Field(description="bootstrap refits whose spread gives the prediction interval")
    interval_level: float = 0.90
    new_baseline_egfr: NewBaselineEgfrModel | None = None
    onnx: OnnxFile
    created: datetime
    code_version: str = ""

    def target(self, name: str) -> OutcomeTarget:
        for target in self.targets:
            if target.name == name:
                return target
        raise KeyError(f"model {self.model_id} has no target {name!r}")
