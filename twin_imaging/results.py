"""The results document of one analysis (``results.json``): a versioned, documented schema.

Consumers check ``schema`` and ``schema_version``; a change that removes or renames a field bumps the major version,
one that adds a field bumps the minor. ``twin-imaging schema`` prints the JSON Schema. No patient identifiers are
written here: the study and series are named by their UIDs only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

RESULTS_SCHEMA = "twin-imaging/analysis-result"
RESULTS_SCHEMA_VERSION = "1.0"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SeriesCandidateReport(_Model):
    series: str = Field(description="series number, description and UID (and stack, where a series was split)")
    chosen: bool
    reason: str = Field(description="why it was chosen, or why not")


class InputReport(_Model):
    path: str
    format: Literal["DICOM", "NIfTI"]
    modality: str = ""
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    series_number: int | None = None
    series_description: str = ""
    frame_of_reference_uid: str = ""
    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    orientation: str = Field(description="axis codes of the voxel axes i, j, k, e.g. LPS")
    series_found: list[SeriesCandidateReport] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class ModelReport(_Model):
    model_id: str
    version: str
    onnx_sha256: str
    providers: list[str] = Field(description="ONNX Runtime execution providers used")
    intended_use: str


class StructureReport(_Model):
    name: str
    label: int = Field(description="value in labels.nii.gz and segment in seg.dcm order")
    snomed_code: str
    snomed_meaning: str
    laterality: str | None = None
    voxel_count: int
    volume_ml: float
    hu_mean: float | None
    hu_std: float | None
    hu_percentiles: dict[str, float] = Field(description="percentile (as text, e.g. '50') → HU")
    centroid_ras_mm: tuple[float, float, float]
    bbox_min_ras_mm: tuple[float, float, float]
    bbox_max_ras_mm: tuple[float, float, float]
    max_diameter_mm: float


class OutputFile(_Model):
    kind: Literal["labels_nifti", "dicom_seg", "dicom_sr", "overlay_png", "results_json"]
    file: str = Field(description="file name, relative to the output folder")
    sha256: str
    size_bytes: int
    sop_instance_uid: str | None = None
    plane: str | None = None


class AnalysisDocument(_Model):
    schema_: Literal["twin-imaging/analysis-result"] = Field(default=RESULTS_SCHEMA, alias="schema")
    schema_version: Literal["1.0"] = RESULTS_SCHEMA_VERSION
    created: datetime
    software: dict[str, str]
    input: InputReport
    model: ModelReport
    structures: list[StructureReport]
    structures_not_found: list[str] = Field(description="model structures absent from this image")
    outputs: list[OutputFile] = Field(description="every file written, results.json excepted")
    timings_s: dict[str, float]

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)
