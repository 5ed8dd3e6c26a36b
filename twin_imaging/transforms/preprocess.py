"""A model card's preprocessing, applied the same way in training and in serving.

Reorient to RAS (closest canonical: flips and axis swaps, no interpolation), resample to the card's spacing on
MONAI ``Spacing``'s grid, window the intensities; and the way back for a label map predicted on that grid.
Equivalent to MONAI's ``Orientation(axcodes="RAS")``, ``Spacing(pixdim=spacing_mm)`` and ``ScaleIntensityRange``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin_imaging.models.card import PreprocessingSpec
from twin_imaging.transforms.intensity import scale_intensity
from twin_imaging.transforms.resample import resample_to_grid, resample_to_spacing
from twin_imaging.volume import Volume


@dataclass(frozen=True, eq=False)
class PreprocessedImage:
    """What the network sees, and the grids needed to bring its output back."""

    array: np.ndarray  # (1, X, Y, Z) float32, channel first, on the model grid
    affine_ras: np.ndarray  # voxel → RAS mm of the model grid
    source_shape: tuple[int, int, int]
    source_affine_ras: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """The model grid's spatial shape (X, Y, Z)."""
        return tuple(int(n) for n in self.array.shape[1:])  # type: ignore[return-value]


def preprocess_image(volume: Volume, spec: PreprocessingSpec) -> PreprocessedImage:
    """``volume`` reoriented, resampled (trilinear; skipped where the spacing already matches) and windowed."""
    ras = volume.reoriented(spec.orientation, copy=False)  # the resampling reads the view: no copy of the CT
    if _spacing_matches(ras, spec):
        model, array = ras, scale_intensity(ras.array, spec.intensity)
    else:
        model = resample_to_spacing(ras, spec.spacing_mm, order=1)
        array = scale_intensity(model.array, spec.intensity, out=model.array)  # a float32 buffer of our own
    return PreprocessedImage(
        array=array[np.newaxis],
        affine_ras=model.affine_ras,
        source_shape=volume.shape,
        source_affine_ras=volume.affine_ras.copy(),
    )


def preprocess_labels(labels: Volume, spec: PreprocessingSpec) -> Volume:
    """A label map of an image on that image's model grid (nearest), as uint8 with its ``label_names``."""
    if labels.array.dtype != np.uint8:
        labels = labels.with_array(_as_uint8(labels.array), label_names=labels.label_names)
    return _to_model_grid(labels, spec, order=0)


def labels_to_source_grid(labels_model_grid: np.ndarray, prepared: PreprocessedImage) -> np.ndarray:
    """A label map on the model grid (X, Y, Z), or (1, X, Y, Z), brought back (nearest) onto the source image's exact
    grid: uint8 of shape ``prepared.source_shape``; 0 where the model grid does not reach."""
    labels = np.asarray(labels_model_grid)
    if labels.ndim == 4 and labels.shape[0] == 1:
        labels = labels[0]
    if labels.shape != prepared.shape:
        raise ValueError(f"labels have shape {labels_model_grid.shape}; the model grid is {prepared.shape}")
    model = Volume(_as_uint8(labels), prepared.affine_ras)
    return resample_to_grid(model, prepared.source_shape, prepared.source_affine_ras, order=0).array


def _to_model_grid(volume: Volume, spec: PreprocessingSpec, *, order: int) -> Volume:
    ras = volume.reoriented(spec.orientation)
    if _spacing_matches(ras, spec):
        return ras
    return resample_to_spacing(ras, spec.spacing_mm, order=order)


def _spacing_matches(volume: Volume, spec: PreprocessingSpec) -> bool:
    return bool(np.allclose(volume.spacing_mm, spec.spacing_mm, rtol=0.0, atol=1e-3))


def _as_uint8(labels: np.ndarray) -> np.ndarray:
    if labels.dtype == np.uint8:
        return labels
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"label values must be 0..255, got {labels.min()}..{labels.max()}")
    return labels.astype(np.uint8)
