"""The deterministic preprocessing that training and serving share (numpy and scipy only; never torch or MONAI)."""

from twin_imaging.transforms.intensity import scale_intensity
from twin_imaging.transforms.preprocess import (
    PreprocessedImage,
    labels_to_source_grid,
    preprocess_image,
    preprocess_labels,
)
from twin_imaging.transforms.resample import resample_to_grid, resample_to_spacing, spacing_grid

__all__ = [
    "PreprocessedImage",
    "labels_to_source_grid",
    "preprocess_image",
    "preprocess_labels",
    "resample_to_grid",
    "resample_to_spacing",
    "scale_intensity",
    "spacing_grid",
]
