"""Sliding-window prediction with Gaussian blending, in numpy.

The same windows, padding and weights as MONAI's ``sliding_window_inference(..., mode="gaussian",
padding_mode="constant", cval=0)`` for one image, so a network gives the same result in training (MONAI, torch) and in
serving (ONNX Runtime, no torch). The output and a weight volume are accumulated in place, one batch of windows at a
time.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from twin_imaging.errors import ModelError


def window_starts(image_size: Sequence[int], patch_size: Sequence[int], overlap: float) -> list[tuple[int, ...]]:
    """The first voxel of every window, in MONAI's order (last axis fastest).

    Along an axis shorter than the patch, the image is taken as padded to the patch (one window at 0), as
    ``sliding_window_inference`` does. Windows step by ``int(patch * (1 - overlap))`` (at least 1, or the whole patch
    where it equals the image) and the last one is shifted back to end at the image's edge.
    """
    patch = _check_patch_size(patch_size)
    if len(image_size) != len(patch):
        raise ValueError(f"image size {tuple(image_size)} and patch size {patch} differ in dimensions")
    _check_overlap(overlap)
    per_axis = []
    for size, length in zip((max(int(s), p) for s, p in zip(image_size, patch, strict=True)), patch, strict=True):
        interval = length if length == size else max(int(length * (1 - overlap)), 1)
        count = math.ceil((size - length) / interval) + 1  # the first step whose window reaches the edge, plus one
        per_axis.append([min(i * interval, size - length) for i in range(count)])
    return list(itertools.product(*per_axis))


def gaussian_importance_map(patch_size: Sequence[int], sigma_scale: float = 0.125) -> np.ndarray:
    """Float32 window weights: a separable Gaussian with sigma ``sigma_scale * patch`` per axis, floored at 1e-3.

    The same as MONAI's ``compute_importance_map(patch_size, mode="gaussian", sigma_scale=sigma_scale)``.
    """
    patch = _check_patch_size(patch_size)
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be positive, got {sigma_scale}")
    weights = np.ones((), dtype=np.float32)
    for length in patch:
        sigma = length * sigma_scale
        offsets = np.arange(length, dtype=np.float32) - np.float32((length - 1) / 2.0)
        exponent = offsets**2 / np.float32(-2 * sigma**2)  # float32, as torch computes it
        profile = np.exp(exponent.astype(np.float64)).astype(np.float32)  # rounds as torch's float32 exp does
        weights = weights[..., None] * profile
    floor = max(float(weights.min()), 1e-3)
    return np.maximum(weights, np.float32(floor)).astype(np.float32, copy=False)


def sliding_window_predict(
    image: np.ndarray,
    predict_batch: Callable[[np.ndarray], np.ndarray],
    *,
    patch_size: Sequence[int],
    overlap: float = 0.25,
    batch_size: int = 4,
    sigma_scale: float = 0.125,
    progress: Callable[[int, int], None] | None = None,
    concurrency: int = 1,
) -> np.ndarray:
    """Predict a whole ``image`` (C, X, Y, Z) window by window and blend the windows with Gaussian weights.

    ``predict_batch`` maps (B, C, *patch_size) to (B, K, *patch_size). The result is (K, X, Y, Z) float32. Axes
    shorter than the patch are zero-padded on both sides (the extra voxel after) and cropped back. ``progress(done,
    total)`` is called with the number of windows predicted after each batch.
    """
    patch = _check_patch_size(patch_size)
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != len(patch) + 1:
        raise ValueError(f"image must be (channels, *{len(patch)} spatial axes), got shape {image.shape}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    original_size = image.shape[1:]
    shortfall = [max(p - s, 0) for s, p in zip(original_size, patch, strict=True)]
    padding = [(short // 2, short - short // 2) for short in shortfall]  # as MONAI: the odd voxel goes after
    if any(shortfall):
        image = np.pad(image, [(0, 0), *padding], mode="constant", constant_values=0.0)
    size = image.shape[1:]

    starts = window_starts(size, patch, overlap)
    importance = gaussian_importance_map(patch, sigma_scale)
    total = len(starts)
    weight_sum = np.zeros(size, dtype=np.float32)
    output: np.ndarray | None = None
    weighted: np.ndarray | None = None  # one window's prediction times the importance map, reused

    batches = [starts[first : first + batch_size] for first in range(0, total, batch_size)]

    def windows_of(chunk) -> list[tuple[slice, ...]]:
        return [tuple(slice(s, s + p) for s, p in zip(start, patch, strict=True)) for start in chunk]

    def predict(chunk) -> np.ndarray:
        batch = np.stack([image[(slice(None), *window)] for window in windows_of(chunk)])
        predicted = np.asarray(predict_batch(batch), dtype=np.float32)
        if predicted.ndim != batch.ndim or predicted.shape[0] != len(chunk) or predicted.shape[2:] != patch:
            raise ModelError(
                f"the network returned shape {predicted.shape} for a batch of shape {batch.shape}; "
                f"expected ({len(chunk)}, channels, {', '.join(map(str, patch))})"
            )
        return predicted

    done = 0
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="windows") if concurrency > 1 else None
    in_flight: deque = deque()
    upcoming = iter(batches)
    try:
        for chunk in batches:
            if pool is None:  # on the calling thread: its thread-local state (e.g. torch.no_grad) holds
                predicted = predict(next(upcoming))
            else:
                while len(in_flight) <= concurrency and (following := next(upcoming, None)) is not None:
                    in_flight.append(pool.submit(predict, following))
                predicted = in_flight.popleft().result()
            if output is None:
                output = np.zeros((predicted.shape[1], *size), dtype=np.float32)
                weighted = np.empty(predicted.shape[1:], dtype=np.float32)
            elif predicted.shape[1] != output.shape[0]:
                raise ModelError(f"the network returned {predicted.shape[1]} channels after {output.shape[0]} before")
            for window, window_prediction in zip(windows_of(chunk), predicted, strict=True):
                np.multiply(window_prediction, importance, out=weighted)
                output[(slice(None), *window)] += weighted
                weight_sum[window] += importance
            done += len(chunk)
            if progress is not None:
                progress(done, total)
    finally:
        if pool is not None:
            for future in in_flight:
                future.cancel()
            pool.shutdown(wait=True)

    assert output is not None  # there is always at least one window
    output /= weight_sum
    if any(shortfall):
        crop = tuple(slice(before, before + s) for (before, _), s in zip(padding, original_size, strict=True))
        output = np.ascontiguousarray(output[(slice(None), *crop)])
    return output


def _check_patch_size(patch_size: Sequence[int]) -> tuple[int, ...]:
    patch = tuple(int(p) for p in patch_size)
    if not patch or any(p < 1 for p in patch):
        raise ValueError(f"patch size must be positive integers, got {tuple(patch_size)}")
    return patch


def _check_overlap(overlap: float) -> None:
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be at least 0 and below 1, got {overlap}")
