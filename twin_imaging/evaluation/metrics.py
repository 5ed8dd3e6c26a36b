"""Segmentation scores: Dice, normalized surface distance (surface Dice) and HD95. numpy + scipy only.

Surfaces and distances are MONAI's (``compute_surface_dice`` with ``use_subvoxels=False``,
``compute_hausdorff_distance(percentile=95)``), so scores agree with MONAI-based training code and the literature:

- the surface of a mask is its voxels with at least one face (6-connected) neighbour outside it, the image border
  counting as outside: ``mask & ~binary_erosion(mask)``, as in MONAI's ``get_mask_edges``;
- a surface distance is the Euclidean distance in mm from a surface voxel's centre to the nearest surface voxel
  centre of the other mask;
- NSD = surface voxels of either mask within the tolerance of the other surface / all surface voxels of both;
- HD95 = the larger of the two directed 95th percentiles (linear interpolation), not a percentile of the pooled set.

Distances within 1e-6 mm of the tolerance count as within it, so a distance of exactly n voxels (3 x 0.8 mm against
2.4 mm) is not split by float rounding; MONAI gets the same by comparing in float32.

Work is done on the union bounding box plus one voxel, so the cost follows the structure's size, not the volume's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from twin_imaging.label_boxes import label_boxes

_TIE_MM = 1e-6
_FIND_OBJECTS_MIN_LABELS = 5  # from this many labels on, score_label_maps finds all boxes in one pass per map


@dataclass(frozen=True)
class StructureScore:
    """Scores of one structure in one case."""

    dice: float  # nan when the structure is absent from both
    nsd: float  # normalized surface distance at the tolerance; nan when absent from both
    hd95_mm: float  # nan when absent from both; inf when exactly one is empty
    reference_voxels: int
    predicted_voxels: int
    reference_present: bool  # reference has >= 1 voxel


def dice_coefficient(predicted: np.ndarray, reference: np.ndarray) -> float:
    """2|P∩R| / (|P| + |R|); nan when both masks are empty."""
    pred, ref = _as_masks(predicted, reference)
    total = np.count_nonzero(pred) + np.count_nonzero(ref)
    return 2.0 * int(np.count_nonzero(pred & ref)) / int(total) if total else math.nan


def surface_distances_mm(
    predicted: np.ndarray, reference: np.ndarray, spacing_mm: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each predicted surface voxel to the reference surface, and from each reference one back.

    Distances to an empty surface are inf; an empty mask contributes an empty array.
    """
    pred, ref = _as_masks(predicted, reference)
    spacing = _as_spacing(spacing_mm, pred.ndim)
    cropped = _crop_pair(pred, ref, (_bounding_box(pred), _bounding_box(ref)))
    if cropped is None:
        return np.empty(0), np.empty(0)
    return _distances(*cropped, spacing)


def normalized_surface_dice(
    predicted: np.ndarray, reference: np.ndarray, spacing_mm: Sequence[float], *, tolerance_mm: float = 2.0
) -> float:
    """Fraction of both surfaces lying within ``tolerance_mm`` of the other; nan when both masks are empty."""
    return _nsd(*surface_distances_mm(predicted, reference, spacing_mm), _as_tolerance(tolerance_mm))


def hausdorff_distance_95_mm(predicted: np.ndarray, reference: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """Symmetric 95th-percentile Hausdorff distance in mm; nan when both are empty, inf when exactly one is."""
    return _hd95(*surface_distances_mm(predicted, reference, spacing_mm))


def score_structure(
    predicted: np.ndarray, reference: np.ndarray, spacing_mm: Sequence[float], *, tolerance_mm: float = 2.0
) -> StructureScore:
    """Dice, NSD at ``tolerance_mm`` and HD95 of one predicted mask against its reference."""
    pred, ref = _as_masks(predicted, reference)
    spacing = _as_spacing(spacing_mm, pred.ndim)
    cropped = _crop_pair(pred, ref, (_bounding_box(pred), _bounding_box(ref)))
    return _score_cropped(cropped, spacing, _as_tolerance(tolerance_mm))


def score_label_maps(
    predicted_labels: np.ndarray,
    reference_labels: np.ndarray,
    spacing_mm: Sequence[float],
    *,
    label_names: Mapping[int, str],
    tolerance_mm: float = 2.0,
) -> dict[str, StructureScore]:
    """Score each label of ``label_names`` (label → structure name) between two integer label maps."""
    pred = np.asarray(predicted_labels)
    ref = np.asarray(reference_labels)
    if pred.shape != ref.shape:
        raise ValueError(f"label maps differ in shape: predicted {pred.shape}, reference {ref.shape}")
    for name, array in (("predicted", pred), ("reference", ref)):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"the {name} label map must hold integers, got dtype {array.dtype}")
    spacing = _as_spacing(spacing_mm, pred.ndim)
    tolerance = _as_tolerance(tolerance_mm)
    labels = [int(label) for label in label_names]
    pred_boxes, ref_boxes = _label_boxes(pred, labels), _label_boxes(ref, labels)
    scores = {}
    for label, name in label_names.items():
        box = _union_box((pred_boxes[int(label)], ref_boxes[int(label)]), pred.shape)
        cropped = None if box is None else (pred[box] == label, ref[box] == label)
        scores[name] = _score_cropped(cropped, spacing, tolerance)
    return scores


def summarize_scores(per_case: Sequence[Mapping[str, StructureScore]]) -> dict[str, dict]:
    """Per structure, means over the cases whose reference holds it; JSON-friendly (None for no value).

    Each entry: ``dice``, ``nsd``, ``hd95_mm`` (means; infinite HD95 left out of its mean and counted in
    ``n_hd95_infinite``) and ``n_cases`` (cases with the structure in the reference).
    """
    names = list(dict.fromkeys(name for case in per_case for name in case))
    summary = {}
    for name in names:
        present = [case[name] for case in per_case if name in case and case[name].reference_present]
        hd95 = [score.hd95_mm for score in present]
        summary[name] = {
            "dice": _mean([score.dice for score in present]),
            "nsd": _mean([score.nsd for score in present]),
            "hd95_mm": _mean([value for value in hd95 if math.isfinite(value)]),
            "n_hd95_infinite": sum(1 for value in hd95 if math.isinf(value)),
            "n_cases": len(present),
        }
    return summary


# --- internals -------------------------------------------------------------------------------------------------


def _score_cropped(
    cropped: tuple[np.ndarray, np.ndarray] | None, spacing: tuple[float, ...], tolerance: float
) -> StructureScore:
    if cropped is None:
        return StructureScore(math.nan, math.nan, math.nan, 0, 0, False)
    pred, ref = cropped
    n_pred, n_ref = int(np.count_nonzero(pred)), int(np.count_nonzero(ref))
    distances = _distances(pred, ref, spacing)
    return StructureScore(
        dice=2.0 * int(np.count_nonzero(pred & ref)) / (n_pred + n_ref),
        nsd=_nsd(*distances, tolerance),
        hd95_mm=_hd95(*distances),
        reference_voxels=n_ref,
        predicted_voxels=n_pred,
        reference_present=n_ref > 0,
    )


def _distances(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    pred_surface, ref_surface = _surface(pred), _surface(ref)
    return _directed(pred_surface, ref_surface, spacing), _directed(ref_surface, pred_surface, spacing)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a face neighbour outside it; outside the array counts as outside."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure, border_value=0)


def _directed(source: np.ndarray, target: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance from each voxel of ``source`` to the nearest voxel of ``target`` (inf if there is none)."""
    if not source.any():
        return np.empty(0)
    if not target.any():
        return np.full(np.count_nonzero(source), np.inf)
    return ndimage.distance_transform_edt(~target, sampling=spacing)[source]


def _nsd(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray, tolerance: float) -> float:
    total = pred_to_ref.size + ref_to_pred.size
    if total == 0:
        return math.nan
    limit = tolerance + _TIE_MM
    return float(np.count_nonzero(pred_to_ref <= limit) + np.count_nonzero(ref_to_pred <= limit)) / total


def _hd95(pred_to_ref: np.ndarray, ref_to_pred: np.ndarray) -> float:
    if not (pred_to_ref.size and ref_to_pred.size):  # an empty mask: the other side's distances are all inf
        return math.inf if pred_to_ref.size or ref_to_pred.size else math.nan
    return max(float(np.percentile(pred_to_ref, 95)), float(np.percentile(ref_to_pred, 95)))


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    """The smallest box holding every voxel of ``mask``; None if it is empty.

    Reduces the last axis over the whole array once, then searches it only inside the box of the leading axes.
    """
    if mask.ndim == 1:
        hits = np.flatnonzero(mask)
        return (slice(int(hits[0]), int(hits[-1]) + 1),) if hits.size else None
    leading = _bounding_box(mask.any(axis=-1))
    if leading is None:
        return None
    hits = np.flatnonzero(mask[leading].any(axis=tuple(range(mask.ndim - 1))))
    return (*leading, slice(int(hits[0]), int(hits[-1]) + 1))


def _union_box(boxes: Sequence[tuple[slice, ...] | None], shape: tuple[int, ...]) -> tuple[slice, ...] | None:
    """The box covering ``boxes``, grown by one voxel on every side within the array; None if all are None."""
    present = [box for box in boxes if box is not None]
    if not present:
        return None
    return tuple(
        slice(max(min(box[axis].start for box in present) - 1, 0), min(max(box[axis].stop for box in present) + 1, n))
        for axis, n in enumerate(shape)
    )


def _crop_pair(
    pred: np.ndarray, ref: np.ndarray, boxes: tuple[tuple[slice, ...] | None, tuple[slice, ...] | None]
) -> tuple[np.ndarray, np.ndarray] | None:
    box = _union_box(boxes, pred.shape)
    return None if box is None else (pred[box], ref[box])


def _label_boxes(labels: np.ndarray, wanted: Sequence[int]) -> dict[int, tuple[slice, ...] | None]:
    if len(wanted) >= _FIND_OBJECTS_MIN_LABELS and min(wanted) >= 1:
        found = label_boxes(labels, max_label=max(wanted))
        return {label: found[label - 1] for label in wanted}
    return {label: _bounding_box(labels == label) for label in wanted}


def _as_masks(predicted: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(predicted).astype(bool, copy=False)
    ref = np.asarray(reference).astype(bool, copy=False)
    if pred.shape != ref.shape:
        raise ValueError(f"masks differ in shape: predicted {pred.shape}, reference {ref.shape}")
    return pred, ref


def _as_spacing(spacing_mm: Sequence[float], ndim: int) -> tuple[float, ...]:
    spacing = tuple(float(s) for s in spacing_mm)
    if len(spacing) != ndim or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing_mm must be {ndim} positive finite voxel sizes, got {spacing_mm!r}")
    return spacing


def _as_tolerance(tolerance_mm: float) -> float:
    tolerance = float(tolerance_mm)
    if not (math.isfinite(tolerance) and tolerance >= 0):
        raise ValueError(f"tolerance_mm must be finite and >= 0, got {tolerance_mm!r}")
    return tolerance


def _mean(values: Sequence[float]) -> float | None:
    return float(np.mean(values)) if values else None
