"""New clinical inputs on the twin (an eGFR, a creatinine, a weight): the surgical scenarios run again if they change.

    runs = refresh_scenarios(store, patient_key, actor="api:lab-feed", outcome_model=model)

Labs often reach the twin after the scan that found a renal mass, and the scenarios computed then listed them as
missing (the new-baseline eGFR needs the pre-operative eGFR). For each of the patient's analyses with scenario
predictions (not superseded, and visible to the caller's scope), the set that counts (``current_scenarios``: the
latest radiologist's SEG, else the model's masks) is computed again from the same masks with the inputs the twin holds
now, using no observation dated more than ``PLANNING_WINDOW_DAYS`` after the scan (a lab years later belongs to
another scan), and recorded only where a prediction or the list of imputed inputs differs: the same labs sent twice,
or a lab outside the window, record nothing. Only codes that feed the scenarios trigger it
(``twin_inputs.is_scenario_input``). The masks
come from the artifact store: the analysis' label map, named by the card of the model that made it, or the
radiologist's SEG resampled onto that map's grid. Where they cannot be read (that model version is no longer
installed, a missing artifact), the run says why and nothing is recorded: the observation that triggered it is
already stored, and a refresh never turns its request into an error.
"""

from __future__ import annotations

import io
import logging
from dataclasses import replace

import pydicom

from twin_imaging.errors import ModelError, TwinError, TwinImagingError, UnknownAnalysisError
from twin_imaging.io.expert_seg import describe_expert_seg, read_expert_labels
from twin_imaging.io.nifti import read_nifti
from twin_imaging.models import load_model_package
from twin_imaging.outcome.scenarios import DEFAULT_MARGIN_MM
from twin_imaging.outcome.twin_scenarios import TwinScenarioRun, current_scenarios, run_twin_scenarios
from twin_imaging.settings import get_settings
from twin_imaging.volume import Volume

log = logging.getLogger(__name__)

PLANNING_WINDOW_DAYS = 90  # labs up to this long after the scan count as the pre-operative work-up of that scan


def refresh_scenarios(
    store,
    patient_key: str,
    *,
    actor: str,
    outcome_model,
    margin_mm: float = DEFAULT_MARGIN_MM,
    only_sent_by: str | None = None,
) -> list[TwinScenarioRun]:
    """Run the patient's current scenario sets again with the twin's inputs as they are now (module docstring).
    ``only_sent_by``: an actor whose key sees only what it sent; other analyses are left alone."""
    summary = store.summary(patient_key, actor=actor)
    live = {a.analysis_id for a in summary.analyses if a.superseded_by is None}
    runs = []
    for current in current_scenarios(summary):
        analysis_id, source = current["analysis_id"], current["mask_source"]
        if analysis_id not in live:
            continue
        try:
            if only_sent_by is not None:
                store.analysis(analysis_id, actor=actor, only_sent_by=only_sent_by)
            labels = _masks(store, analysis_id, source, actor=actor)
            run = run_twin_scenarios(
                store,
                outcome_model,
                analysis_id,
                labels,
                mask_source=source,
                actor=actor,
                margin_mm=margin_mm,
                unless_same_as=current,
                labs_days_after_scan=PLANNING_WINDOW_DAYS,
            )
        except UnknownAnalysisError:
            continue  # not this caller's to touch
        except TwinImagingError as exc:
            runs.append(TwinScenarioRun(analysis_id, source, False, f"not recomputed: {exc}"))
            continue
        except Exception as exc:  # a refresh is a side effect of storing labs: never fail that request for it
            log.exception("scenarios of analysis %s not recomputed", analysis_id)
            runs.append(TwinScenarioRun(analysis_id, source, False, f"not recomputed: {type(exc).__name__}"))
            continue
        if run.computed:
            log.info("scenarios of analysis %s recomputed with new inputs (%s masks)", analysis_id, source)
        runs.append(run)
    return runs


def _masks(store, analysis_id: str, mask_source: str, *, actor: str) -> Volume:
    """The label map behind ``mask_source`` for one analysis, with structure names."""
    analysis = store.analysis(analysis_id, actor=actor)
    _, labels_path = store.artifact_file(analysis_id, "labels_nifti", actor=actor)
    labels = read_nifti(labels_path)
    if mask_source == "model":
        folder = get_settings().models_dir / analysis.model_id
        card = load_model_package(folder, verify=False).card
        if card.version != analysis.model_version:
            raise ModelError(
                f"the analysis was made by {analysis.model_id} {analysis.model_version}; {card.version} is installed"
            )
        return replace(labels, label_names={s.label: s.name for s in card.structures})
    uid = mask_source.removeprefix("expert_seg:")
    found = [e for e in analysis.expert_segmentations if e.sop_instance_uid == uid]
    if not found:
        raise TwinError(f"the radiologist's SEG {uid} is no longer recorded against analysis {analysis_id}")
    expert = found[-1]
    dataset = pydicom.dcmread(io.BytesIO(store.artifacts.read_bytes(expert.artifact_sha256)))
    return read_expert_labels(dataset, describe_expert_seg(dataset), labels)
