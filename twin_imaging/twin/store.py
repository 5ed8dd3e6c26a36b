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

import hmac
import logging
import math
import os
import signal
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from hashlib import sha256
from itertools import pairwise
from typing import TYPE_CHECKING

from sqlalchemy import Engine, select
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, selectinload

from twin_imaging.errors import TwinError, UnknownPatientError
from twin_imaging.settings import Settings, get_settings
from twin_imaging.twin import views as v
from twin_imaging.twin.artifacts import ArtifactStore
from twin_imaging.twin.database import create_twin_engine, session_factory, upgrade_database
from twin_imaging.twin.schema import (
    Alert,
    Analysis,
    Artifact,
    AuditEntry,
    Measurement,
    Observation,
    Patient,
    Prediction,
    Procedure,
    Series,
    Study,
)

if TYPE_CHECKING:  # the store does not need the pipeline's imports (ONNX Runtime, highdicom) to run
    from twin_imaging.pipeline import AnalysisResult

log = logging.getLogger(__name__)

PSEUDONYM_HEX_CHARS = 32  # 128 bits of HMAC-SHA256
_KEY_MAX = 64
_TIMELINE_RANK = {"procedure": 0, "study": 1, "analysis": 2, "observation": 3, "prediction": 4, "alert": 5}


@dataclass(frozen=True)
class _Facts:
    """What an AnalysisResult says about patient, study, series and analysis, validated, before any write."""

    patient_identifier: str
    sex: str | None
    birth_year: int | None
    study_uid: str
    study_date: date | None
    study_time: time | None
    study_description: str
    series_uid: str
    modality: str
    series_number: int | None
    series_description: str
    model_id: str
    model_version: str
    onnx_sha256: str
    code_version: str
    input_uids: list[str]
    structures_not_found: list[str]
    started_at: datetime
    finished_at: datetime
    structures: list[dict]
    outputs: list[tuple[str, str, str, str | None]]  # kind, file, sha256, SOP Instance UID


class TwinStore:
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
        if self.settings.pseudonymize_patients and not self._secret():
            raise TwinError(
                "pseudonymize_patients is on but no pseudonym_secret is set (TWIN_IMAGING_PSEUDONYM_SECRET); "
                "refusing to store patients under their PatientID"
            )
        self._owns_engine = not isinstance(database, Engine)
        self.engine = (
            database if isinstance(database, Engine) else create_twin_engine(database or self.settings.database_url)
        )
        if migrate:
            self._guard(lambda: upgrade_database(self.engine))
        self.artifacts = ArtifactStore(artifacts_dir or self.settings.artifacts_dir)
        self._sessions = session_factory(self.engine)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def __enter__(self) -> TwinStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- keys ------------------------------------------------------------------------------------------------

    def _secret(self) -> bytes:
        secret = self.settings.pseudonym_secret
        return secret.get_secret_value().encode("utf-8") if secret else b""

    def patient_key_for(self, patient_identifier: str) -> str:
        """The twin's key of a PatientID: HMAC-SHA256 pseudonym where configured, else the PatientID itself."""
        identifier = (patient_identifier or "").strip()
        if not identifier:
            raise TwinError("a patient needs a non-empty PatientID")
        if self.settings.pseudonymize_patients:
            return hmac.new(self._secret(), identifier.encode("utf-8"), sha256).hexdigest()[:PSEUDONYM_HEX_CHARS]
        if len(identifier) > _KEY_MAX:
            raise TwinError(f"a PatientID has at most {_KEY_MAX} characters, got {len(identifier)}")
        return identifier

    # --- changes ---------------------------------------------------------------------------------------------

    def register_patient(
        self, patient_identifier: str, *, actor: str, sex: str | None = None, birth_year: int | None = None
    ) -> v.PatientView:
        """Create the patient's twin (idempotent), e.g. before importing records for a patient not yet imaged."""
        actor, key = _check_actor(actor), self.patient_key_for(patient_identifier)
        with self._transaction() as session:
            patient = self._ensure_patient(session, key, sex=_sex(sex), birth_year=birth_year)
            _audit(session, actor, "register_patient", key, "patient", patient.id)
            return _patient_view(patient)

    def attach_analysis(
        self, result: AnalysisResult, *, actor: str, patient_identifier: str | None = None
    ) -> v.AnalysisView:
        """Attach a pipeline result to its patient's twin; a result already attached is returned as it is."""
        actor = _check_actor(actor)
        facts = _facts(result, patient_identifier)
        key = self.patient_key_for(facts.patient_identifier)
        existing = self._existing_analysis(facts, key, actor)
        if existing is not None:
            return existing
        stored = [
            (self.artifacts.put(result.out_dir / file, kind=kind, name=file, expected_sha256=digest), sop_uid)
            for kind, file, digest, sop_uid in facts.outputs
        ]
        document = result.document.to_json().encode("utf-8")
        stored.append((self.artifacts.put(document, kind="results_json", name="results.json"), None))
        for attempt in (1, 2):
            try:
                view = self._insert_analysis(facts, key, stored, actor)
                break
            except IntegrityError:  # a concurrent writer attached it (or created its patient or study) first
                existing = self._existing_analysis(facts, key, actor)
                if existing is not None:
                    return existing
                if attempt == 2:
                    raise TwinError(
                        "the analysis could not be attached: a concurrent change conflicted twice"
                    ) from None
        self._crash_point("attach_after_commit")
        return view

    def _existing_analysis(self, facts: _Facts, key: str, actor: str) -> v.AnalysisView | None:
        with self._transaction() as session:
            found = session.execute(
                select(Analysis, Series, Study, Patient)
                .join(Analysis.series)
                .join(Series.study)
                .join(Study.patient)
                .where(
                    Series.series_instance_uid == facts.series_uid,
                    Analysis.model_id == facts.model_id,
                    Analysis.model_version == facts.model_version,
                )
            ).first()
            if found is None:
                return None
            analysis, series, study, patient = found
            if patient.patient_key != key:
                raise TwinError(f"series {facts.series_uid} is already in the twin under another patient")
            _audit(session, actor, "read_analysis", key, "analysis", analysis.id, "attach: already attached")
            return _analysis_view(analysis, study, series)

    def _insert_analysis(self, facts: _Facts, key: str, stored: list, actor: str) -> v.AnalysisView:
        with self._transaction(raw_conflicts=True) as session:
            patient = self._ensure_patient(session, key, sex=facts.sex, birth_year=facts.birth_year)
            study = session.scalar(select(Study).where(Study.study_instance_uid == facts.study_uid))
            if study is None:
                study = Study(
                    patient_id=patient.id,
                    study_instance_uid=facts.study_uid,
                    study_date=facts.study_date,
                    study_time=facts.study_time,
                    description=facts.study_description,
                )
                session.add(study)
                session.flush()
            elif study.patient_id != patient.id:
                raise TwinError(f"study {facts.study_uid} is already in the twin under another patient")
            series = session.scalar(select(Series).where(Series.series_instance_uid == facts.series_uid))
            if series is None:
                series = Series(
                    study_id=study.id,
                    series_instance_uid=facts.series_uid,
                    modality=facts.modality,
                    series_number=facts.series_number,
                    series_description=facts.series_description,
                    n_instances=len(facts.input_uids),
                )
                session.add(series)
                session.flush()
            elif series.study_id != study.id:
                raise TwinError(f"series {facts.series_uid} is already in the twin under another study")
            analysis = Analysis(
                series_id=series.id,
                model_id=facts.model_id,
                model_version=facts.model_version,
                onnx_sha256=facts.onnx_sha256,
                code_version=facts.code_version,
                input_uids=facts.input_uids,
                structures_not_found=facts.structures_not_found,
                started_at=facts.started_at,
                finished_at=facts.finished_at,
                status="completed",
            )
            analysis.measurements = [Measurement(**s) for s in facts.structures]
            analysis.artifacts = [
                Artifact(
                    kind=a.kind,
                    name=a.name,
                    uri=a.uri,
                    sha256=a.sha256,
                    size_bytes=a.size_bytes,
                    media_type=a.media_type,
                    sop_instance_uid=sop_uid,
                )
                for a, sop_uid in stored
            ]
            session.add(analysis)
            session.flush()
            _audit(session, actor, "attach_analysis", key, "analysis", analysis.id)
            self._evaluate_alerts(session, patient, actor)
            session.flush()
            self._crash_point("attach_before_commit")
            log.info("attached analysis %d (series row %d, patient row %d)", analysis.id, series.id, patient.id)
            return _analysis_view(analysis, study, series)

    def record_observation(self, patient_key: str, observation: v.ObservationInput, *, actor: str) -> v.ObservationView:
        """Record a clinical observation; the same one again (code, time, value) is returned as recorded."""
        actor = _check_actor(actor)
        with self._transaction() as session:
            patient = _patient(session, patient_key)
            return _observation_view(self._add_observation(session, patient, observation, actor))

    def record_procedure(self, patient_key: str, procedure: v.ProcedureInput, *, actor: str) -> v.ProcedureView:
        """Record a procedure (idempotent on code and date), then evaluate the alert rules."""
        actor = _check_actor(actor)
        with self._transaction() as session:
            patient = _patient(session, patient_key)
            row = self._add_procedure(session, patient, procedure, actor)
            self._evaluate_alerts(session, patient, actor)
            return _procedure_view(row)

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
        actor = _check_actor(actor)
        if patient_key is None:
            if not records.patient_identifier:
                raise TwinError("imported records name no patient: pass patient_key")
            patient_key = self.patient_key_for(records.patient_identifier)
        with self._transaction() as session:
            if create_patient:
                patient = self._ensure_patient(session, _check_key(patient_key), sex=None, birth_year=None)
            else:
                patient = _patient(session, patient_key)
            observations = [self._add_observation(session, patient, o, actor) for o in records.observations]
            procedures = [self._add_procedure(session, patient, p, actor) for p in records.procedures]
            _audit(session, actor, "import_records", patient.patient_key, "patient", patient.id)
            self._evaluate_alerts(session, patient, actor)
            return v.ImportOutcome(
                patient_key=patient.patient_key,
                observations=tuple(_observation_view(o) for o in observations),
                procedures=tuple(_procedure_view(p) for p in procedures),
                skipped=tuple(records.skipped),
            )

    def record_prediction(self, patient_key: str, prediction: v.PredictionInput, *, actor: str) -> v.PredictionView:
        actor = _check_actor(actor)
        p = prediction
        for name, value in (("probability", p.probability), ("lower", p.lower), ("upper", p.upper)):
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= 1.0):
                raise TwinError(f"prediction {name} must be a probability in [0, 1], got {value}")
        if (p.lower is not None and p.lower > p.probability) or (p.upper is not None and p.upper < p.probability):
            raise TwinError(f"prediction interval [{p.lower}, {p.upper}] does not contain {p.probability}")
        for name in ("target", "scenario", "model_id", "model_version"):
            if not getattr(p, name).strip():
                raise TwinError(f"a prediction needs a {name}")
        with self._transaction() as session:
            patient = _patient(session, patient_key)
            if p.analysis_id is not None and self._analysis_of(session, patient, p.analysis_id) is None:
                raise TwinError(f"analysis {p.analysis_id} is not in this patient's twin")
            row = Prediction(
                patient_id=patient.id,
                analysis_id=p.analysis_id,
                target=p.target,
                scenario=p.scenario,
                probability=p.probability,
                lower=p.lower,
                upper=p.upper,
                model_id=p.model_id,
                model_version=p.model_version,
            )
            session.add(row)
            session.flush()
            _audit(session, actor, "record_prediction", patient.patient_key, "prediction", row.id)
            return _prediction_view(row)

    def _ensure_patient(self, session: Session, key: str, *, sex: str | None, birth_year: int | None) -> Patient:
        patient = session.scalar(select(Patient).where(Patient.patient_key == key))
        if patient is None:
            patient = Patient(patient_key=key, pseudonymous=self.settings.pseudonymize_patients)
            session.add(patient)
        patient.sex = patient.sex or sex
        patient.birth_year = patient.birth_year or birth_year
        session.flush()
        return patient

    def _add_observation(self, session: Session, patient: Patient, o: v.ObservationInput, actor: str) -> Observation:
        if not (o.code.strip() and o.code_system.strip()):
            raise TwinError("an observation needs a code and a code system")
        if isinstance(o.value, bool) or not isinstance(o.value, int | float) or not math.isfinite(o.value):
            raise TwinError(f"observation {o.code} needs a finite numeric value, got {o.value!r}")
        if not isinstance(o.effective_at, datetime):
            raise TwinError(f"observation {o.code} needs effective_at as a datetime, got {o.effective_at!r}")
        at = _utc(o.effective_at)
        row = session.scalar(
            select(Observation).where(
                Observation.patient_id == patient.id,
                Observation.code_system == o.code_system,
                Observation.code == o.code,
                Observation.effective_at == at,
            )
        )
        if row is not None:
            if row.value != float(o.value) or row.unit != o.unit:
                raise TwinError(
                    f"observation {o.code} at {at.isoformat()} is already recorded as {row.value:g} {row.unit}, "
                    f"not {o.value:g} {o.unit}"
                )
            return row
        row = Observation(
            patient_id=patient.id,
            code=o.code,
            code_system=o.code_system,
            display=o.display,
            value=float(o.value),
            unit=o.unit,
            effective_at=at,
            source=o.source,
        )
        session.add(row)
        session.flush()
        _audit(session, actor, "record_observation", patient.patient_key, "observation", row.id)
        return row

    def _add_procedure(self, session: Session, patient: Patient, p: v.ProcedureInput, actor: str) -> Procedure:
        if not (p.code.strip() and p.code_system.strip()):
            raise TwinError("a procedure needs a code and a code system")
        if not isinstance(p.performed_on, date):
            raise TwinError(f"procedure {p.code} needs performed_on as a date, got {p.performed_on!r}")
        day = p.performed_on.date() if isinstance(p.performed_on, datetime) else p.performed_on
        row = session.scalar(
            select(Procedure).where(
                Procedure.patient_id == patient.id,
                Procedure.code_system == p.code_system,
                Procedure.code == p.code,
                Procedure.performed_on == day,
            )
        )
        if row is not None:
            return row
        row = Procedure(
            patient_id=patient.id,
            code=p.code,
            code_system=p.code_system,
            display=p.display,
            performed_on=day,
            laterality=p.laterality,
            source=p.source,
        )
        session.add(row)
        session.flush()
        _audit(session, actor, "record_procedure", patient.patient_key, "procedure", row.id)
        return row

    # --- alert rules -----------------------------------------------------------------------------------------

    def _evaluate_alerts(self, session: Session, patient: Patient, actor: str) -> None:
        """volume_loss: a structure's volume falls by more than the threshold between a study before a procedure
        and one after it (before the next procedure), or, with no procedure recorded, between consecutive studies.
        A finding already alerted (same structure and analyses) is not alerted again."""
        threshold = self.settings.alert_volume_loss_percent
        session.flush()
        session.expire_all()  # collections loaded before this change's rows were added are read again
        studies = sorted(
            (s for s in session.scalars(select(Study).where(Study.patient_id == patient.id)) if s.study_date),
            key=_study_order,
        )
        days = sorted(
            {p.performed_on for p in session.scalars(select(Procedure).where(Procedure.patient_id == patient.id))}
        )
        pairs: list[tuple[Study, Study]] = []
        if days:
            for i, day in enumerate(days):
                before = [s for s in studies if s.study_date < day]
                if before:
                    until = days[i + 1] if i + 1 < len(days) else date.max
                    pairs += [(before[-1], s) for s in studies if day < s.study_date < until]
        else:
            pairs = list(pairwise(studies))
        for study_a, study_b in pairs:
            for change in self._changes(session, study_a, study_b) or ():
                if change.change_percent is None or -change.change_percent <= threshold:
                    continue
                dedup_key = f"volume_loss:{change.structure}:{change.analysis_a_id}:{change.analysis_b_id}"
                if session.scalar(select(Alert.id).where(Alert.patient_id == patient.id, Alert.dedup_key == dedup_key)):
                    continue
                alert = Alert(
                    patient_id=patient.id,
                    analysis_id=change.analysis_b_id,
                    rule="volume_loss",
                    severity="warning",
                    structure=change.structure,
                    message=(
                        f"{change.structure} volume fell {-change.change_percent:.1f} % "
                        f"({change.volume_a_ml:.1f} mL on {change.study_a_date} to {change.volume_b_ml:.1f} mL on "
                        f"{change.study_b_date}), more than the {threshold:g} % threshold "
                        f"({change.model_id} {change.model_version})"
                    ),
                    dedup_key=dedup_key,
                )
                session.add(alert)
                session.flush()
                _audit(session, actor, "create_alert", patient.patient_key, "alert", alert.id, alert.rule)

    # --- reads -----------------------------------------------------------------------------------------------

    def summary(self, patient_key: str, *, actor: str) -> v.TwinSummary:
        """Everything the twin holds on a patient."""
        actor = _check_actor(actor)
        with self._transaction() as session:
            patient = _patient(session, patient_key)
            _audit(session, actor, "read_summary", patient.patient_key, "patient", patient.id)
            studies = self._studies(session, patient)
            return v.TwinSummary(
                patient=_patient_view(patient),
                studies=tuple(_study_view(s) for s in studies),
                analyses=tuple(_analysis_view(a, s, se) for s, se, a in _analyses(studies)),
                observations=tuple(_observation_view(o) for o in self._observations(session, patient)),
                procedures=tuple(_procedure_view(p) for p in self._procedures(session, patient)),
                predictions=tuple(_prediction_view(p) for p in self._predictions(session, patient)),
                alerts=tuple(_alert_view(a) for a in self._alerts(session, patient)),
            )

    def timeline(self, patient_key: str, *, actor: str) -> list[v.TimelineEvent]:
        """Studies, analyses, observations, procedures, predictions and alerts in clinical time order.

        An analysis sits at its study's time, an alert at the time of the later study it compares."""
        actor = _check_actor(actor)
        with self._transaction() as session:
            patient = _patient(session, patient_key)
            _audit(session, actor, "read_timeline", patient.patient_key, "patient", patient.id)
            studies = self._studies(session, patient)
            events = [v.TimelineEvent(_study_at(s), "study", _study_summary(s), s.study_instance_uid) for s in studies]
            analysis_at: dict[int, datetime] = {}
            for study, series, a in _analyses(studies):
                analysis_at[a.id] = _study_at(study)
                text = (
                    f"{a.model_id} {a.model_version} on series {series.series_number}: {len(a.measurements)} structures"
                )
                events.append(v.TimelineEvent(analysis_at[a.id], "analysis", text, str(a.id)))
            for o in self._observations(session, patient):
                events.append(
                    v.TimelineEvent(o.effective_at, "observation", f"{o.display}: {o.value:g} {o.unit}", str(o.id))
                )
            for p in self._procedures(session, patient):
                at = datetime.combine(p.performed_on, time(0), tzinfo=UTC)
                events.append(v.TimelineEvent(at, "procedure", p.display, str(p.id)))
            for p in self._predictions(session, patient):
                text = f"{p.target} under {p.scenario}: {p.probability:.2f}"
                events.append(v.TimelineEvent(p.created_at, "prediction", text, str(p.id)))
            for a in self._alerts(session, patient):
                events.append(
                    v.TimelineEvent(analysis_at.get(a.analysis_id, a.created_at), "alert", a.message, str(a.id))
                )
            return sorted(events, key=lambda e: (e.at, _TIMELINE_RANK[e.kind]))  # stable: ties keep their order

    def latest_measurements(
        self, patient_key: str, *, actor: str, model_id: str | None = None
    ) -> v.AnalysisView | None:
        """The most recent study's latest completed analysis (of ``model_id`` if given), with its measurements."""
        actor = _check_actor(actor)
        with self._transaction() as session:
            patient = _patient(session, patient_key)
            _audit(session, actor, "read_latest_measurements", patient.patient_key, "patient", patient.id)
            found = [
                (s, se, a)
                for s, se, a in _analyses(self._studies(session, patient))
                if a.status == "completed" and (model_id is None or a.model_id == model_id)
            ]
            if not found:
                return None
            study, series, analysis = max(found, key=lambda f: (_study_order(f[0]), _finished(f[2]), f[2].id))
            return _analysis_view(analysis, study, series)

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
        actor = _check_actor(actor)
        if study_a_uid == study_b_uid:
            raise TwinError(f"compare needs two different studies, got {study_a_uid} twice")
        with self._transaction() as session:
            patient = _patient(session, patient_key)
            studies = {s.study_instance_uid: s for s in self._studies(session, patient)}
            for uid in (study_a_uid, study_b_uid):
                if uid not in studies:
                    raise TwinError(f"study {uid} is not in this patient's twin")
            _audit(session, actor, "compare_studies", patient.patient_key, "study", f"{study_a_uid} {study_b_uid}")
            changes = self._changes(session, studies[study_a_uid], studies[study_b_uid], model_id, model_version)
            if changes is None:
                models = {uid: sorted(_models(studies[uid])) for uid in (study_a_uid, study_b_uid)}
                wanted = f" {model_id or ''} {model_version or ''}".rstrip()
                raise TwinError(f"no model{wanted} analysed both studies; models per study: {models}")
            return changes

    def observation_trend(self, patient_key: str, code: str, *, actor: str) -> v.ObservationTrend:
        """One observation code's values, oldest first, with the change from first to last and the slope per year
        (none where the values do not share one unit)."""
        actor = _check_actor(actor)
        with self._transaction() as session:
            patient = _patient(session, patient_key)
            _audit(session, actor, "read_observation_trend", patient.patient_key, "observation", code)
            rows = self._observations(session, patient, code=code)
        if not rows:
            return v.ObservationTrend(code=code, display="", unit="")
        units = {o.unit for o in rows}
        unit = units.pop() if len(units) == 1 else ""
        views = tuple(_observation_view(o) for o in rows)
        if not unit or len(rows) < 2:
            return v.ObservationTrend(code=code, display=rows[-1].display, unit=unit, observations=views)
        first, last = rows[0].value, rows[-1].value
        return v.ObservationTrend(
            code=code,
            display=rows[-1].display,
            unit=unit,
            observations=views,
            change=last - first,
            change_percent=(last - first) / first * 100.0 if first else None,
            slope_per_year=_slope_per_year([(o.effective_at, o.value) for o in rows]),
        )

    def alerts(self, patient_key: str, *, actor: str) -> list[v.AlertView]:
        actor = _check_actor(actor)
        with self._transaction() as session:
            patient = _patient(session, patient_key)
            _audit(session, actor, "read_alerts", patient.patient_key, "patient", patient.id)
            return [_alert_view(a) for a in self._alerts(session, patient)]

    # --- queries ---------------------------------------------------------------------------------------------

    def _studies(self, session: Session, patient: Patient) -> list[Study]:
        query = (
            select(Study)
            .where(Study.patient_id == patient.id)
            .options(
                selectinload(Study.series)
                .selectinload(Series.analyses)
                .options(selectinload(Analysis.measurements), selectinload(Analysis.artifacts))
            )
        )
        return sorted(session.scalars(query), key=_study_order)

    def _observations(self, session: Session, patient: Patient, *, code: str | None = None) -> list[Observation]:
        query = select(Observation).where(Observation.patient_id == patient.id)
        if code is not None:
            query = query.where(Observation.code == code)
        return list(session.scalars(query.order_by(Observation.effective_at, Observation.id)))

    def _procedures(self, session: Session, patient: Patient) -> list[Procedure]:
        query = select(Procedure).where(Procedure.patient_id == patient.id)
        return list(session.scalars(query.order_by(Procedure.performed_on, Procedure.id)))

    def _predictions(self, session: Session, patient: Patient) -> list[Prediction]:
        query = select(Prediction).where(Prediction.patient_id == patient.id)
        return list(session.scalars(query.order_by(Prediction.created_at, Prediction.id)))

    def _alerts(self, session: Session, patient: Patient) -> list[Alert]:
        query = select(Alert).where(Alert.patient_id == patient.id)
        return list(session.scalars(query.order_by(Alert.created_at, Alert.id)))

    def _analysis_of(self, session: Session, patient: Patient, analysis_id: int) -> Analysis | None:
        query = select(Analysis).join(Analysis.series).join(Series.study).where(Analysis.id == analysis_id)
        return session.scalar(query.where(Study.patient_id == patient.id))

    def _changes(
        self,
        session: Session,
        study_a: Study,
        study_b: Study,
        model_id: str | None = None,
        model_version: str | None = None,
    ) -> list[v.StructureChange] | None:
        """Changes a → b by the model both share (the latest, or the one named); None if they share none."""
        latest_a, latest_b = _latest_by_model(study_a), _latest_by_model(study_b)
        common = [
            m
            for m in latest_a.keys() & latest_b.keys()
            if (model_id is None or m[0] == model_id) and (model_version is None or m[1] == model_version)
        ]
        if not common:
            return None
        chosen = max(common, key=lambda m: (max(_finished(latest_a[m]), _finished(latest_b[m])), m))
        a, b = latest_a[chosen], latest_b[chosen]
        volumes_a = {m.structure: m for m in a.measurements}
        volumes_b = {m.structure: m for m in b.measurements}
        changes = []
        for name in [*volumes_a, *(n for n in volumes_b if n not in volumes_a)]:
            measured_a, measured_b = volumes_a.get(name), volumes_b.get(name)
            if measured_a is None and name not in a.structures_not_found:
                continue  # the model did not report on it in a
            if measured_b is None and name not in b.structures_not_found:
                continue
            va = measured_a.volume_ml if measured_a else 0.0
            vb = measured_b.volume_ml if measured_b else 0.0
            changes.append(
                v.StructureChange(
                    structure=name,
                    snomed_code=(measured_a or measured_b).snomed_code,
                    volume_a_ml=va,
                    volume_b_ml=vb,
                    change_ml=vb - va,
                    change_percent=(vb - va) / va * 100.0 if va > 0 else None,
                    study_a_uid=study_a.study_instance_uid,
                    study_b_uid=study_b.study_instance_uid,
                    study_a_date=study_a.study_date,
                    study_b_date=study_b.study_date,
                    model_id=chosen[0],
                    model_version=chosen[1],
                    analysis_a_id=a.id,
                    analysis_b_id=b.id,
                )
            )
        return changes

    # --- plumbing --------------------------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, *, raw_conflicts: bool = False) -> Iterator[Session]:
        """A session in one transaction, committed when the block ends; database failures become TwinError (a
        constraint violation stays an IntegrityError with ``raw_conflicts``, for the caller to resolve)."""
        try:
            with self._sessions() as session, session.begin():
                yield session
        except IntegrityError:
            if raw_conflicts:
                raise
            raise TwinError("a concurrent change to this patient's twin conflicted with this one; retry it") from None
        except DBAPIError as error:
            raise _database_error(error) from None

    def _guard(self, call: Callable[[], None]) -> None:
        try:
            call()
        except DBAPIError as error:
            raise _database_error(error) from None

    def _crash_point(self, name: str) -> None:
        """Test hook (settings.test_crash_point): die here, as a power cut or OOM kill would."""
        if self.settings.test_crash_point == name:
            os.kill(os.getpid(), signal.SIGKILL)


# --- helpers ---------------------------------------------------------------------------------------------------


def _database_error(error: DBAPIError) -> TwinError:
    reason = str(error.orig).strip().splitlines()[0] if error.orig is not None else type(error).__name__
    return TwinError(f"the twin database failed: {type(error.orig).__name__}: {reason}")


def _check_actor(actor: str) -> str:
    if not isinstance(actor, str) or not actor.strip():
        raise TwinError("every read and change of the twin names its actor (who)")
    if len(actor) > 128:
        raise TwinError("an actor name has at most 128 characters")
    return actor.strip()


def _check_key(patient_key: str) -> str:
    if not isinstance(patient_key, str) or not patient_key.strip() or len(patient_key) > _KEY_MAX:
        raise TwinError(f"a patient key is a non-empty text of at most {_KEY_MAX} characters, got {patient_key!r}")
    return patient_key


def _patient(session: Session, patient_key: str) -> Patient:
    patient = session.scalar(select(Patient).where(Patient.patient_key == _check_key(patient_key)))
    if patient is None:
        raise UnknownPatientError(patient_key)
    return patient


def _audit(
    session: Session,
    actor: str,
    action: str,
    patient_key: str | None,
    object_type: str,
    object_id: object = None,
    detail: str | None = None,
) -> None:
    object_id = None if object_id is None else str(object_id)[:255]
    session.add(
        AuditEntry(
            actor=actor,
            action=action,
            patient_key=patient_key,
            object_type=object_type,
            object_id=object_id,
            detail=detail,
        )
    )


def _utc(value: datetime) -> datetime:
    """Aware UTC; a naive time is taken as UTC."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _sex(value: str | None) -> str | None:
    value = (value or "").strip().upper()
    return value if value in ("M", "F", "O") else None


def _dicom_date(value: str) -> date | None:
    try:
        return datetime.strptime(value.strip()[:8], "%Y%m%d").date()
    except ValueError:
        return None


def _dicom_time(value: str) -> time | None:
    digits = value.strip().split(".")[0]
    if not digits.isdigit() or len(digits) not in (2, 4, 6):
        return None
    try:
        return time(*(int(digits[i : i + 2]) for i in range(0, len(digits), 2)))
    except ValueError:
        return None


def _facts(result: AnalysisResult, patient_identifier: str | None) -> _Facts:
    info, document, report = result.input.volume.info, result.document, result.input.report
    study_uid = report.study_instance_uid or info.study_instance_uid
    series_uid = report.series_instance_uid or info.series_instance_uid
    if not (study_uid and series_uid):
        raise TwinError(
            "the analysis has no StudyInstanceUID or SeriesInstanceUID (a NIfTI input?); the twin records DICOM "
            "studies only"
        )
    identifier = (patient_identifier or info.patient_id or "").strip()
    if not identifier:
        raise TwinError("the analysed study has no PatientID: pass patient_identifier")
    birth = info.patient_birth_date.strip()
    uids = list(dict.fromkeys(s.sop_instance_uid for s in result.input.volume.sources if s.sop_instance_uid))
    finished = _utc(document.created)
    elapsed = sum(t for name, t in document.timings_s.items() if not name.startswith("segment."))
    structures = [
        dict(
            structure=s.name,
            label=s.label,
            snomed_code=s.snomed_code,
            snomed_meaning=s.snomed_meaning,
            laterality=s.laterality,
            voxel_count=s.voxel_count,
            volume_ml=s.volume_ml,
            hu_mean=s.hu_mean,
            hu_std=s.hu_std,
            max_diameter_mm=s.max_diameter_mm,
        )
        for s in document.structures
    ]
    return _Facts(
        patient_identifier=identifier,
        sex=_sex(info.patient_sex),
        birth_year=int(birth[:4]) if birth[:4].isdigit() else None,
        study_uid=study_uid,
        study_date=_dicom_date(info.study_date),
        study_time=_dicom_time(info.study_time),
        study_description=info.study_description[:255],
        series_uid=series_uid,
        modality=report.modality or info.modality,
        series_number=report.series_number,
        series_description=report.series_description[:255],
        model_id=document.model.model_id,
        model_version=document.model.version,
        onnx_sha256=document.model.onnx_sha256,
        code_version=document.software.get("version", ""),
        input_uids=uids,
        structures_not_found=list(document.structures_not_found),
        started_at=finished - timedelta(seconds=elapsed),
        finished_at=finished,
        structures=structures,
        outputs=[(o.kind, o.file, o.sha256, o.sop_instance_uid) for o in document.outputs],
    )


def _slope_per_year(points: list[tuple[datetime, float]]) -> float | None:
    """Least-squares slope of value against time, per year; None where all times are equal."""
    years = [(at - points[0][0]).total_seconds() / (365.25 * 86400) for at, _ in points]
    values = [value for _, value in points]
    mean_t, mean_v = sum(years) / len(years), sum(values) / len(values)
    spread = sum((t - mean_t) ** 2 for t in years)
    if spread == 0:
        return None
    return sum((t - mean_t) * (x - mean_v) for t, x in zip(years, values, strict=True)) / spread


def _study_order(study: Study) -> tuple:
    return (study.study_date or date.min, study.study_time or time(0), study.id)


def _study_at(study: Study) -> datetime:
    if study.study_date is None:
        return study.created_at
    return datetime.combine(study.study_date, study.study_time or time(0), tzinfo=UTC)


def _study_summary(study: Study) -> str:
    modalities = "/".join(sorted({s.modality for s in study.series if s.modality}))
    return f"{modalities or 'imaging'} study: {study.description}".rstrip(": ")


def _finished(analysis: Analysis) -> datetime:
    return analysis.finished_at or analysis.started_at


def _analyses(studies: Sequence[Study]) -> list[tuple[Study, Series, Analysis]]:
    found = [(s, se, a) for s in studies for se in s.series for a in se.analyses]
    return sorted(found, key=lambda f: (_study_order(f[0]), _finished(f[2]), f[2].id))


def _latest_by_model(study: Study) -> dict[tuple[str, str], Analysis]:
    latest: dict[tuple[str, str], Analysis] = {}
    for _, _, a in _analyses([study]):
        if a.status == "completed":
            latest[(a.model_id, a.model_version)] = a  # sorted by finish time: the last one wins
    return latest


def _models(study: Study) -> set[str]:
    return {f"{m} {ver}" for m, ver in _latest_by_model(study)}


def _patient_view(p: Patient) -> v.PatientView:
    return v.PatientView(patient_key=p.patient_key, pseudonymous=p.pseudonymous, sex=p.sex, birth_year=p.birth_year)


def _study_view(s: Study) -> v.StudyView:
    series = tuple(
        v.SeriesView(se.series_instance_uid, se.modality, se.series_number, se.series_description, se.n_instances)
        for se in sorted(s.series, key=lambda se: (se.series_number or 0, se.id))
    )
    modalities = tuple(sorted({se.modality for se in s.series if se.modality}))
    return v.StudyView(s.study_instance_uid, s.study_date, s.description, modalities, series)


def _analysis_view(a: Analysis, study: Study, series: Series) -> v.AnalysisView:
    return v.AnalysisView(
        analysis_id=a.id,
        study_instance_uid=study.study_instance_uid,
        series_instance_uid=series.series_instance_uid,
        model_id=a.model_id,
        model_version=a.model_version,
        onnx_sha256=a.onnx_sha256,
        code_version=a.code_version,
        input_uids=tuple(a.input_uids),
        started_at=a.started_at,
        finished_at=a.finished_at,
        status=a.status,
        measurements=tuple(
            v.MeasurementView(
                structure=m.structure,
                snomed_code=m.snomed_code,
                snomed_meaning=m.snomed_meaning,
                laterality=m.laterality,
                volume_ml=m.volume_ml,
                hu_mean=m.hu_mean,
                hu_std=m.hu_std,
                max_diameter_mm=m.max_diameter_mm,
            )
            for m in sorted(a.measurements, key=lambda m: m.label)
        ),
        artifacts=tuple(
            v.ArtifactView(
                kind=x.kind, uri=x.uri, sha256=x.sha256, size_bytes=x.size_bytes, media_type=x.media_type, name=x.name
            )
            for x in sorted(a.artifacts, key=lambda x: x.id)
        ),
    )


def _observation_view(o: Observation) -> v.ObservationView:
    return v.ObservationView(o.id, o.code, o.code_system, o.display, o.value, o.unit, o.effective_at, o.source)


def _procedure_view(p: Procedure) -> v.ProcedureView:
    return v.ProcedureView(p.id, p.code, p.code_system, p.display, p.performed_on, p.laterality, p.source)


def _prediction_view(p: Prediction) -> v.PredictionView:
    return v.PredictionView(
        p.id,
        p.target,
        p.scenario,
        p.probability,
        p.lower,
        p.upper,
        p.model_id,
        p.model_version,
        p.analysis_id,
        p.created_at,
    )


def _alert_view(a: Alert) -> v.AlertView:
    return v.AlertView(a.id, a.rule, a.severity, a.message, a.created_at, a.structure)
