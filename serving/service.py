"""twin-imaging's inference API (BentoML 1.4): thin over ``twin_imaging``; runs on ONNX Runtime, never torch.

    bentoml serve serving.service:TwinImaging --host 127.0.0.1 --port 3000

Doors: analyse a study (synchronously when small, as a job otherwise), read one analysis and download its files,
a STOW-RS endpoint a PACS or router pushes to (``/dicomweb/studies``), the patient's twin (JSON or FHIR), its
timeline and study comparison, clinical observations, outcome predictions per surgical scenario, the loaded models.
Every route but health, readiness, metrics and the OpenAPI document needs an API key (``serving.auth``); every
access to patient data is written to the twin's audit log as ``api:<key name>``. Analyses run off the request
threads, on the analysis queue (``serving.analysis_runs``: synchronous requests, jobs, the STOW-RS inbox watcher).
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import bentoml
from pydantic import Field
from starlette.responses import FileResponse

from serving.analysis_queue import AnalysisQueueFull
from serving.analysis_runs import AnalysisRuns
from serving.api_types import MEDIA_SUFFIX, AnalysisId, ArtifactKind, JobId, PatientId, Uid, caller_actor, caller_scope
from serving.auth import ApiKeyMiddleware
from serving.dicomweb import dicomweb_app
from serving.docs_page import OwnDocsPage
from serving.errors import ApiError, json_errors
from serving.hardening import harden_bentoml
from serving.openapi import document_dicomweb_routes
from serving.page.app import page_app
from twin_imaging.errors import ModelError
from twin_imaging.expert_intake import receive_expert_seg
from twin_imaging.inference.segment import Segmenter
from twin_imaging.models.package import default_segmentation_package
from twin_imaging.outcome.model import OutcomeModel
from twin_imaging.outcome.scenarios import DEFAULT_MARGIN_MM, SCENARIOS, predict_scenarios, prediction_inputs
from twin_imaging.outcome.twin_inputs import is_scenario_input
from twin_imaging.outcome.twin_scenarios import current_scenarios
from twin_imaging.scenario_refresh import refresh_scenarios
from twin_imaging.settings import get_settings
from twin_imaging.twin import views as v
from twin_imaging.twin.fhir_export import export_bundle
from twin_imaging.twin.store import TwinStore

log = logging.getLogger(__name__)
harden_bentoml()
document_dicomweb_routes()


@bentoml.service(
    name="twin_imaging",
    workers=1,
    threads=4,  # for reads; analyses run on the analysis queue's own threads and never take one of these
    traffic={"timeout": 900},
    logging={"access": {"enabled": True, "request_content_length": True, "response_content_length": True}},
)
@bentoml.asgi_app(dicomweb_app, path="/dicomweb")
@bentoml.asgi_app(page_app, path="/page")
class TwinImaging:
    def __init__(self) -> None:
        self.settings = get_settings()
        self.segmenter = Segmenter(default_segmentation_package())  # loaded once per worker
        try:
            self.outcome: OutcomeModel | None = OutcomeModel()
        except ModelError as exc:
            log.warning("outcome model not loaded: %s", exc)
            self.outcome = None
        self.store = TwinStore()
        # the queue, jobs, the inbox watcher
        self.runs = AnalysisRuns(self.settings, self.segmenter, self.store, self.outcome)
        self.analyses, self.jobs, self.inbox = self.runs.analyses, self.runs.jobs, self.runs.inbox  # dicomweb: .inbox

    # --- studies in, results out -------------------------------------------------------------------------------

    @bentoml.api(route="/v1/analyze")
    @json_errors
    async def analyze(
        self,
        files: list[Path],
        patient_id: PatientId | None = None,
        series_instance_uid: Uid | None = None,
        *,
        ctx: bentoml.Context,
    ) -> dict[str, Any]:
        """Analyse a study now: DICOM files, one zip of them, or one NIfTI with patient_id (multipart field
        'files'). Answers the analysis attached to the twin. Larger than serve_sync_max_bytes: use the job. When
        serve_analysis_queue_max analyses already wait: 429 with Retry-After (or use the job, which queues)."""
        size = sum(p.stat().st_size for p in files)
        if size > self.settings.serve_sync_max_bytes:
            raise ApiError(
                413,
                f"{size} bytes is over the {self.settings.serve_sync_max_bytes} bytes answered "
                "synchronously; submit it as a job: POST /v1/analyze_job/submit",
            )
        actor = caller_actor(ctx)
        try:
            return await self.analyses.run(self.runs.analyze, files, patient_id, series_instance_uid, actor)
        except AnalysisQueueFull as exc:
            ctx.response.headers["Retry-After"] = "30"
            raise ApiError(429, str(exc)) from None

    @bentoml.api(route="/v1/analyze_job/submit")
    @json_errors
    async def submit_job(
        self,
        files: list[Path],
        patient_id: PatientId | None = None,
        series_instance_uid: Uid | None = None,
        *,
        ctx: bentoml.Context,
    ) -> dict[str, Any]:
        """The same analysis as a job, for any size and whatever the load: the upload is moved into the job store
        (spool/jobs, owner-only) before this answers; then POST /v1/analyze_job/status and /v1/analyze_job/get with
        the job_id. A job cut off by a crash or restart runs again at the next start. The result is attached to
        the twin before the job completes."""
        return await self.runs.submit_job(files, patient_id, series_instance_uid, caller_actor(ctx))

    @bentoml.api(route="/v1/analyze_job/status")
    @json_errors
    def job_status(self, job_id: JobId, *, ctx: bentoml.Context) -> dict[str, Any]:
        """A job's state: queued, running, completed or failed (with the reason)."""
        caller_actor(ctx)
        return self.jobs.get(job_id, only_sent_by=caller_scope(ctx)).status()

    @bentoml.api(route="/v1/analyze_job/get")
    @json_errors
    def job_result(self, job_id: JobId, *, ctx: bentoml.Context) -> dict[str, Any]:
        """A completed job's analysis (as /v1/analyze answers it); 409 while it is queued or running, 422 with the
        reason where it failed."""
        caller_actor(ctx)
        job = self.jobs.get(job_id, only_sent_by=caller_scope(ctx))
        if job.state == "failed":
            raise ApiError(422, f"the job failed: {job.error}")
        if job.state != "completed" or job.result is None:
            raise ApiError(409, f"the job is {job.state}; ask again when /v1/analyze_job/status says completed")
        return job.result

    @bentoml.api(route="/v1/analyses/get")
    @json_errors
    def get_analysis(self, analysis_id: AnalysisId, *, ctx: bentoml.Context) -> dict[str, Any]:
        """One analysis: its study and series, model, measurements and artifacts."""
        actor = caller_actor(ctx)
        return v.to_jsonable(self.store.analysis(analysis_id, actor=actor, only_sent_by=caller_scope(ctx)))

    @bentoml.api(route="/v1/analyses/expert_seg")
    @json_errors
    def expert_seg(self, seg: Path, *, ctx: bentoml.Context) -> dict[str, Any]:
        """A radiologist's DICOM SEG of an analysed series (kidney, renal tumour, cyst by SNOMED CT code): recorded
        on the twin and preferred over the model's masks; the surgical scenarios are recomputed on it."""
        data = seg.read_bytes()  # the body limit of the middleware bounds it
        return receive_expert_seg(
            self.store,
            data,
            via="api",
            actor=caller_actor(ctx),
            outcome_model=self.outcome,
            only_sent_by=caller_scope(ctx),
        )

    @bentoml.api(route="/v1/artifacts/download")
    @json_errors
    def download_artifact(
        self,
        analysis_id: AnalysisId,
        kind: ArtifactKind,
        name: Annotated[str | None, Field(max_length=128)] = None,
        *,
        ctx: bentoml.Context,
    ) -> Path:
        """An analysis' file: dicom_seg, dicom_sr, overlay_png (name: overlay_axial.png, ...), labels_nifti,
        results_json. Its bytes are checked against the sha256 recorded in the twin before they are sent."""
        actor = caller_actor(ctx)
        artifact, path = self.store.artifact_file(
            analysis_id, kind, actor=actor, name=name, only_sent_by=caller_scope(ctx)
        )

        return FileResponse(
            path,
            media_type=artifact.media_type,
            filename=artifact.name or f"{kind}{MEDIA_SUFFIX[kind]}",
            headers={"X-Content-SHA256": artifact.sha256},
        )

    @bentoml.api(route="/v1/inbox/status")
    @json_errors
    def inbox_status(self, study_instance_uid: Uid, *, ctx: bentoml.Context) -> dict[str, Any]:
        """Where a study pushed by STOW-RS stands: waiting (for quiet), processing, done (analysis id), failed;
        unknown for a study this key did not push (unless its scope is 'all')."""
        caller_actor(ctx)
        return {
            "study_instance_uid": study_instance_uid,
            **self.inbox.state(study_instance_uid, only_sent_by=caller_scope(ctx)),
        }

    # --- the patient twin --------------------------------------------------------------------------------------

    @bentoml.api(route="/v1/twin/get")
    @json_errors
    def twin(
        self, patient_id: PatientId, format: Literal["json", "fhir"] = "json", *, ctx: bentoml.Context
    ) -> dict[str, Any]:
        """Everything the twin holds on a patient, as JSON or as a FHIR R5 Bundle (format 'fhir')."""
        summary = self.store.summary(self.store.resolve_patient_key(patient_id), actor=caller_actor(ctx))
        return export_bundle(summary) if format == "fhir" else v.to_jsonable(summary)

    @bentoml.api(route="/v1/twin/scenarios")
    @json_errors
    def scenarios(self, patient_id: PatientId, *, ctx: bentoml.Context) -> dict[str, Any]:
        """The surgical scenarios that count per analysis: a radiologist's SEG's where one was sent, else the
        model's masks' (research models; not for clinical decisions)."""
        summary = self.store.summary(self.store.resolve_patient_key(patient_id), actor=caller_actor(ctx))
        return {"analyses": current_scenarios(summary)}

    @bentoml.api(route="/v1/twin/timeline")
    @json_errors
    def timeline(self, patient_id: PatientId, *, ctx: bentoml.Context) -> dict[str, Any]:
        """Studies, analyses, observations, procedures, predictions and alerts in clinical time order."""
        events = self.store.timeline(self.store.resolve_patient_key(patient_id), actor=caller_actor(ctx))
        return {"events": v.to_jsonable(events)}

    @bentoml.api(route="/v1/twin/compare")
    @json_errors
    def compare(
        self,
        patient_id: PatientId,
        study_a: Uid,
        study_b: Uid,
        model_id: Annotated[str | None, Field(max_length=64)] = None,
        model_version: Annotated[str | None, Field(max_length=64)] = None,
        *,
        ctx: bentoml.Context,
    ) -> dict[str, Any]:
        """Volume change per structure from study a to study b, both measured by one model id and version."""
        key = self.store.resolve_patient_key(patient_id)
        changes = self.store.compare_studies(
            key, study_a, study_b, actor=caller_actor(ctx), model_id=model_id, model_version=model_version
        )
        return {"study_a": study_a, "study_b": study_b, "changes": v.to_jsonable(changes)}

    @bentoml.api(route="/v1/twin/observations")
    @json_errors
    def add_observation(
        self,
        patient_id: PatientId,
        code: Annotated[str, Field(min_length=1, max_length=64)],
        display: Annotated[str, Field(min_length=1, max_length=256)],
        value: Annotated[float, Field(allow_inf_nan=False)],
        unit: Annotated[str, Field(min_length=1, max_length=32)],
        effective_at: datetime,
        code_system: Annotated[str, Field(max_length=256)] = "http://loinc.org",
        *,
        ctx: bentoml.Context,
    ) -> dict[str, Any]:
        """Record a clinical observation (e.g. LOINC 62238-1 eGFR) on the patient's twin; where the patient has
        surgical scenarios whose predictions it changes (an eGFR that was missing), they are recomputed and returned
        under ``surgical_scenarios_recomputed``."""
        observation = v.ObservationInput(
            code=code,
            display=display,
            value=value,
            unit=unit,
            effective_at=effective_at,
            code_system=code_system,
            source="api",
        )
        key = self.store.resolve_patient_key(patient_id)
        body = v.to_jsonable(self.store.record_observation(key, observation, actor=caller_actor(ctx)))
        runs = []
        if self.outcome is not None and is_scenario_input(code):
            runs = refresh_scenarios(
                self.store, key, actor=caller_actor(ctx), outcome_model=self.outcome, only_sent_by=caller_scope(ctx)
            )
        body["surgical_scenarios_recomputed"] = [run.to_json() for run in runs if run.computed]
        return body

    @bentoml.api(route="/v1/outcome/predict")
    @json_errors
    def predict_outcome(
        self,
        mask: Path,
        clinical: dict[str, Any],
        scenarios: list[Literal["partial_nephrectomy", "radical_nephrectomy"]] = list(SCENARIOS),  # noqa: B006
        margin_mm: Annotated[float, Field(ge=0, le=30)] = DEFAULT_MARGIN_MM,
        approach: Literal["robotic", "laparoscopic", "open"] = "robotic",
        patient_id: PatientId | None = None,
        *,
        ctx: bentoml.Context,
    ) -> dict[str, Any]:
        """Post-operative outcome probabilities per surgical scenario, side by side, with 90 % intervals and what
        drove them. mask: a NIfTI label map (1 kidney, 2 tumour, 3 cyst); clinical: the pre-operative variables.
        With patient_id, the predictions are recorded on that patient's twin."""
        if self.outcome is None:
            raise ModelError("no outcome model is loaded (see the service log)")
        actor = caller_actor(ctx)
        key = self.store.resolve_patient_key(patient_id) if patient_id else None
        labels = self.runs.read_uploaded_nifti(mask)
        report = predict_scenarios(
            self.outcome, labels, clinical, scenarios=scenarios, margin_mm=margin_mm, approach=approach
        )
        recorded = []
        if key is not None:
            records = self.store.record_predictions(key, prediction_inputs(report), actor=actor)
            recorded = [r.prediction_id for r in records]
        return {**report.to_json(), "recorded_prediction_ids": recorded}

    # --- models ---------------------------------------------------------------------------------------------

    @bentoml.api(route="/v1/models")
    @json_errors
    def models(self, *, ctx: bentoml.Context) -> dict[str, Any]:
        """The loaded models with their cards (metrics, training data, intended use, limitations)."""
        caller_actor(ctx)
        cards = [{"task": "segmentation", "card": self.segmenter.card.model_dump(mode="json")}]
        if self.outcome is not None:
            cards.append({"task": "outcome", "card": self.outcome.card.model_dump(mode="json")})
        return {"models": cards, "providers": list(self.segmenter.session.get_providers())}


TwinImaging.add_asgi_middleware(ApiKeyMiddleware)  # keys file and body limit from the settings at start-up
TwinImaging.add_asgi_middleware(OwnDocsPage)  # the docs page without BentoML's third-party scripts
