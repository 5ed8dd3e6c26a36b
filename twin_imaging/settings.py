"""The one settings module: every tunable of twin-imaging, from environment variables prefixed ``TWIN_IMAGING_``.

Nothing else in the code reads the environment. ``get_settings()`` is cached; tests that change the environment
call ``get_settings.cache_clear()``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

_REPO_ROOT = Path(__file__).resolve().parents[1]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TWIN_IMAGING_", extra="ignore")

    # Real data beside the project (development, integration tests, benchmarks). Never copied into the repo.
    shared_data_dir: Path = Field(default=_REPO_ROOT.parent / "shared" / "data")

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
    onnx_threads: int | None = Field(default=None, ge=1, description="intra-op threads; None = ONNX Runtime's default")

    # Model packages (a folder per model: card.json + ONNX)
    models_dir: Path = Field(default=_REPO_ROOT / "models", description="folder holding one folder per model package")
    default_segmentation_model: str = Field(
        default="abdomen_ct_organs", description="model id (package folder) used when none is named"
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
