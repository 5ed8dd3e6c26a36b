"""A radiologist's DICOM SEG in (by STOW-RS, C-STORE or the API): checked, recorded, and the scenarios recomputed.

    receipt = receive_expert_seg(store, data, via="c-store", actor="dicom-listener:TWIN", outcome_model=model)

The SEG must reference exactly one series that the twin has analysed, belong to that series' patient, map at least
one segment to a kidney, renal tumour or cyst by SNOMED CT code (``twin_imaging.io.expert_seg``) and lie on the
series' grid. Anything else is refused with an ``ExpertSegError`` that names the problem, and nothing is recorded.
Accepted, it is recorded on the twin against the series' current analysis (author, route, segment mapping, the file
in the artifact store); where it holds a renal tumour or cyst, the surgical scenarios run again on its masks
(``mask_source`` "expert_seg:<SOP Instance UID>") and are recorded beside the model's. The same SEG sent again
changes nothing.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

from twin_imaging.errors import DicomInputError, UnknownAnalysisError
from twin_imaging.io.expert_seg import describe_expert_seg, read_expert_labels
from twin_imaging.io.nifti import read_nifti
from twin_imaging.outcome.twin_scenarios import has_renal_mass, run_twin_scenarios

log = logging.getLogger(__name__)


class ExpertSegError(DicomInputError):
    """A SEG refused as expert masks; the message names why."""


def receive_expert_seg(
    store,
    data: bytes,
    *,
    via: str,
    actor: str,
    outcome_model=None,
    margin_mm: float = 5.0,
    only_sent_by: str | None = None,
) -> dict[str, Any]:
    """Check, record and use one SEG (see the module docstring); the receipt as JSON. ``only_sent_by``: an actor
    whose key reads only what it sent; a series analysed for anyone else is, to it, a series never analysed."""
    try:
        dataset = pydicom.dcmread(io.BytesIO(data))
    except (InvalidDicomError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise ExpertSegError(f"not a readable DICOM instance: {exc}") from None
    try:
        info = describe_expert_seg(dataset)
    except DicomInputError as exc:
        raise ExpertSegError(str(exc)) from None
    found = store.current_analysis_of_series(info.referenced_series_uid, actor=actor)
    if found is not None and only_sent_by is not None:
        try:
            store.analysis(found[1].analysis_id, actor=actor, only_sent_by=only_sent_by)
        except UnknownAnalysisError:
            found = None
    if found is None:
        raise ExpertSegError(
            f"no completed analysis of series {info.referenced_series_uid}, which the SEG references: send the "
            "series first, then its SEG"
        )
    patient_key, analysis = found
    if not info.patient_id or store.patient_key_for(info.patient_id) != patient_key:
        raise ExpertSegError("the SEG's Patient ID is not the patient of the series it references")
    _, labels_path = store.artifact_file(analysis.analysis_id, "labels_nifti", actor=actor)
    try:
        labels = read_expert_labels(dataset, info, read_nifti(labels_path))
    except DicomInputError as exc:
        raise ExpertSegError(str(exc)) from None
    record, created = store.record_expert_segmentation(
        analysis.analysis_id,
        sop_instance_uid=info.sop_instance_uid,
        author=info.author,
        content_label=info.content_label,
        segments=[s.to_json() for s in info.segments],
        seg_bytes=data,
        via=via,
        actor=actor,
    )
    receipt: dict[str, Any] = {
        "expert_segmentation_id": record.expert_segmentation_id,
        "sop_instance_uid": info.sop_instance_uid,
        "analysis_id": analysis.analysis_id,
        "series_instance_uid": info.referenced_series_uid,
        "author": record.author,
        "received_via": record.received_via,
        "segments": list(record.segments),
        "already_recorded": not created,
        "scenarios": None,
    }
    if not created:
        return receipt
    if outcome_model is None:
        receipt["scenarios"] = {"computed": False, "reason": "no outcome model is loaded"}
    elif not has_renal_mass(labels.label_names or {}):
        receipt["scenarios"] = {"computed": False, "reason": "the SEG holds no renal tumour or cyst"}
    else:
        run = run_twin_scenarios(
            store,
            outcome_model,
            analysis.analysis_id,
            labels,
            mask_source=f"expert_seg:{info.sop_instance_uid}",
            actor=actor,
            margin_mm=margin_mm,
        )
        receipt["scenarios"] = run.to_json()
    log.info("expert SEG recorded against analysis %s (%s)", analysis.analysis_id, via)
    return receipt
