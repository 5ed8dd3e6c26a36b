"""The sizes clinicians read, per structure: the extents along its three principal axes (organs) and the largest
short-axis diameter of its axial cross-sections (tubular structures such as the aorta).

The greatest distance between two voxels of a structure (``measure.StructureMeasurement.greatest_extent_mm``) is
the length of the abdominal aorta in the scan, not its diameter; these measures are what a radiologist reports:

- principal extents: the structure's voxel centres give three principal axes (eigenvectors of their covariance,
  largest variance first: SNOMED CT Major Axis 131187009, Minor Axis 131188004, Perpendicular Axis 131189007); the
  extent along each is that of the union of the voxel boxes, so a one-voxel structure measures one voxel.
- short axis (SNOMED CT 103340004), for tubular structures: in every axial slice, each connected cross-section's
  minimum caliper width (the smallest distance between two parallel lines enclosing it, from the convex hull of
  its pixel squares); the largest of these. An oblique cut through a cylinder is an ellipse whose short axis is the
  cylinder's diameter, so a tilted aorta still measures its diameter, not the cut's length.

Written here because no kept library measures minimum caliper widths of a labelled voxel grid in millimetres
(scikit-image's ``regionprops`` gives Feret diameters in pixels, on isotropic pixels only).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
_COVARIANCE_POINTS = 500_000


@dataclass(frozen=True)
class PrincipalExtents:
    major_axis_mm: float
    minor_axis_mm: float
    perpendicular_axis_mm: float


def principal_extents(
    mask: np.ndarray, affine: np.ndarray, *, hull_points_ijk: np.ndarray | None = None
) -> PrincipalExtents:
    """Extents (mm) of a 3D ``mask`` along its principal axes, largest variance first; ``affine`` maps the mask's
    voxel indices to millimetres (RAS). ``hull_points_ijk`` (optional): indices that include every vertex of the
    convex hull of the mask's voxels (``measure`` has them), to avoid projecting every voxel."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or not mask.any():
        raise ValueError(f"principal_extents needs a non-empty 3D mask, got shape {mask.shape}")
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    indices = np.argwhere(mask)
    indices = indices[:: -(-len(indices) // _COVARIANCE_POINTS)]  # a regular subsample is enough for the axes
    points_mm = indices.astype(np.float64) @ linear.T
    if len(points_mm) > 1:
        covariance = np.cov(points_mm, rowvar=False)
        variances, axes = np.linalg.eigh(covariance)  # ascending
        axes = axes[:, np.argsort(variances)[::-1]]
    else:
        axes = np.eye(3)
    extreme_ijk = np.argwhere(mask) if hull_points_ijk is None else np.asarray(hull_points_ijk)
    extreme_mm = extreme_ijk.astype(np.float64) @ linear.T
    projected = extreme_mm @ axes  # (n, 3): coordinate along each axis
    # the union of voxel boxes reaches half a box beyond the extreme centres: the box's projection on each axis
    box_width = np.abs(linear.T @ axes).sum(axis=0)
    extents = projected.max(axis=0) - projected.min(axis=0) + box_width
    return PrincipalExtents(*(round(float(e), 2) for e in extents))


def max_axial_short_axis_mm(mask: np.ndarray, affine: np.ndarray) -> float:
    """The largest minimum-caliper width (mm) of the axial cross-sections of a 3D ``mask``.

    The axial slices are those of the voxel axis closest to the patient's superior direction; each 8-connected
    cross-section in a slice is measured on its own (the two iliac arteries are two sections, not one).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3 or not mask.any():
        raise ValueError(f"max_axial_short_axis_mm needs a non-empty 3D mask, got shape {mask.shape}")
    linear = np.asarray(affine, dtype=np.float64)[:3, :3]
    axis = int(np.argmax(np.abs(linear[2, :]) / np.linalg.norm(linear, axis=0)))  # the most superior voxel axis
    in_plane = [a for a in range(3) if a != axis]
    edges = linear[:, in_plane]  # (3, 2): mm per in-plane index step
    basis, _ = np.linalg.qr(edges)  # an orthonormal basis of the slice plane
    to_plane = basis.T @ edges  # 2D mm per index step
    corners = np.array([[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])
    widest = 0.0
    for index in np.flatnonzero(mask.any(axis=tuple(in_plane))):
        section = np.take(mask, index, axis=axis)
        components, n = ndimage.label(section, structure=_EIGHT_CONNECTED)
        for box, label in zip(ndimage.find_objects(components), range(1, n + 1), strict=True):
            pixels = components[box] == label
            border = pixels & ~ndimage.binary_erosion(pixels)
            ij = np.argwhere(border) + [s.start for s in box]
            points = ((ij[:, None, :] + corners[None]).reshape(-1, 2)) @ to_plane.T
            widest = max(widest, _minimum_width(points))
    return round(widest, 2)


def _minimum_width(points: np.ndarray) -> float:
    """The minimum caliper width of 2D ``points``: over the convex hull's edges, the largest distance of a hull
    vertex from the edge's line, minimised (rotating calipers, checked on every edge)."""
    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):  # collinear points: a line has no width beyond its pixels
        return 0.0
    edges = np.roll(hull, -1, axis=0) - hull
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1) / np.linalg.norm(edges, axis=1, keepdims=True)
    distances = np.abs((hull[None, :, :] - hull[:, None, :]) @ normals[:, :, None])[..., 0]  # (edge, vertex)
    return float(distances.max(axis=1).min())
