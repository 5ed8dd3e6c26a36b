"""The machine-readable model card: everything serving needs to run a model, and everything a reader needs to trust it.

A model package is a folder holding ``card.json`` (this schema) and the ONNX file it names. Training writes it;
``twin_imaging`` reads it and runs the model with no code change. The preprocessing spec travels with the weights
(as nnU-Net's plans and MONAI bundles do), so training and serving cannot drift.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CARD_SCHEMA_VERSION = "1.0"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodedConcept(_Strict):
    """A DICOM coded concept: (CodeValue, CodingSchemeDesignator, CodeMeaning), e.g. SNOMED CT ``10200004 Liver``."""

    value: str
    scheme: str
    meaning: str


class StructureSpec(_Strict):
    """One output class of a segmentation model."""

    label: int = Field(ge=1, le=255, description="value in the label map (0 is background)")
    name: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="a structure-table name, e.g. kidney_left, vertebrae_L1")
    category: CodedConcept
    type: CodedConcept
    type_modifier: CodedConcept | None = None
    color_rgb: tuple[int, int, int] = Field(description="recommended display colour, 0..255 each")
    keep_largest_component: bool = Field(
        default=False, description="post-processing: keep only the largest 3D connected component"
    )
    attached_to: tuple[str, ...] = Field(
        default=(),
        description="post-processing: keep only the 3D connected components that touch one of these structures, "
        "directly or through another structure attached to the same ones (a renal mass grows from a kidney)",
    )

    @property
    def display_name(self) -> str:
        """The name a clinician reads: from the coded concept ("Right kidney"), not the snake_case id."""
        meaning = self.type.meaning
        if self.type_modifier is None:
            return meaning
        return f"{self.type_modifier.meaning} {meaning[:1].lower()}{meaning[1:]}"

    @field_validator("color_rgb")
    @classmethod
    def _check_color(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if any(not 0 <= c <= 255 for c in value):
            raise ValueError(f"colour components must be 0..255, got {value}")
        return value


class IntensitySpec(_Strict):
    """Linear window: ``window_min_hu`` → ``output_min``, ``window_max_hu`` → ``output_max``, clipped if ``clip``.

    The same as MONAI's ``ScaleIntensityRange(a_min, a_max, b_min, b_max, clip)``.
    """

    window_min_hu: float
    window_max_hu: float
    output_min: float = 0.0
    output_max: float = 1.0
    clip: bool = True

    @model_validator(mode="after")
    def _check_window(self) -> IntensitySpec:
        if self.window_max_hu <= self.window_min_hu:
            raise ValueError("window_max_hu must exceed window_min_hu")
        return self


class PreprocessingSpec(_Strict):
    """Deterministic preprocessing applied before the network, in training and in serving alike."""

    orientation: Literal["RAS"] = "RAS"
    spacing_mm: tuple[float, float, float] = Field(description="voxel size the network sees, along R, A, S")
    intensity: IntensitySpec

    @field_validator("spacing_mm")
    @classmethod
    def _check_spacing(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(v <= 0 for v in value):
            raise ValueError(f"spacing must be positive, got {value}")
        return value


class InferenceSpec(_Strict):
    """How to run the ONNX network over a whole volume."""

    input_name: str = "image"
    output_name: str = "logits"
    in_channels: int = 1
    num_classes: int = Field(ge=2, description="network output channels, background included")
    patch_size_voxels: tuple[int, int, int]
    divisible_by: int = Field(default=16, ge=1, description="spatial sizes the network accepts are multiples of it")
    overlap: float = Field(default=0.25, ge=0.0, lt=1.0)
    sigma_scale: float = Field(default=0.125, gt=0.0, description="Gaussian blending sigma, a fraction of the patch")


class StructureMetrics(_Strict):
    """Metrics of one structure over the cases of an evaluation (mean over the cases where it is present)."""

    structure: str
    dice: float | None
    nsd: float | None = Field(description="normalized surface distance (surface Dice) at the evaluation's tolerance")
    hd95_mm: float | None
    n_cases: int = Field(ge=0, description="cases in which the reference holds this structure")


class EvaluationRecord(_Strict):
    """Metrics and exactly what they were measured on."""

    dataset: str = Field(description="which data, e.g. 'TotalSegmentator example_ct_dicom (20 slices)'")
    split: str = Field(description="how it relates to training, e.g. 'held out: leave-one-volume-out fold 2'")
    reference: str = Field(description="what the reference labels are, e.g. another model's predictions")
    nsd_tolerance_mm: float = 2.0
    n_cases: int = Field(ge=0)
    structures: tuple[StructureMetrics, ...]


class PublishedResult(_Strict):
    """Another method's published Dice on the same split, shown beside this model's evaluation (not re-run here)."""

    method: str
    source: str = Field(description="where the numbers were published")
    split: str = Field(description="the evaluation's split text it compares with (must match exactly)")
    dice: dict[str, float] = Field(description="structure name → Dice (0..1)")


class DatasetReference(_Strict):
    name: str
    licence: str
    description: str
    n_cases: int = Field(ge=0)
    labels: str = Field(description="what the labels are: expert, pseudo-labels (which model), synthetic")


class TrainingRecord(_Strict):
    data: tuple[DatasetReference, ...]
    recipe: str = Field(description="the config that trained it, relative to the repository")
    network: str
    parameters: int = Field(ge=0)
    max_steps: int = Field(ge=0)
    seed: int
    duration_s: float = Field(ge=0)
    hardware: str
    code_version: str = ""
    extra_runs: tuple[str, ...] = Field(default=(), description="other recorded runs, e.g. a GPU run and its time")


class OnnxFile(_Strict):
    file: str = Field(description="file name inside the package folder")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0)
    opset: int
    parity_max_abs_diff: float | None = Field(
        default=None, description="largest |torch - ONNX| difference seen at export, on random and real input"
    )
    parity_quantity: Literal["logits", "probabilities"] = Field(
        default="logits",
        description="what the parity was measured on: the raw logits, or the class probabilities (softmax) that "
        "decide the labels",
    )
    parity_max_logit_diff: float | None = Field(
        default=None, description="with parity on probabilities: the largest logit difference, for the record"
    )


# A refinement stage's grown boxes further apart than this are refined as separate crops: a structure the first
# network put far from the others (a false kidney in the pelvis) does not turn the crop into most of the torso at the
# refinement's resolution. Nearer ones share one crop, so that two kidneys are seen together as in training.
SEPARATE_CROPS_APART_MM = 100.0


class RefinementStage(_Strict):
    """A second network run on a crop around structures the first one found: a finer look at one region (the
    kidneys and their masses at 1.5 mm, where the organs are found at 3 mm). Inside the crop its labels win: a voxel
    it gives one of its structures is that structure whatever the first network said, and a voxel the first network
    gave one of those structures and it calls background becomes background; outside, the first network's stand."""

    around: tuple[str, ...] = Field(
        min_length=1,
        description="structures whose joint bounding box is the crop (a crop each where their boxes lie over "
        f"{SEPARATE_CROPS_APART_MM:g} mm apart)",
    )
    margin_mm: float = Field(default=25.0, ge=0.0, description="added to the box on every side")
    structures: tuple[str, ...] = Field(
        min_length=1, description="the card's structures that the network's output labels 1..N stand for"
    )
    preprocessing: PreprocessingSpec
    inference: InferenceSpec
    onnx: OnnxFile
    training: TrainingRecord


class ModelCard(_Strict):
    schema_version: Literal["1.0"] = CARD_SCHEMA_VERSION
    model_id: str = Field(pattern=r"^[a-z0-9_]+$", description="the stem of its config, card and ONNX file")
    version: str
    task: Literal["segmentation"] = "segmentation"
    modality: Literal["CT", "MR"]
    title: str
    description: str
    intended_use: str
    out_of_scope: tuple[str, ...] = ()
    limitations: tuple[str, ...] = ()
    ethical_considerations: tuple[str, ...] = ()
    structures: tuple[StructureSpec, ...]
    preprocessing: PreprocessingSpec
    inference: InferenceSpec
    refinement: RefinementStage | None = None
    evaluations: tuple[EvaluationRecord, ...] = ()
    published_comparison: tuple[PublishedResult, ...] = ()
    training: TrainingRecord
    onnx: OnnxFile
    created: datetime

    @model_validator(mode="after")
    def _check_structures(self) -> ModelCard:
        labels = [s.label for s in self.structures]
        names = [s.name for s in self.structures]
        if len(set(labels)) != len(labels) or len(set(names)) != len(names):
            raise ValueError("structure labels and names must be unique")
        for spec in self.structures:
            unknown = sorted(set(spec.attached_to) - set(names))
            if unknown or spec.name in spec.attached_to:
                raise ValueError(
                    f"{spec.name} is attached_to {unknown or spec.name}: not another structure of the model"
                )
        attached = {spec.name for spec in self.structures if spec.attached_to}
        for spec in self.structures:
            if attached & set(spec.attached_to):  # masses anchoring each other would keep a pair far from any kidney
                raise ValueError(
                    f"{spec.name} is attached_to {sorted(attached & set(spec.attached_to))}, themselves "
                    "attached: anchors must be structures that stand on their own"
                )
        refined = set(self.refinement.structures) if self.refinement is not None else set()
        first = [s.label for s in self.structures if s.name not in refined]  # a refinement may add structures
        if max(first, default=0) >= self.inference.num_classes:
            raise ValueError(
                f"a structure label ({max(first)}) is beyond the network's {self.inference.num_classes} classes"
            )
        if any(p % self.inference.divisible_by for p in self.inference.patch_size_voxels):
            raise ValueError(f"patch size must be a multiple of {self.inference.divisible_by}")
        if self.refinement is not None:
            stage = self.refinement
            unknown = sorted((set(stage.around) | set(stage.structures)) - set(names))
            if unknown:
                raise ValueError(f"the refinement names structures the card lacks: {unknown}")
            later = sorted(n for n in stage.around if self.structure(n).label >= self.inference.num_classes)
            if later:  # the crop is found before the refinement runs
                raise ValueError(f"the refinement's crop is around {later}, which the first network does not output")
            if stage.onnx.file == self.onnx.file:
                raise ValueError("the refinement's ONNX file must be another file than the first network's")
            if len(set(stage.structures)) != len(stage.structures):
                raise ValueError("the refinement's structures must be unique")
            if len(stage.structures) >= stage.inference.num_classes:
                raise ValueError(
                    f"the refinement outputs {len(stage.structures)} structures; its network has only "
                    f"{stage.inference.num_classes} classes"
                )
            if any(p % stage.inference.divisible_by for p in stage.inference.patch_size_voxels):
                raise ValueError(f"the refinement's patch size must be a multiple of {stage.inference.divisible_by}")
        return self

    def label_names(self) -> dict[int, str]:
        return {s.label: s.name for s in self.structures}

    @property
    def weights_sha256(self) -> str:
        """What the model's answers depend on, as one digest: the ONNX file's sha256, or for a cascade the sha256 of
        both files' hashes (so that new refinement weights under the same version are told apart)."""
        if self.refinement is None:
            return self.onnx.sha256
        return hashlib.sha256(f"{self.onnx.sha256}+{self.refinement.onnx.sha256}".encode()).hexdigest()

    def structure(self, name: str) -> StructureSpec:
        for spec in self.structures:
            if spec.name == name:
                return spec
        raise KeyError(f"model {self.model_id} has no structure {name!r}")
