"""The one settings module: every tunable of twin-imaging, from environment variables prefixed ``TWIN_IMAGING_``.

Nothing else in the code reads the environment. ``get_settings()`` is cached; tests that change the environment
call ``get_settings.cache_clear()``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_ROOT = Path(__file__).resolve().parents[1]
_DEFAULT_DATA_DIR = Path("~/.local/share/twin-imaging").expanduser()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWIN_IMAGING_", extra="ignore")

    # Real data beside the project (development, integration tests, benchmarks). Never copied into the repo.
    shared_data_dir: Path = Field(default=_REPO_ROOT.parent / "shared" / "data")
    prepared_data_dir: Path = Field(
        default=Path("~/.cache/twin-imaging/prepared"),
        description="prepared copies of the shared data (e.g. BTCV as NIfTI, by training.prepare_btcv); "
        "outside the repository",
    )

    # DICOM reading
    dicom_min_slices: int = Field(default=3, ge=2, description="fewest slices a series needs to be a volume")
    dicom_slice_spacing_tolerance: float = Field(
        default=0.01,
        gt=0,
        description="allowed deviation of a slice step from the series' step, as a fraction of the step",
    )
    dicom_max_tilt_degrees: float = Field(
        default=0.05, ge=0, description="largest shear of the slice stack (gantry tilt) accepted"
    )
    dicom_decode_threads: int = Field(default=min(8, os.cpu_count() or 1), ge=1)
    zip_max_members: int = Field(default=100_000, ge=1)
    zip_max_uncompressed_bytes: int = Field(default=16 * 1024**3, ge=1)

    # Network execution (ONNX Runtime)
    onnx_providers: str = Field(
        default="auto",
        description='"auto" (TensorRT, CUDA where available, then CPU) or a comma list of ONNX Runtime provider names',
    )
    onnx_threads: int | None = Field(
        default=None,
        ge=1,
        description="intra-op threads of the segmentation session; None: on a CPU, its cores shared among the "
        "concurrent windows; on a GPU, ONNX Runtime's default",
    )
    onnx_concurrent_windows: int | None = Field(
        default=None,
        ge=1,
        description="sliding windows run at once; None: 2 on a CPU with 2 or more cores (two one-thread runs beat "
        "one two-thread run by 10-15 %), 1 on a GPU",
    )
    output_threads: int = Field(
        default=min(4, os.cpu_count() or 1),
        ge=1,
        description="threads measuring and writing one analysis' outputs beside the SEG and SR, which the "
        "analysis' own thread writes (label NIfTI, overlays, viewer copies, meshes)",
    )

    # Input gate: what a volume must be before a model runs on it (twin_imaging.inference.input_gate)
    gate_min_voxels_per_axis: int = Field(default=3, ge=1, description="fewest voxels along any axis")
    gate_min_extent_mm: float = Field(default=20.0, ge=0, description="shortest physical extent along any axis")
    gate_max_extent_mm: float = Field(
        default=2500.0, gt=0, description="longest physical extent along any axis (a whole body is under 2.2 m)"
    )
    gate_max_model_grid_voxels: int = Field(
        default=150_000_000,
        ge=1,
        description="largest volume on the model's grid (memory: about 4 bytes per class per voxel)",
    )
    gate_max_ct_hu: float = Field(default=4000.0, description="a CT whose 99th percentile lies above this is not HU")

    # Model packages (a folder per model: card.json + ONNX)
    models_dir: Path = Field(default=_REPO_ROOT / "models", description="folder holding one folder per model package")
    default_outcome_model: str = Field(
        default="nephrectomy_outcomes", description="model id (package folder) of the post-operative outcome model"
    )
    default_segmentation_model: str = Field(
        default="abdomen_ct_fast", description="model id (package folder) used when none is named"
    )

    # The patient twin (twin_imaging.twin): database, artifacts, pseudonyms, alert rules
    data_dir: Path = Field(default=_DEFAULT_DATA_DIR, description="the twin's home: database file and artifacts")
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the twin store; empty = a SQLite file twin.sqlite3 in data_dir. "
        "postgresql://user@host/db is read as postgresql+psycopg://",
    )
    artifacts_dir: Path | None = Field(
        default=None, description="content-addressed artifact files; None = data_dir/artifacts"
    )
    pseudonymize_patients: bool = Field(
        default=False, description="key patients by HMAC-SHA256(pseudonym_secret, PatientID), never the PatientID"
    )
    pseudonym_secret: SecretStr | None = Field(
        default=None, description="HMAC key of the patient pseudonyms; required when pseudonymize_patients is on"
    )
    alert_volume_loss_percent: float = Field(
        default=20.0, gt=0, le=100, description="a structure losing more than this between two studies alerts"
    )
    test_crash_point: str | None = Field(
        default=None,
        description="FOR TESTS ONLY: the twin store kills its own process (SIGKILL) at this named point of an "
        "attach (attach_before_commit, attach_after_commit) so that tests can check crash safety",
    )

    # The inference API (serving/): keys, upload limits, jobs
    api_keys_file: Path | None = Field(
        default=None,
        description="hashed API keys with roles (twin-imaging api-key create); None = data_dir/api_keys.json",
    )
    serve_max_upload_bytes: int = Field(
        default=4 * 1024**3, ge=1, description="largest request body the API accepts (413 beyond it)"
    )
    serve_max_json_bytes: int = Field(
        default=1024**2, ge=1, description="largest body of a JSON route (the twin, observations; 413 beyond it)"
    )
    serve_sync_max_bytes: int = Field(
        default=256 * 1024**2,
        ge=1,
        description="largest upload /v1/analyze answers synchronously; larger studies go through /v1/analyze_job",
    )
    serve_analysis_workers: int = Field(
        default=1, ge=1, le=64, description="analyses run at once per API worker (each holds a volume in memory)"
    )
    serve_analysis_queue_max: int = Field(
        default=8,
        ge=0,
        description="synchronous /v1/analyze requests that may wait for an analysis slot; beyond it 429 (use a job)",
    )
    serve_spool_dir: Path | None = Field(
        default=None, description="where uploads and pushed (STOW-RS) instances wait durably; None = data_dir/spool"
    )
    # Cohorts (twin-imaging batch, on Ray)
    batch_workers: int = Field(default=2, ge=1, le=1024, description="Ray actors, each with the model loaded once")
    batch_cpus_per_worker: float = Field(default=1.0, gt=0, description="CPUs each actor reserves (and ORT threads)")
    batch_gpus_per_worker: float = Field(default=0.0, ge=0, description="GPUs each actor reserves (0: CPU only)")
    # Several replicas of the service on one twin database and one shared data folder
    work_lease_seconds: float = Field(
        default=60.0,
        gt=0,
        description="a replica's hold on a pushed study, a job or a delivery; renewed while it works, taken over by "
        "another replica this long after the replica died",
    )
    serve_results_destination: str | None = Field(
        default=None,
        description="where the results (SEG, SR, overlay captures) of studies pushed by STOW-RS are sent, through "
        "the outbox: a DICOMweb URL or AET@host:port; None = kept in the twin only",
    )
    # The twin page (serving/page): a clinician's key, entered once, becomes a signed session cookie
    page_session_hours: float = Field(
        default=10.0, gt=0, le=24 * 7, description="how long a twin-page sign-in lasts (a clinical shift)"
    )
    page_session_secret_file: Path | None = Field(
        default=None,
        description="the key that signs twin-page session cookies (created at first use, owner-only; replicas "
        "share it through the data folder); None = data_dir/page_session.key",
    )
    viewer_volume_max_mb: float = Field(
        default=8.0,
        gt=0.5,
        description="the downsampled CT (int16) written at analysis time for the browser viewer stays under this size "
        "uncompressed, in MB; its label map is on the same grid",
    )
    inbox_keep_analysed_hours: float = Field(
        default=24.0,
        ge=0,
        description="instances of an analysed study stay in the inbox this long (owner-only), so that a later part "
        "of the study is analysed together with them; 0 deletes them once analysed",
    )
    serve_study_quiet_seconds: float = Field(
        default=5.0,
        gt=0,
        description="a study pushed by STOW-RS is analysed once no instance of it has arrived for this long",
    )

    # PACS integration (twin_imaging.pacs): DICOMweb credentials, the outbox of results, the DICOM listener
    pacs_username: str | None = Field(default=None, description="DICOMweb basic auth user (with pacs_password)")
    pacs_password: SecretStr | None = Field(default=None, description="DICOMweb basic auth password")
    pacs_token: SecretStr | None = Field(default=None, description="DICOMweb bearer token (instead of basic auth)")
    outbox_dir: Path | None = Field(default=None, description="results waiting for delivery; None = data_dir/outbox")
    outbox_retry_seconds: float = Field(
        default=10.0,
        gt=0,
        description="first wait before a failed delivery is retried; doubles per attempt, up to an hour",
    )
    outbox_max_attempts: int = Field(
        default=20, ge=1, description="attempts before a delivery is given up and moved to the outbox's dead/"
    )
    listener_ae_title: str = Field(default="TWIN", min_length=1, max_length=16)
    listener_port: int = Field(default=11112, ge=1, le=65535)
    listener_allowed_calling_aets: str = Field(
        default="", description="comma list of calling AE titles accepted; empty = any (configure it in production)"
    )
    listener_max_associations: int = Field(default=8, ge=1)
    listener_study_quiet_seconds: float = Field(
        default=10.0, gt=0, description="a received study is complete when no instance has arrived for this long"
    )

    @model_validator(mode="after")
    def _fill_twin_paths(self) -> Settings:
        self.data_dir = self.data_dir.expanduser()
        self.prepared_data_dir = self.prepared_data_dir.expanduser()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'twin.sqlite3'}"
        if self.artifacts_dir is None:
            self.artifacts_dir = self.data_dir / "artifacts"
        if self.api_keys_file is None:
            self.api_keys_file = self.data_dir / "api_keys.json"
        if self.outbox_dir is None:
            self.outbox_dir = self.data_dir / "outbox"
        if self.serve_spool_dir is None:
            self.serve_spool_dir = self.data_dir / "spool"
        if self.page_session_secret_file is None:
            self.page_session_secret_file = self.data_dir / "page_session.key"
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
