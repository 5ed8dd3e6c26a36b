"""Intensity windowing: the linear map of a model card's ``IntensitySpec``, as MONAI's ``ScaleIntensityRange``."""

from __future__ import annotations

import numpy as np

from twin_imaging.models.card import IntensitySpec


def scale_intensity(array: np.ndarray, spec: IntensitySpec, *, out: np.ndarray | None = None) -> np.ndarray:
    """Float32 ``window_min_hu`` → ``output_min``, ``window_max_hu`` → ``output_max``, clipped if ``spec.clip``.

    The same arithmetic, in the same order and precision, as MONAI's ``ScaleIntensityRange(a_min, a_max, b_min,
    b_max, clip)`` on a float32 tensor. Written into ``out`` if given (float32, same shape; may be ``array``), else
    into a new array.
    """
    shape = np.shape(array)
    if out is None:
        out = np.empty(shape, dtype=np.float32)
    elif out.dtype != np.float32 or out.shape != shape:
        raise ValueError(f"out must be a float32 array of shape {shape}, got {out.dtype} {out.shape}")
    np.subtract(array, np.float32(spec.window_min_hu), out=out, dtype=np.float32)
    np.divide(out, np.float32(spec.window_max_hu - spec.window_min_hu), out=out)
    np.multiply(out, np.float32(spec.output_max - spec.output_min), out=out)
    np.add(out, np.float32(spec.output_min), out=out)
    if spec.clip:
        np.clip(out, np.float32(spec.output_min), np.float32(spec.output_max), out=out)
    return out
