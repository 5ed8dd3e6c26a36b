"""Measurements per segmented structure: volume, intensity statistics, position, greatest extent, principal extents
and, for tubular structures, the largest axial short-axis diameter (``clinical_measures``).

All positions are in RAS millimetres (as ``Volume.affine_ras``); volumes in millilitres; intensities in the image's
units (HU for CT).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.spatial import ConvexHull, QhullError

from twin_imaging.clinical_measures import PrincipalExtents, max_axial_short_axis_mm, principal_extents
from twin_imaging.label_boxes import label_boxes
from twin_imaging.volume import Volume

GRID_TOLERANCE_MM = 1e-3
MAX_LABEL = 65535  # as many segments as DICOM SEG allows
_BLOCK_ELEMENTS = 1 << 21  # pairwise differences computed per block of rows × points


@dataclass(frozen=True)
class StructureMeasurement:
    name: str
    label: int
    voxel_count: int
    volume_ml: float
    hu_mean: float | None  # None where no image is given
    hu_std: float | None
    hu_percentiles: dict[int, float]  # {5: ..., 25: ..., 50: ..., 75: ..., 95: ...}; empty where no image
    bbox_min_ras_mm: tuple[float, float, float]  # corners of the axis-aligned box (RAS) around the voxel centres
    bbox_max_ras_mm: tuple[float, float, float]
    bbox_min_ijk: tuple[int, int, int]  # inclusive voxel index box on the label grid
    bbox_max_ijk: tuple[int, int, int]
    centroid_ras_mm: tuple[float, float, float]
    greatest_extent_mm: float  # largest distance between two voxel centres (the aorta's length, not its diameter)
    principal_extents: PrincipalExtents  # extents along the three principal axes
    short_axis_mm: float | None = None  # tubular structures: largest short-axis diameter of the axial sections

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly dict: tuples become lists, percentile keys become strings."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        out["hu_percentiles"] = {str(p): v for p, v in self.hu_percentiles.items()}
        return out


def check_same_grid(image: Volume, labels: Volume, *, tol_mm: float = GRID_TOLERANCE_MM) -> None:
    """Raise ValueError unless ``image`` and ``labels`` share shape and affine (within ``tol_mm``)."""
    if image.shape != labels.shape:
        raise ValueError(f"image shape {image.shape} differs from the label map's {labels.shape}")
    difference = float(np.max(np.abs(image.affine_ras - labels.affine_ras)))
    if difference > tol_mm:
        raise ValueError(
            f"image and label map are on different grids: their affines differ by up to {difference:.4g} mm "
            f"(tolerance {tol_mm} mm); resample one onto the other first"
        )


def measure_structures(
    labels: Volume,
    image: Volume | None = None,
    *,
    label_names: Mapping[int, str] | None = None,
    percentiles: Sequence[float] = (5, 25, 50, 75, 95),
    tubular: Collection[str] = (),
) -> list[StructureMeasurement]:
    """One measurement per label present in ``labels`` (absent structures omitted), ordered by label.

    Names come from ``label_names``, else ``labels.label_names``; unnamed labels are called ``label_<n>``.
    ``image`` (optional, on the same grid) gives the intensity statistics; structures named in ``tubular`` also get
    their axial short-axis diameter.
    """
    if image is not None:
        check_same_grid(image, labels)
    if not all(0 <= p <= 100 for p in percentiles):
        raise ValueError(f"percentiles must lie in 0..100, got {tuple(percentiles)}")
    names = dict(label_names if label_names is not None else labels.label_names or {})
    array = as_label_array(labels.array)
    voxel_ml = abs(float(np.linalg.det(labels.affine_ras[:3, :3]))) / 1000.0
    measurements = []
    for index, box in enumerate(label_boxes(array)):  # one pass over the map for every label
        if box is None:
            continue
        label = index + 1
        mask = array[box] == label
        values = None if image is None else image.array[box][mask]
        measurements.append(
            _measure_one(
                mask,
                box,
                labels,
                name=names.get(label, f"label_{label}"),
                label=label,
                voxel_ml=voxel_ml,
                values=values,
                percentiles=percentiles,
                tubular=names.get(label, f"label_{label}") in tubular,
            )
        )
    return measurements


def as_label_array(array: np.ndarray) -> np.ndarray:
    """A label map as non-negative integers (bool and whole-valued floats accepted); ValueError otherwise."""
    if array.dtype == np.bool_:
        return array.view(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        whole = np.isfinite(array) & (array == np.round(array))
        if not whole.all():
            example = array[~whole].flat[0].item()
            raise ValueError(f"label map must hold whole numbers, found {example!r} ({array.dtype}); is it an image?")
        array = array.astype(np.int64)
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"label map must have an integer dtype, got {array.dtype}")
    if np.issubdtype(array.dtype, np.signedinteger) and array.size and array.min() < 0:
        raise ValueError(f"label values must be non-negative, found {int(array.min())}")
    if array.dtype.itemsize > 2 and array.size and array.max() > MAX_LABEL:
        raise ValueError(f"label values must be at most {MAX_LABEL}, found {int(array.max())}")
    return array


def _measure_one(
    mask: np.ndarray,
    box: tuple[slice, slice, slice],
    labels: Volume,
    *,
    name: str,
    label: int,
    voxel_ml: float,
    values: np.ndarray | None,
    percentiles: Sequence[float],
    tubular: bool,
) -> StructureMeasurement:
    offset = np.array([s.start for s in box], dtype=np.float64)
    count = int(np.count_nonzero(mask))
    # centroid from per-axis projections: cheaper than listing every voxel's indices
    as_int = mask.view(np.uint8)
    centroid_ijk = offset + [
        float(np.dot(as_int.sum(axis=other, dtype=np.int64), np.arange(n))) / count
        for other, n in (((1, 2), mask.shape[0]), ((0, 2), mask.shape[1]), ((0, 1), mask.shape[2]))
    ]
    hull_candidates = _hull_candidates(mask)
    extreme_ras = labels.index_to_ras(offset + hull_candidates)
    extreme_ras = extreme_ras[_hull_vertices(extreme_ras)]
    hu_mean = hu_std = None
    hu_percentiles: dict[int, float] = {}
    if values is not None:
        hu_mean, hu_std, quantiles = _intensity_stats(values, percentiles)
        hu_percentiles = {
            int(p) if float(p).is_integer() else p: q for p, q in zip(percentiles, quantiles, strict=True)
        }
    return StructureMeasurement(
        name=name,
        label=label,
        voxel_count=count,
        volume_ml=count * voxel_ml,
        hu_mean=hu_mean,
        hu_std=hu_std,
        hu_percentiles=hu_percentiles,
        bbox_min_ras_mm=_floats(extreme_ras.min(axis=0)),  # a linear map's extremes lie on the hull vertices
        bbox_max_ras_mm=_floats(extreme_ras.max(axis=0)),
        bbox_min_ijk=tuple(int(s.start) for s in box),  # type: ignore[arg-type]
        bbox_max_ijk=tuple(int(s.stop) - 1 for s in box),  # type: ignore[arg-type]
        centroid_ras_mm=_floats(labels.index_to_ras(centroid_ijk)),
        greatest_extent_mm=_max_pairwise_distance(extreme_ras),
        principal_extents=principal_extents(mask, labels.affine_ras, hull_points_ijk=hull_candidates),
        short_axis_mm=max_axial_short_axis_mm(mask, labels.affine_ras) if tubular else None,
    )


def max_diameter_mm(mask: np.ndarray, affine: np.ndarray) -> float:
    """The largest distance (mm) between two voxel centres of a 3D ``mask``, placed by the voxel → RAS ``affine``.

    Exact (convex hull of the boundary voxels, then an all-pairs search on its vertices); pass a mask cropped to the
    structure, with the affine shifted to the crop, for speed. 0 for an empty or one-voxel mask.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"max_diameter_mm needs a 3D mask, got shape {mask.shape}")
    if not mask.any():
        return 0.0
    affine = np.asarray(affine, dtype=np.float64)
    points = _hull_candidates(mask) @ affine[:3, :3].T + affine[:3, 3]
    return _max_pairwise_distance(points[_hull_vertices(points)])


def _hull_candidates(mask: np.ndarray) -> np.ndarray:
    """Indices (n, 3) of boundary voxels that hold every vertex of the convex hull of the mask's voxel centres.

    A hull vertex is never strictly between two other voxels on a grid line, so it is the first or last voxel of its
    line along each axis: keep the ends of every k-line, then of every i-line and j-line among those.
    """
    present = mask.any(axis=2)
    ii, jj = np.nonzero(present)
    first = mask.argmax(axis=2)[ii, jj]
    last = mask.shape[2] - 1 - mask[:, :, ::-1].argmax(axis=2)[ii, jj]
    points = np.concatenate([np.stack([ii, jj, first], 1), np.stack([ii, jj, last], 1)])
    for axis in (0, 1):
        points = _line_ends(points, axis)
    return points


def _line_ends(points: np.ndarray, axis: int) -> np.ndarray:
    """The first and last of ``points`` along ``axis`` on each grid line parallel to it."""
    a, b = (c for c in range(3) if c != axis)
    order = np.lexsort((points[:, axis], points[:, b], points[:, a]))
    points = points[order]
    line = points[:, (a, b)]
    new_line = np.any(line[1:] != line[:-1], axis=1)
    starts = np.flatnonzero(np.concatenate([[True], new_line]))
    ends = np.flatnonzero(np.concatenate([new_line, [True]]))
    return points[np.unique(np.concatenate([starts, ends]))]


def _hull_vertices(points: np.ndarray) -> np.ndarray:
    """Indices of the convex hull's vertices, or of all points where the hull is degenerate (flat, < 4 points)."""
    if len(points) < 4:
        return np.arange(len(points))
    try:
        return ConvexHull(points).vertices
    except (QhullError, ValueError):
        return np.arange(len(points))


def _intensity_stats(values: np.ndarray, percentiles: Sequence[float]) -> tuple[float, float, list[float]]:
    """Mean, standard deviation and percentiles (linear interpolation, as ``np.percentile``) of ``values``.

    Integer images (CT in HU) go through a histogram, which avoids sorting millions of voxels.
    """
    if np.issubdtype(values.dtype, np.integer) and values.size and int(values.max()) - int(values.min()) < 1 << 20:
        low = int(values.min())
        counts = np.bincount(values.astype(np.intp) - low)
        levels = np.arange(low, low + len(counts), dtype=np.float64)
        n = int(values.size)
        mean = float(np.dot(counts, levels)) / n
        std = float(np.sqrt(np.dot(counts, (levels - mean) ** 2) / n))
        cumulative = np.cumsum(counts)
        position = (n - 1) * np.asarray(percentiles, dtype=np.float64) / 100.0  # rank in the sorted values
        below, fraction = np.floor(position), position - np.floor(position)
        lower = levels[np.searchsorted(cumulative, below, side="right")]
        upper = levels[np.searchsorted(cumulative, np.minimum(below + 1, n - 1), side="right")]
        return mean, std, [float(v) for v in lower + fraction * (upper - lower)]
    values = values.astype(np.float64, copy=False)
    return float(values.mean()), float(values.std()), [float(v) for v in np.percentile(values, percentiles)]


def _max_pairwise_distance(points: np.ndarray) -> float:
    """The largest distance between two of ``points`` (n, 3), exactly.

    A farthest-point sweep gives a lower bound ``d``; a point at distance ``r`` from the centre can only belong to a
    pair longer than ``d`` if ``r + r_max >= d``, so the others are dropped before the all-pairs search, which then
    runs in blocks of rows on dot products of the centred points (exact to ~1e-9 mm); the winning pair's distance is
    recomputed from its difference.
    """
    if len(points) < 2:
        return 0.0
    centred = points - points.mean(axis=0)
    radius = np.sqrt(np.einsum("ij,ij->i", centred, centred))
    lower_bound = 0.0
    start = int(np.argmax(radius))
    for _ in range(2):
        distances = np.linalg.norm(centred - centred[start], axis=1)
        start = int(np.argmax(distances))
        lower_bound = max(lower_bound, float(distances[start]))
    centred = centred[radius + radius.max() >= lower_bound * (1 - 1e-9)]
    norms = np.einsum("ij,ij->i", centred, centred)
    best, pair = -1.0, (0, 0)
    rows = max(1, _BLOCK_ELEMENTS // len(centred))
    for first in range(0, len(centred), rows):
        block = norms[first : first + rows, None] + norms[None, :] - 2.0 * (centred[first : first + rows] @ centred.T)
        flat = int(np.argmax(block))
        if block.flat[flat] > best:
            best, pair = float(block.flat[flat]), (first + flat // len(centred), flat % len(centred))
    return float(np.linalg.norm(centred[pair[0]] - centred[pair[1]]))


def _floats(values: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(v) for v in values)  # type: ignore[return-value]
