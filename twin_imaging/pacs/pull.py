"""Pull a study from a DICOMweb PACS, analyse it, attach it to the twin and push the results back into it.

    outcome = pull_study(peer, study_uid, work_dir, store=TwinStore(), outbox=Outbox(...), actor="pacs-pull")

Only the study's CT and MR series are retrieved; the pipeline then chooses the series to analyse and records which
and why (``results.json``: ``input.series_found``). The results (SEG, SR, overlay captures) go through the outbox:
written to disk first, then sent by STOW-RS; if the PACS is down they stay queued (``twin-imaging pacs deliver``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from twin_imaging.outcome.twin_scenarios import scenarios_after_attach
from twin_imaging.pacs.dicomweb import DicomWebPeer
from twin_imaging.pacs.outbox import DeliveryReport, Destination, Outbox, SendFunction
from twin_imaging.pacs.results import result_datasets, superseded_rejection
from twin_imaging.pipeline import AnalysisResult, analyze_study


@dataclass(frozen=True)
class PullOutcome:
    result: AnalysisResult
    retrieved_files: int
    analysis_id: str | None
    outbox_item: str | None
    delivery: DeliveryReport | None


def pull_study(
    peer: DicomWebPeer,
    study_instance_uid: str,
    work_dir: Path,
    *,
    actor: str,
    store=None,
    outbox: Outbox | None = None,
    send: SendFunction | None = None,
    segmenter=None,
) -> PullOutcome:
    files = peer.retrieve_image_series(study_instance_uid, work_dir / "study")
    result = analyze_study(work_dir / "study", work_dir / "analysis", segmenter=segmenter)
    analysis = store.attach_analysis(result, actor=actor) if store is not None else None
    if analysis is not None:  # a renal mass found: its surgical scenarios on the twin
        scenarios_after_attach(store, result, analysis, actor=actor)
    item = delivery = None
    if outbox is not None:
        datasets = result_datasets(result)
        rejection = superseded_rejection(store, analysis, actor=actor) if analysis is not None else None
        if rejection is not None:  # the earlier results of part of this series are withdrawn
            datasets.append(rejection)
        item = outbox.enqueue(datasets, Destination.dicomweb(peer.url), label=f"study {study_instance_uid}")
        if send is not None:
            delivery = outbox.deliver_due(send)
    return PullOutcome(result, len(files), analysis.analysis_id if analysis else None, item, delivery)
