"""The patient twin store: a longitudinal record per patient, with provenance, on SQLite or PostgreSQL.

    store = TwinStore()                                    # settings: database_url, artifacts_dir, pseudonyms
    analysis = store.attach_analysis(result, actor="pacs-listener")
    store.record_procedure(key, ProcedureInput(...), actor="dr.smith")
    store.compare_studies(key, pre_uid, post_uid, actor="dr.smith")

Every change is one transaction, with its audit row and the alert rules' findings in it; every read writes an audit
row too. ``attach_analysis`` is idempotent on (series, model id, model version) and copies the analysis' files into
the artifact store *before* its transaction, so a crash leaves at worst unreferenced files, never rows naming missing
ones. Patients are keyed by PatientID, or by an HMAC pseudonym of it where ``pseudonymize_patients`` is set; names and
birth dates are never stored (sex and birth year are), and logs name rows by internal id only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import Session

from twin_imaging.errors import TwinError, UnknownPatientError
from twin_imaging.settings import Settings, get_settings
from twin_imaging.twin import analyses, mapping, patients, queries
from twin_imaging.twin import views as v
from twin_imaging.twin.alert_rules import evaluate_alerts
from twin_imaging.twin.artifacts import ArtifactStore
from twin_imaging.twin.audit import audit, check_actor
from twin_imaging.twin.database import create_twin_engine, guarded, session_factory, transaction, upgrade_database
from twin_imaging.twin.expert_segmentations import ExpertSegmentationRecords
from twin_imaging.twin.records import add_observation, add_prediction, add_procedure, check_prediction
from twin_imaging.twin.schema import Patient

if TYPE_CHECKING:  # the store does not need the pipeline's imports (ONNX Runtime, highdicom) to run
    from twin_imaging.pipeline import AnalysisResult

PSEUDONYM_HEX_CHARS = patients.PSEUDONYM_HEX_CHARS  # still importable from the store


class TwinStore(ExpertSegmentationRecords):
    """The twin's database and artifact files. ``database``: a URL or an Engine (default: settings.database_url)."""

    def __init__(
        self,
        database: str | URL | Engine | None = None,
        *,
        artifacts_dir: str | os.PathLike | None = None,
        settings: Settings | None = None,
        migrate: bool = True,
    ) -> None:
        self.settings = settings or get_settings()
        if self.settings.pseudonymize_patients and not patients.pseudonym_secret(self.settings):
            raise TwinError(
                "pseudonymize_patients is on but no pseudonym_secret is set (TWIN_IMAGING_PSEUDONYM_SECRET); "
                "refusing to store patients under their PatientID"
            )
        self._owns_engine = not isinstance(database, Engine)
        self.engine = (
            database if isinstance(database, Engine) else create_twin_engine(database or self.settings.database_url)
        )
        if migrate:
            guarded(lambda: upgrade_database(self.engine))
        self.artifacts = ArtifactStore(artifacts_dir or self.settings.artifacts_dir)
        self._sessions = session_factory(self.engine)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> TwinStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def patient_key_for(self, patient_identifier: str) -> str:
        """The twin's key of a PatientID: HMAC-SHA256 pseudonym where configured, else the PatientID itself."""
        return patients.patient_key(self.settings, patient_identifier)

    def resolve_patient_key(self, patient: str) -> str:
        """``patient`` as a twin key where the twin has it, else as a PatientID turned into its key (pseudonym);
        UnknownPatientError (naming the key, never the PatientID) where neither is known. Not audited: the read
        that follows is."""
        with self._transaction() as session:
            try:
                return patients.find_patient(session, patient).patient_key
            except UnknownPatientError:
                key = self.patient_key_for(patient)
                if key == patient:
                    raise
                return patients.find_patient(session, key).patient_key

    # --- changes ---------------------------------------------------------------------------------------------

    def register_patient(
        self, patient_identifier: str, *, actor: str, sex: str | None = None, birth_year: int | None = None
    ) -> v.PatientView:
        """Create the patient's twin (idempotent), e.g. before importing records for a patient not yet imaged."""
        actor, key = check_actor(actor), self.patient_key_for(patient_identifier)
        with self._transaction() as session:
            patient = self._ensure_patient(session, key, sex=patients.normalize_sex(sex), birth_year=birth_year)
            audit(session, actor, "register_patient", key, "patient", patient.id)
            return mapping.patient_view(patient)

    def attach_analysis(
        self,
        result: AnalysisResult,
        *,
        actor: str,
        patient_identifier: str | None = None,
        sent_by: Sequence[str] = (),
    ) -> v.AnalysisView:
        """Attach a pipeline result to its patient's twin; a result already attached is returned as it is. The
        actor, and each of ``sent_by`` (the API callers who pushed the study, where the actor is a relay such as
        the STOW-RS inbox), may read it from then on even where their key's scope is "own"."""
        return analyses.attach_analysis(
            self, result, actor=actor, patient_identifier=patient_identifier, sent_by=sent_by
        )

    def record_observation(self, patient_key: str, observation: v.ObservationInput, *, actor: str) -> v.ObservationView:
        """Record a clinical observation; the same one again (code, time, value) is returned as recorded."""
        actor = check_actor(actor)
        with self._transaction() as session:
            patient = patients.find_patient(session, patient_key)
            return mapping.observation_view(add_observation(session, patient, observation, actor))

    def record_procedure(self, patient_key: str, procedure: v.ProcedureInput, *, actor: str) -> v.ProcedureView:
        """Record a procedure (idempotent on code and date), then evaluate the alert rules."""
        actor = check_actor(actor)
        with self._transaction() as session:
            patient = patients.find_patient(session, patient_key)
            row = add_procedure(session, patient, procedure, actor)
            self._evaluate_alerts(session, patient, actor)
            return mapping.procedure_view(row)

    def import_records(
        self,
        records: v.ImportedRecords,
        *,
        actor: str,
        patient_key: str | None = None,
        create_patient: bool = False,
    ) -> v.ImportOutcome:
        """Record imported observations and procedures in one transaction.

        The patient is ``patient_key``, else the key of ``records.patient_identifier``; ``create_patient`` creates
        its twin where none exists yet.
        """
        actor = check_actor(actor)
        if patient_key is None:
            if not records.patient_identifier:
                raise TwinError("imported records name no patient: pass patient_key")
            patient_key = self.patient_key_for(records.patient_identifier)
        with self._transaction() as session:
            if create_patient:
                patient = self._ensure_patient(session, patients.check_key(patient_key), sex=None, birth_year=None)
            else:
                patient = patients.find_patient(session, patient_key)
            observations = [add_observation(session, patient, o, actor) for o in records.observations]
            procedures = [add_procedure(session, patient, p, actor) for p in records.procedures]
            audit(session, actor, "import_records", patient.patient_key, "patient", patient.id)
            self._evaluate_alerts(session, patient, actor)
            return v.ImportOutcome(
                patient_key=patient.patient_key,
                observations=tuple(mapping.observation_view(o) for o in observations),
                procedures=tuple(mapping.procedure_view(p) for p in procedures),
                skipped=tuple(records.skipped),
            )

    def record_prediction(self, patient_key: str, prediction: v.PredictionInput, *, actor: str) -> v.PredictionView:
        return self.record_predictions(patient_key, [prediction], actor=actor)[0]

    def record_predictions(
        self, patient_key: str, predictions: Sequence[v.PredictionInput], *, actor: str
    ) -> list[v.PredictionView]:
        """Several predictions (e.g. every target under every scenario) in one transaction: all or none."""
        actor = check_actor(actor)
        for prediction in predictions:
            check_prediction(prediction)
        with self._transaction() as session:
            patient = patients.find_patient(session, patient_key)
            return [mapping.prediction_view(add_prediction(session, patient, p, actor)) for p in predictions]

    def _ensure_patient(self, session: Session, key: str, *, sex: str | None, birth_year: int | None) -> Patient:
        pseudonymous = self.settings.pseudonymize_patients
        return patients.ensure_patient(session, key, pseudonymous=pseudonymous, sex=sex, birth_year=birth_year)

    def _evaluate_alerts(self, session: Session, patient: Patient, actor: str) -> None:
        evaluate_alerts(session, patient, actor, volume_loss_percent=self.settings.alert_volume_loss_percent)

    # --- reads -----------------------------------------------------------------------------------------------

    def summary(self, patient_key: str, *, actor: str) -> v.TwinSummary:
        """Everything the twin holds on a patient."""
        actor = check_actor(actor)
        with self._transaction() as session:
            patient = patients.find_patient(session, patient_key)
            audit(session, actor, "read_summary", patient.patient_key, "patient", patient.id)
            return queries.summary_of(session, patient)

    def timeline(self, patient_key: str, *, actor: str) -> list[v.TimelineEvent]:
        """Studies, analyses, observations, procedures, predictions and alerts in clinical time order.

        An analysis sits at its study's time, an alert at the time of the later study it compares."""
        actor = check_actor(actor)
        with self._transaction() as session:
            patient = patients.find_patient(session, patient_key)
            audit(session, actor, "read_timeline", patient.patient_key, "patient", patient.id)
            return queries.timeline_of(session, patient)

    def attached_analysis_id(
        self, series_instance_uid: str, model_id: str, model_version: str, input_uids: Sequence[str]
    ) -> str | None:
        """The public id of the analysis of these input instances of a series by this model, if attached (the key
        ``attach_analysis`` itself attaches once by); not audited: it reads no patient data."""
        return analyses.attached_analysis_id(self, series_instance_uid, model_id, model_version, list(input_uids))

    def record_page_view(self, patient_key: str, view: str, *, actor: str) -> None:
        """A clinician opened one of the twin page's views of a patient (the page's own audit row)."""
        actor = check_actor(actor)
        with self._transaction() as session:
            patient = patients.find_patient(session, patient_key)
            audit(session, actor, "page_view", patient.patient_key, "page", view)

    def latest_measurements(
        self, patient_key: str, *, actor: str, model_id: str | None = None
    ) -> v.AnalysisView | None:
        """The most recent study's latest completed analysis (of ``model_id`` if given), with its measurements."""
        actor = check_actor(actor)
        with self._transaction() as session:
            patient = patients.find_patient(session, patient_key)
            audit(session, actor, "read_latest_measurements", patient.patient_key, "patient", patient.id)
            return queries.latest_analysis(session, patient, model_id)

    def compare_studies(
        self,
        patient_key: str,
        study_a_uid: str,
        study_b_uid: str,
        *,
        actor: str,
        model_id: str | None = None,
        model_version: str | None = None,
    ) -> list[v.StructureChange]:
        """Volume change per structure from study a to study b, measured by one model id and version on both
        (the latest that analysed both, unless named). A structure the model found on one side only counts as
        0 mL on the other (e.g. after a radical nephrectomy); one it did not report on there is left out."""
        actor = check_actor(actor)
        if study_a_uid == study_b_uid:
            raise TwinError(f"compare needs two different studies, got {study_a_uid} twice")
        with self._transaction() as session:
            patient = patients.find_patient(session, patient_key)
            studies = {s.study_instance_uid: s for s in queries.load_studies(session, patient)}
            for uid in (study_a_uid, study_b_uid):
                if uid not in studies:
                    raise TwinError(f"study {uid} is not in this patient's twin")
            audit(session, actor, "compare_studies", patient.patient_key, "study", f"{study_a_uid} {study_b_uid}")
            changes = queries.changes(studies[study_a_uid], studies[study_b_uid], model_id, model_version)
            if changes is None:
                models = {uid: sorted(queries.models_of(studies[uid])) for uid in (study_a_uid, study_b_uid)}
                wanted = f" {model_id or ''} {model_version or ''}".rstrip()
                raise TwinError(f"no model{wanted} analysed both studies; models per study: {models}")
            return changes

    def observation_trend(self, patient_key: str, code: str, *, actor: str) -> v.ObservationTrend:
        """One observation code's values, oldest first, with the change from first to last and the slope per year
        (none where the values do not share one unit)."""
        actor = check_actor(actor)
        with self._transaction() as session:
            patient = patients.find_patient(session, patient_key)
            audit(session, actor, "read_observation_trend", patient.patient_key, "observation", code)
            rows = queries.load_observations(session, patient, code=code)
        return queries.observation_trend_of(code, rows)

    def alerts(self, patient_key: str, *, actor: str) -> list[v.AlertView]:
        actor = check_actor(actor)
        with self._transaction() as session:
            patient = patients.find_patient(session, patient_key)
            audit(session, actor, "read_alerts", patient.patient_key, "patient", patient.id)
            return [mapping.alert_view(a) for a in queries.load_alerts(session, patient)]

    def analysis(self, analysis_id: str, *, actor: str, only_sent_by: str | None = None) -> v.AnalysisView:
        """One analysis (by its public id) with its measurements and artifacts (e.g. the result of a job).
        ``only_sent_by``: an actor whose key reads only what it sent; any other analysis is unknown to it."""
        actor = check_actor(actor)
        with self._transaction() as session:
            row = analyses.find_analysis_row(session, analysis_id, only_sent_by)
            key = row.series.study.patient.patient_key
            audit(session, actor, "read_analysis", key, "analysis", row.public_id)
            return mapping.analysis_view(row, row.series.study, row.series)

    def artifact_file(
        self, analysis_id: str, kind: str, *, actor: str, name: str | None = None, only_sent_by: str | None = None
    ) -> tuple[v.ArtifactView, Path]:
        """The stored file of one artifact of an analysis (``name`` picks among several of a kind, e.g. the
        overlay planes), its bytes checked against its sha256; the read is audited. ``only_sent_by`` as in
        ``analysis``."""
        actor = check_actor(actor)
        with self._transaction() as session:
            row = analyses.find_analysis_row(session, analysis_id, only_sent_by)
            found = analyses.artifact_of(row, kind, name)
            view = mapping.artifact_view(found)
            audit(session, actor, "read_artifact", row.series.study.patient.patient_key, "artifact", found.id)
        self.artifacts.verify(view.uri)
        return view, self.artifacts.path(view.uri)

    # --- plumbing --------------------------------------------------------------------------------------------

    def _transaction(self, *, raw_conflicts: bool = False) -> AbstractContextManager[Session]:
        """A session in one transaction (see ``database.transaction``)."""
        return transaction(self._sessions, raw_conflicts=raw_conflicts)
