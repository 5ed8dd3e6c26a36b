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
# 2.0: max_diameter_mm renamed greatest_extent_mm; principal extents, short axis and the quality review added;
# 2.1: the review code unattached_mass_left_out
RESULTS_SCHEMA_VERSION = "2.1"


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


class PrincipalExtentsReport(_Model):
    """Extents (mm) of the structure along its principal axes, largest variance first (SNOMED CT Major Axis
    131187009, Minor Axis 131188004, Perpendicular Axis 131189007)."""

    major_axis_mm: float
    minor_axis_mm: float
    perpendicular_axis_mm: float


class StructureReport(_Model):
    name: str
    label: int = Field(description="value in labels.nii.gz and segment in seg.dcm order")
    snomed_code: str
    snomed_meaning: str
    laterality: str | None = None
    display_name: str | None = Field(default=None, description="the name a clinician reads, e.g. 'Right kidney'")
    color_rgb: tuple[int, int, int] | None = Field(
        default=None, description="display colour (0..255 each), the same as in the SEG, overlays and meshes"
    )
    voxel_count: int
    volume_ml: float
    hu_mean: float | None
    hu_std: float | None
    hu_percentiles: dict[str, float] = Field(description="percentile (as text, e.g. '50') → HU")
    centroid_ras_mm: tuple[float, float, float]
    bbox_min_ras_mm: tuple[float, float, float]
    bbox_max_ras_mm: tuple[float, float, float]
    greatest_extent_mm: float = Field(
        description="largest distance between two voxel centres of the structure: a tubular structure's length in "
        "the scan, not its diameter"
    )
    principal_extents_mm: PrincipalExtentsReport
    short_axis_mm: float | None = Field(
        default=None,
        description="tubular structures (aorta, vena cava, esophagus, portal vein): the largest short-axis diameter "
        "(minimum caliper width) of the axial cross-sections, in mm",
    )


class ReviewReasonReport(_Model):
    code: Literal[
        "cut_by_field_of_view",
        "volume_outside_adult_range",
        "unexpected_laterality",
        "renal_mass_not_validated",
        "unattached_mass_left_out",
    ]
    structures: list[str]
    message: str


class ReviewReport(_Model):
    required: bool = Field(description="true when any check below asks for a human look before the results are used")
    reasons: list[ReviewReasonReport]


class OutputFile(_Model):
    kind: Literal[
        "labels_nifti", "dicom_seg", "dicom_sr", "overlay_png", "mesh_glb", "viewer_ct", "viewer_labels", "results_json"
    ]
    file: str = Field(description="file name, relative to the output folder")
    sha256: str
    size_bytes: int
    sop_instance_uid: str | None = None
    plane: str | None = None


class AnalysisDocument(_Model):
    schema_: Literal["twin-imaging/analysis-result"] = Field(default=RESULTS_SCHEMA, alias="schema")
    schema_version: Literal["2.1"] = RESULTS_SCHEMA_VERSION
    created: datetime
    software: dict[str, str]
    input: InputReport
    model: ModelReport
    structures: list[StructureReport]
    structures_not_found: list[str] = Field(description="model structures absent from this image")
    review: ReviewReport = Field(description="the quality review of the segmentation")
    outputs: list[OutputFile] = Field(description="every file written, results.json excepted")
    timings_s: dict[str, float]

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)
