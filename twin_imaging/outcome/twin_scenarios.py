"""Surgical scenarios for an analysed CT with a renal mass, run by the pipeline and recorded on the twin.

    run = run_twin_scenarios(store, model, analysis_id, labels, mask_source="model", actor="pipeline")

``labels`` is the analysis' label map (the segmentation model's, or a radiologist's SEG on the same series) with
named structures; it is turned into the outcome models' convention (1 kidney, 2 tumour, 3 cyst) by name. The
clinical inputs come from the twin (``twin_inputs``), the predictions (probabilities per target and the new-baseline
eGFR per scenario) are recorded with the analysis and the mask source, so a later radiologist's SEG recomputes them
and the history keeps both. Where the scenarios cannot run (no age or sex on the twin, a post-operative scan, masks
the kidney analysis refuses), the run says why and records nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import numpy as np

from twin_imaging.errors import InputError
from twin_imaging.outcome.kidney_features import kidney_features
from twin_imaging.outcome.scenarios import DEFAULT_MARGIN_MM, SCENARIOS, predict_scenarios, prediction_inputs
from twin_imaging.outcome.twin_inputs import NotPreoperativeError, clinical_inputs_from_twin
from twin_imaging.volume import Volume

KIDNEY_NAMES = frozenset({"kidney", "kidney_left", "kidney_right"})
TUMOUR_NAMES = frozenset({"renal_tumor", "kidney_tumor", "renal_mass", "tumor"})
CYST_NAMES = frozenset({"renal_cyst", "kidney_cyst", "cyst"})
KITS_NAMES = {1: "kidney", 2: "tumor", 3: "cyst"}


def has_renal_mass(label_names: dict[int, str]) -> bool:
    """Whether a model or SEG with these structures can hold a renal mass (a tumour or cyst label)."""
    return any(name in TUMOUR_NAMES | CYST_NAMES for name in label_names.values())


def kits_labels(labels: Volume) -> Volume | None:
    """The label map in the KiTS convention, or None where it holds no voxel of a renal tumour or cyst."""
    names = labels.label_names or {}
    out = np.zeros(labels.array.shape, dtype=np.uint8)
    for value, name in names.items():
        target = 1 if name in KIDNEY_NAMES else 2 if name in TUMOUR_NAMES else 3 if name in CYST_NAMES else 0
        if target:
            out[labels.array == value] = target
    if not np.any(out >= 2):
        return None
    return replace(labels, array=out, label_names=dict(KITS_NAMES))


@dataclass(frozen=True)
class TwinScenarioRun:
    analysis_id: str
    mask_source: str  # "model", or "expert_seg:<SOP Instance UID>"
    computed: bool
    reason: str | None = None  # why not computed
    report: dict[str, Any] | None = None  # ScenarioReport.to_json()
    inputs: dict[str, Any] = field(default_factory=dict)  # sources and missing inputs
    prediction_ids: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "analysis_id": self.analysis_id,
            "mask_source": self.mask_source,
            "computed": self.computed,
            "reason": self.reason,
            "inputs": self.inputs,
            **(self.report or {}),
            "recorded_prediction_ids": list(self.prediction_ids),
        }


def run_twin_scenarios(
    store,
    model,
    analysis_id: str,
    labels: Volume,
    *,
    mask_source: str,
    actor: str,
    margin_mm: float = DEFAULT_MARGIN_MM,
    unless_same_as: dict[str, Any] | None = None,
    labs_days_after_scan: int | None = None,
) -> TwinScenarioRun:
    """Run and record the scenarios of one analysis (see the module docstring). ``unless_same_as``: a set of
    ``current_scenarios``; where every prediction and the imputed inputs come out the same, nothing is recorded
    (the run is not ``computed`` and says so). ``labs_days_after_scan``: use no observation dated later than that
    many days after the scan."""
    kits = kits_labels(labels)
    if kits is None:
        return TwinScenarioRun(analysis_id, mask_source, False, "the masks hold no renal tumour or cyst")
    patient_key, analysis = store.analysis_with_patient(analysis_id, actor=actor)
    summary = store.summary(patient_key, actor=actor)
    study = next(s for s in summary.studies if s.study_instance_uid == analysis.study_instance_uid)
    scan_date = study.study_date or analysis.started_at.date()
    try:
        found = kidney_features(kits)
        labs_until = None if labs_days_after_scan is None else scan_date + timedelta(days=labs_days_after_scan)
        inputs = clinical_inputs_from_twin(
            summary, scan_date=scan_date, tumour_diameter_mm=found.tumor_max_diameter_mm, labs_until=labs_until
        )
    except (InputError, NotPreoperativeError) as exc:
        return TwinScenarioRun(analysis_id, mask_source, False, str(exc))
    required = [name for name in ("age_years", "sex") if name not in inputs.clinical]
    if required:
        reason = f"the twin holds no {' or '.join(required)} for this patient: the outcome models need them"
        return TwinScenarioRun(analysis_id, mask_source, False, reason, inputs=inputs.to_json())
    try:
        report = predict_scenarios(model, kits, inputs.clinical, scenarios=SCENARIOS, margin_mm=margin_mm)
    except InputError as exc:
        return TwinScenarioRun(analysis_id, mask_source, False, str(exc), inputs=inputs.to_json())
    records = prediction_inputs(report, analysis_id=analysis_id, mask_source=mask_source)
    if unless_same_as is not None and _same_predictions(records, unless_same_as):
        reason = "unchanged: the inputs on the twin give the same predictions"
        return TwinScenarioRun(
            analysis_id, mask_source, False, reason, report=report.to_json(), inputs=inputs.to_json()
        )
    made = store.record_predictions(patient_key, records, actor=actor)
    return TwinScenarioRun(
        analysis_id,
        mask_source,
        True,
        report=report.to_json(),
        inputs=inputs.to_json(),
        prediction_ids=tuple(p.prediction_id for p in made),
    )


def _same_predictions(records, current: dict[str, Any]) -> bool:
    def point(p) -> float:
        return p["probability"] if p["probability"] is not None else p["value"]

    before = {(p["target"], p["scenario"]): point(p) for p in current["predictions"]}
    now = {(r.target, r.scenario): r.probability if r.probability is not None else r.value for r in records}
    models_before = {p["model"] for p in current["predictions"]}
    models_now = {f"{r.model_id} {r.model_version}" for r in records}
    # another outcome model, or another set of targets (one an upgrade dropped), is a change worth recording
    if now.keys() != before.keys() or models_now != models_before:
        return False
    if sorted({i for r in records for i in r.imputed}) != current["imputed"]:
        return False
    # 1e-6: the masks read back from the stored NIfTI (float32 affine) move the kidney features by ~1e-8
    return all(abs(before[k] - now[k]) <= 1e-6 * max(1.0, abs(now[k])) for k in now)


def scenarios_after_attach(
    store, result, analysis, *, actor: str, model=None, margin_mm: float = DEFAULT_MARGIN_MM
) -> TwinScenarioRun | None:
    """After a pipeline result is attached: the scenarios on the model's masks where it found a renal tumour or
    cyst (``mask_source`` "model"), else None. ``model``: the outcome model (default: the shipped one, loaded
    here only when a mass was found); one that cannot load is a reason, not a failure of the analysis."""
    labels = result.segmentation.labels
    if not has_renal_mass(labels.label_names or {}) or kits_labels(labels) is None:
        return None
    if model is None:
        from twin_imaging.errors import ModelError
        from twin_imaging.outcome.model import OutcomeModel

        try:
            model = OutcomeModel()
        except ModelError as exc:
            return TwinScenarioRun(analysis.analysis_id, "model", False, f"no outcome model: {exc}")
    return run_twin_scenarios(
        store, model, analysis.analysis_id, labels, mask_source="model", actor=actor, margin_mm=margin_mm
    )


def current_scenarios(summary) -> list[dict[str, Any]]:
    """Per analysis with scenario predictions, the set that counts: from the latest radiologist's SEG where one was
    sent, else from the model's masks (the others stay in the twin's history), each prediction as last computed
    from those masks. Oldest analysis first."""
    by_analysis: dict[str, dict[str, list]] = {}
    for p in summary.predictions:
        if p.analysis_id is None or p.mask_source is None:
            continue
        by_analysis.setdefault(p.analysis_id, {}).setdefault(p.mask_source, []).append(p)
    order = {a.analysis_id: index for index, a in enumerate(summary.analyses)}
    found = []
    for analysis_id, sources in sorted(by_analysis.items(), key=lambda item: order.get(item[0], len(order))):
        expert = [s for s in sources if s.startswith("expert_seg:")]
        chosen = max(expert, key=lambda s: max(p.created_at for p in sources[s])) if expert else "model"
        if chosen not in sources:
            continue
        runs = sorted(sources[chosen], key=lambda p: (p.created_at, p.prediction_id))
        # the latest run where the same masks ran again (new inputs), of the outcome model that ran last: a target
        # an upgraded model no longer predicts must not linger beside the new model's rows
        newest_model = (runs[-1].model_id, runs[-1].model_version)
        latest: dict[tuple[str, str], Any] = {}
        for p in runs:
            if (p.model_id, p.model_version) == newest_model:
                latest[(p.target, p.scenario)] = p
        rows = list(latest.values())
        found.append(
            {
                "analysis_id": analysis_id,
                "mask_source": chosen,
                "other_mask_sources": sorted(set(sources) - {chosen}),
                "imputed": sorted({i for p in rows for i in p.imputed}),
                "predictions": [
                    {
                        "target": p.target,
                        "scenario": p.scenario,
                        "probability": p.probability,
                        "value": p.value,
                        "unit": p.unit,
                        "interval_90": [p.lower, p.upper],
                        "model": f"{p.model_id} {p.model_version}",
                        "created_at": p.created_at.isoformat(),
                        "drivers": list(p.drivers),
                    }
                    for p in sorted(rows, key=lambda p: (p.target, p.scenario))
                ],
            }
        )
    return found
