"""Model packages: an ONNX file and its machine-readable card, the one contract between training and serving."""

from twin_imaging.models.card import ModelCard, PreprocessingSpec, StructureSpec
from twin_imaging.models.package import (
    ModelPackage,
    default_segmentation_package,
    load_model_package,
    write_model_package,
)

__all__ = [
    "ModelCard",
    "ModelPackage",
    "PreprocessingSpec",
    "StructureSpec",
    "default_segmentation_package",
    "load_model_package",
    "write_model_package",
]
