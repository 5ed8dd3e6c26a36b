"""Outcome predictions for one patient under each surgical scenario asked for, side by side.

    report = predict_scenarios(model, labels, clinical, scenarios=("partial_nephrectomy", "radical_nephrectomy"))

The one place that turns a label map and clinical variables into the model's rows (imputing what is missing and
saying so), used by the CLI (``outcome predict``) and the API alike.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from twin_imaging.errors import InputError
from twin_imaging.outcome.clinical import ClinicalInput, SurgicalScenario, load_clinical_json
from twin_imaging.outcome.features import feature_row
from twin_imaging.outcome.imputation import impute_clinical
from twin_imaging.outcome.kidney_features import kidney_features
from twin_imaging.outcome.model import OutcomeModel, TargetPrediction
from twin_imaging.outcome.new_baseline_egfr import (
    NewBaselinePrediction,
    covariates_of,
    predict_new_baseline,
    split_renal_function,
)
from twin_imaging.outcome.resection import virtual_resection
from twin_imaging.outcome.targets import TARGETS
from twin_imaging.volume import Volume

SCENARIOS = ("partial_nephrectomy", "radical_nephrectomy")
APPROACHES = ("robotic", "laparoscopic", "open")
DEFAULT_MARGIN_MM = 5.0
DRIVERS_KEPT = 5  # contributions recorded on the twin per prediction, strongest first


@dataclass(frozen=True)
class ScenarioReport:
    model_id: str
    model_version: str
    scenarios: tuple[str, ...]
    predictions: tuple[TargetPrediction, ...]
    imputed: tuple[str, ...]  # "field = value (source)" for every clinical input that was missing
    cautions: tuple[str, ...]
    new_baseline_egfr: tuple[NewBaselinePrediction, ...] = ()
    new_baseline_missing: str | None = None  # why no new-baseline eGFR was predicted

    def prediction(self, target: str, scenario: str) -> TargetPrediction:
        return next(p for p in self.predictions if p.target == target and p.scenario == scenario)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": {"id": self.model_id, "version": self.model_version},
            "scenarios": list(self.scenarios),
            "imputed": list(self.imputed),
            "cautions": list(self.cautions),
            "new_baseline_egfr": [p.to_json() for p in self.new_baseline_egfr],
            "new_baseline_egfr_missing": self.new_baseline_missing,
            "predictions": [
                {
                    "target": p.target,
                    "scenario": p.scenario,
                    "probability": round(p.probability, 4),
                    "interval_90": [round(v, 4) for v in p.interval],
                    "drivers": [
                        {"feature": c.feature, "value": c.value, "logit": round(c.logit, 3)} for c in p.contributions
                    ],
                }
                for p in self.predictions
            ],
        }


EGFR_UNIT = "mL/min/{1.73_m2}"  # UCUM, as the twin's eGFR observations


def prediction_inputs(
    report: ScenarioReport, *, analysis_id: str | None = None, mask_source: str | None = None
) -> list:
    """The report as the twin's prediction records: each probability, and each new-baseline eGFR as a value."""
    from twin_imaging.twin.views import PredictionInput

    records = [
        PredictionInput(
            target=p.target,
            scenario=p.scenario,
            probability=p.probability,
            model_id=report.model_id,
            model_version=report.model_version,
            lower=p.interval[0],
            upper=p.interval[1],
            analysis_id=analysis_id,
            mask_source=mask_source,
            drivers=tuple(
                {"feature": c.feature, "value": c.value, "logit": c.logit} for c in p.contributions[:DRIVERS_KEPT]
            ),
            imputed=report.imputed,
        )
        for p in report.predictions
    ]
    records += [
        PredictionInput(
            target="new_baseline_egfr",
            scenario=e.scenario,
            probability=None,
            model_id=report.model_id,
            model_version=report.model_version,
            lower=e.interval_90[0],
            upper=e.interval_90[1],
            analysis_id=analysis_id,
            value=e.egfr_ml_min_1_73m2,
            unit=EGFR_UNIT,
            mask_source=mask_source,
            imputed=report.imputed,
        )
        for e in report.new_baseline_egfr
    ]
    return records


def predict_scenarios(
    model: OutcomeModel,
    labels: Volume,
    clinical: ClinicalInput | Mapping[str, Any],
    *,
    scenarios: Iterable[str] = SCENARIOS,
    margin_mm: float = DEFAULT_MARGIN_MM,
    approach: str = "robotic",
) -> ScenarioReport:
    """Each outcome's probability per scenario. ``labels``: the KiTS convention (1 kidney, 2 tumour, 3 cyst)."""
    scenarios = tuple(dict.fromkeys(scenarios)) or SCENARIOS
    unknown = [s for s in scenarios if s not in SCENARIOS]
    if unknown:
        raise InputError(f"unknown scenario(s) {unknown}; choose from {list(SCENARIOS)}")
    if approach not in APPROACHES:
        raise InputError(f"unknown approach {approach!r}; choose from {list(APPROACHES)}")
    if not (0.0 <= margin_mm <= 30.0):
        raise InputError(f"margin_mm must lie between 0 and 30 mm, got {margin_mm}")
    parsed = clinical if isinstance(clinical, ClinicalInput) else load_clinical_json(clinical)
    imputed_clinical, report = impute_clinical(parsed, dict(model.card.imputation))
    found = kidney_features(labels)
    rows, resections = {}, {}
    for procedure in scenarios:
        margin = margin_mm if procedure == "partial_nephrectomy" else None
        scenario = SurgicalScenario(procedure=procedure, approach=approach, margin_mm=margin)
        resections[procedure] = virtual_resection(labels, found, scenario=procedure, margin_mm=margin or 0.0)
        rows[procedure] = feature_row(imputed_clinical, scenario, found.to_json(), resections[procedure].to_json())
    new_baseline, new_baseline_missing = (), None
    pre_egfr = parsed.preop_egfr_ml_min_1_73m2  # measured only: never the imputed value
    if model.card.new_baseline_egfr is None:
        new_baseline_missing = f"model {model.card.model_id} {model.card.version} has no new-baseline eGFR model"
    elif pre_egfr is None:
        new_baseline_missing = "no measured pre-operative eGFR: the new baseline is a fraction of it"
    else:
        new_baseline = tuple(
            predict_new_baseline(
                model.card.new_baseline_egfr,
                pre_egfr,
                split_renal_function(found.to_json(), resections[procedure].to_json()),
                covariates_of(imputed_clinical),
                procedure,
            )
            for procedure in scenarios
        )
    imputed_fields = {item.field for item in report.imputed}
    cautions = tuple(
        f"{name} needs a measured {', '.join(sorted(needed))}; it was imputed, so read this prediction with care"
        for name, target in TARGETS.items()
        if (needed := set(target.required_inputs) & imputed_fields)
    )
    return ScenarioReport(
        model_id=model.card.model_id,
        model_version=model.card.version,
        scenarios=scenarios,
        predictions=tuple(model.predict(rows)),
        imputed=tuple(f"{item.field} = {item.value} ({item.source})" for item in report.imputed),
        cautions=cautions,
        new_baseline_egfr=new_baseline,
        new_baseline_missing=new_baseline_missing,
    )
