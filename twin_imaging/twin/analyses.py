"""An analysis into the twin and back out: attaching a pipeline result to its patient's twin (the path behind
``TwinStore.attach_analysis``), and finding one analysis and its artifact by public id for those granted it.

Attaching is idempotent on (series, model id, model version): a result already attached is returned as it is. The
analysis' files are copied into the artifact store *before* its transaction, so a crash leaves at worst unreferenced
files, never rows naming missing ones; where a concurrent writer attached it (or created its patient or study) first,
its analysis is the answer (retried once). The new analysis supersedes older ones of its series and model, every
reader (the actor and the API callers who sent the study) is granted it, and the alert rules run in its transaction.
A key whose scope is "own" finds only the analyses granted to it; any other is unknown to it, never "forbidden".
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from twin_imaging.errors import TwinConflictError, TwinError, UnknownAnalysisError
from twin_imaging.settings import Settings
from twin_imaging.twin import mapping
from twin_imaging.twin import views as v
from twin_imaging.twin.audit import audit, check_actor
from twin_imaging.twin.ingest import Facts, add_analysis, facts_of, find_analysis, input_set_sha256, supersede
from twin_imaging.twin.schema import Analysis, AnalysisGrant, Artifact, Series

if TYPE_CHECKING:  # the store does not need the pipeline's imports (ONNX Runtime, highdicom) to run
    from twin_imaging.pipeline import AnalysisResult
    from twin_imaging.twin.store import TwinStore

log = logging.getLogger(__name__)


def attach_analysis(
    store: TwinStore,
    result: AnalysisResult,
    *,
    actor: str,
    patient_identifier: str | None = None,
    sent_by: Sequence[str] = (),
) -> v.AnalysisView:
    """``store.attach_analysis`` (see there): the result's files first, then its rows in one transaction."""
    actor = check_actor(actor)
    readers = list(dict.fromkeys([actor, *(check_actor(s) for s in sent_by)]))
    facts = facts_of(result, patient_identifier)
    key = store.patient_key_for(facts.patient_identifier)
    existing = _existing_analysis(store, facts, key, actor, readers)
    if existing is not None:
        return existing
    stored = [
        (store.artifacts.put(result.out_dir / file, kind=kind, name=file, expected_sha256=digest), sop_uid)
        for kind, file, digest, sop_uid in facts.outputs
    ]
    document = result.document.to_json().encode("utf-8")
    stored.append((store.artifacts.put(document, kind="results_json", name="results.json"), None))
    for attempt in (1, 2):
        try:
            view = _insert_analysis(store, facts, key, stored, actor, readers)
            break
        except IntegrityError:  # a concurrent writer attached it (or created its patient or study) first
            existing = _existing_analysis(store, facts, key, actor, readers)
            if existing is not None:
                return existing
            if attempt == 2:
                raise TwinConflictError(
                    "the analysis could not be attached: a concurrent change conflicted twice"
                ) from None
    _crash_point(store.settings, "attach_after_commit")
    return view


def _existing_analysis(
    store: TwinStore, facts: Facts, key: str, actor: str, readers: list[str]
) -> v.AnalysisView | None:
    with store._transaction() as session:
        found = find_analysis(session, facts)
        if found is None:
            return None
        analysis, series, study, patient = found
        if patient.patient_key != key:
            raise TwinError(f"series {facts.series_uid} is already in the twin under another patient")
        audit(session, actor, "read_analysis", key, "analysis", analysis.public_id, "attach: already attached")
        for reader in readers:  # they sent the same study: they may read what came of it
            _grant(session, analysis, reader)
        return mapping.analysis_view(analysis, study, series)


def _insert_analysis(
    store: TwinStore, facts: Facts, key: str, stored: list, actor: str, readers: list[str]
) -> v.AnalysisView:
    with store._transaction(raw_conflicts=True) as session:
        patient = store._ensure_patient(session, key, sex=facts.sex, birth_year=facts.birth_year)
        analysis, study, series = add_analysis(session, patient, facts, stored)
        for reader in readers:
            _grant(session, analysis, reader)
        audit(session, actor, "attach_analysis", key, "analysis", analysis.public_id)
        for old in supersede(session, analysis):
            audit(session, actor, "supersede_analysis", key, "analysis", old.public_id, analysis.public_id)
        store._evaluate_alerts(session, patient, actor)
        session.flush()
        _crash_point(store.settings, "attach_before_commit")
        log.info("attached analysis %d (series row %d, patient row %d)", analysis.id, series.id, patient.id)
        return mapping.analysis_view(analysis, study, series)


def attached_analysis_id(
    store: TwinStore, series_uid: str, model_id: str, model_version: str, uids: list[str]
) -> str | None:
    with store._transaction() as session:
        found = session.scalar(
            select(Analysis.public_id)
            .join(Analysis.series)
            .where(
                Series.series_instance_uid == series_uid,
                Analysis.model_id == model_id,
                Analysis.model_version == model_version,
                Analysis.input_set_sha256 == input_set_sha256([u for u in uids if u]),
            )
        )
        return found


def find_analysis_row(session: Session, analysis_id: str, only_sent_by: str | None = None) -> Analysis:
    """The analysis with this public id; unknown (never "forbidden", so ids cannot be probed) where
    ``only_sent_by`` is given and that actor did not send it."""
    row = None
    if isinstance(analysis_id, str) and analysis_id:
        row = session.scalar(select(Analysis).where(Analysis.public_id == analysis_id))
    sent = row is not None and (only_sent_by is None or session.get(AnalysisGrant, (row.id, only_sent_by)))
    if not sent:
        row = None
    if row is None:
        raise UnknownAnalysisError(analysis_id)
    return row


def artifact_of(row: Analysis, kind: str, name: str | None) -> Artifact:
    """The analysis' one artifact of ``kind`` (``name`` picks among several, e.g. the overlay planes)."""
    analysis_id = row.public_id
    matches = [a for a in row.artifacts if a.kind == kind and (name is None or a.name == name)]
    if not matches:
        held = sorted(f"{a.kind}:{a.name}" for a in row.artifacts)
        raise TwinError(
            f"analysis {analysis_id} has no {kind} artifact{f' named {name}' if name else ''}; it holds {held}"
        )
    if len(matches) > 1:
        raise TwinError(
            f"analysis {analysis_id} has {len(matches)} {kind} artifacts; name one of {sorted(a.name for a in matches)}"
        )
    return matches[0]


def _grant(session: Session, analysis: Analysis, actor: str) -> None:
    if session.get(AnalysisGrant, (analysis.id, actor)) is None:
        session.add(AnalysisGrant(analysis_id=analysis.id, actor=actor))


def _crash_point(settings: Settings, name: str) -> None:
    """Test hook (settings.test_crash_point): die here, as a power cut or OOM kill would."""
    if settings.test_crash_point == name:
        os.kill(os.getpid(), signal.SIGKILL)
