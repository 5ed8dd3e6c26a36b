"""Kidney and tumour features from a KiTS-style label map (kidney, tumour, cyst), for nephrectomy outcome models.

The same code measures expert masks and the pipeline's own segmentations. Volumes in mL, lengths in mm, positions in
RAS mm (``Volume.affine_ras``: +x towards the patient's Right). Only boxes around the kidneys are read after two
projections of the whole map, so a case takes a few tens of milliseconds once read.

Definitions (from the mask alone):
- Kidneys: 3D connected components (26-connected, on blocks of about 4 mm, or 1.5 mm where those find one kidney)
  of kidney ∪ tumour ∪ cyst. The affected kidney has the most tumour; the contralateral kidney is the largest other
  component of at least 5 mL whose centre lies at least 40 mm from the affected one's along x. The midline lies
  halfway between them; every other component joins the side of the midline it lies on. No contralateral kidney
  (solitary, or a horseshoe kidney in one piece): the midline is the grid's centre and every component belongs to the
  affected side.
- Index tumour: the largest tumour component of the affected side; its diameter, exophytic fraction, distances and
  R.E.N.A.L.-like points are reported. ``tumor_volume_ml`` counts all tumour of the affected side,
  ``n_tumor_components`` its components of at least 0.25 mL (at least 1).
- Kidney outline: in each axial slice (the voxel axis closest to S-I), the filled convex hull of the affected
  kidney's parenchyma (label 1): a stand-in for the kidney's contour before the tumour grew, interpolated across the
  tumour as a reader does on axial images. (One 3D hull spans tumours that bulge from a narrower stretch of the
  kidney, and read most KiTS tumours as endophytic.) Sampled on a ~2 mm grid for the centroid, the long axis (its
  principal axis) and the sinus. A tumour wrapped by a thin rim of parenchyma reads as endophytic.
- Exophytic fraction: the share of the index tumour's voxels outside the outline (counted on up to 48 of its slices).
- Renal sinus: the medial concavity: grid points inside the outline that are neither kidney, tumour nor cyst and at
  least 3 mm (in-plane) from its edge; of their 26-connected components, the largest whose centre lies on the
  midline's side of the kidney centroid (else the largest), if it holds at least 2 mL. Where the annotation fills the
  sinus in (many KiTS masks do) no such component exists, and the kidney's core stands in: outline points at least
  15 mm (in-plane) from its edge, or the deepest ones (``hilum_from_concavity`` False). Hilum point: the centroid of
  the sinus region.
- R.E.N.A.L.-like points (Kutikov & Uzzo 2009), each 1..3; ``renal_score`` is their sum (4..12):
  R: index tumour maximum diameter ≤ 40 mm 1, 40-70 mm 2, ≥ 70 mm 3.
  E: exophytic fraction ≥ 50 % 1, < 50 % 2, ≤ 1 % (entirely endophytic, allowing voxel noise) 3.
  N: nearest distance between the index tumour's surface and the sinus region's points (KiTS labels no collecting
     system; the sinus stands in for it) ≥ 7 mm 1, 4-7 mm 2, ≤ 4 mm 3.
  L: polar lines are the planes normal to the kidney's long axis through the two ends of the sinus region along it.
     Entirely beyond one polar line 1; across a polar line 2; more than half between the polar lines, or across the
     midplane between them 3.
  ``renal_ap_suffix``: "a" / "p" where the tumour centroid lies ≥ 5 mm anterior / posterior of the kidney centroid,
  else "x". The hilar suffix "h" needs the renal vessels, which the mask lacks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError, cKDTree

from twin_imaging.errors import InputError
from twin_imaging.measure import max_diameter_mm
from twin_imaging.outcome.kidney_split import _FULL, KITS_LABELS, KidneySplit, _component_centres, split_kidneys
from twin_imaging.volume import Volume

__all__ = [
    "KITS_LABELS",
    "KidneyFeatures",
    "KidneySplit",
    "bounding_box",
    "kidney_features",
    "shifted_affine",
    "split_kidneys",
]

GRID_MM = 2.0  # grid the kidney hull and sinus are sampled on
MIN_TUMOR_COMPONENT_ML = 0.25
SINUS_DEPTH_MM = 3.0
MIN_SINUS_ML = 2.0
CORE_DEPTH_MM = 15.0
ENDOPHYTIC_FRACTION = 0.01
AP_MARGIN_MM = 5.0
MAX_SLICES = 48  # axial slices of the index tumour the exophytic fraction is counted on
MAX_SAMPLES = 20_000  # index-tumour points for distances and location


@dataclass(frozen=True)
class KidneyFeatures:
    affected_side: str  # "left" | "right" (the patient's)
    tumor_volume_ml: float
    cyst_volume_ml: float  # affected side
    affected_parenchyma_ml: float  # label 1 of the affected side
    contralateral_parenchyma_ml: float
    total_parenchyma_ml: float
    tumor_max_diameter_mm: float
    tumor_to_kidney_ratio: float  # tumour / (affected parenchyma + tumour)
    exophytic_fraction: float
    tumor_to_kidney_centroid_mm: float
    tumor_to_hilum_mm: float
    tumor_to_sinus_mm: float  # nearest, as used by the N points
    renal_radius_points: int
    renal_exophytic_points: int
    renal_nearness_points: int
    renal_location_points: int
    renal_score: int
    renal_ap_suffix: str
    n_tumor_components: int
    contralateral_present: bool
    contralateral_tumor_volume_ml: float
    hilum_from_concavity: bool  # False: the kidney's core stood in for the sinus

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def kidney_features(labels: Volume, *, labels_map: Mapping[str, int] = KITS_LABELS) -> KidneyFeatures:
    """Volumes, tumour geometry and R.E.N.A.L.-like points of the affected kidney (see the module's definitions)."""
    split = split_kidneys(labels, labels_map=labels_map)
    box, affine, voxel_ml, values = split.labels, split.affine_ras, split.voxel_ml, split.values
    tumor_box = bounding_box(box == values["tumor"])
    components, _ = ndimage.label(box[tumor_box] == values["tumor"], structure=_FULL)
    sizes = np.bincount(components.ravel())[1:]
    index_tumor = components == int(np.argmax(sizes)) + 1
    tumor_affine = shifted_affine(affine, [s.start for s in tumor_box])
    tumor_ml = float(sizes.sum()) * voxel_ml
    affected_ml = float(split.affected_parenchyma_ml)
    cyst_ml = float(np.count_nonzero(box == values["cyst"])) * voxel_ml if "cyst" in values else 0.0
    kidney = _Envelope(box, values["kidney"], affine, split.medial_ras)
    sampled, sampled_affine = _subsampled(index_tumor, tumor_affine)
    samples = np.argwhere(sampled) @ sampled_affine[:3, :3].T + sampled_affine[:3, 3]
    tumor_centroid = _centroid_ras(index_tumor, tumor_affine)
    diameter = max_diameter_mm(index_tumor, tumor_affine)
    exophytic = _exophytic_fraction(box, values["kidney"], index_tumor, tumor_box, kidney.axial)
    to_sinus = float(cKDTree(kidney.sinus).query(_surface(sampled, sampled_affine))[0].min())
    along = samples @ kidney.long_axis
    between = (along >= kidney.polar[0]) & (along <= kidney.polar[1])
    if not between.any():
        location = 1
    elif between.mean() > 0.5 or along.min() < sum(kidney.polar) / 2 < along.max():
        location = 3
    else:
        location = 2
    radius = 1 if diameter <= 40 else 3 if diameter >= 70 else 2
    exophytic_points = 1 if exophytic >= 0.5 else 3 if exophytic <= ENDOPHYTIC_FRACTION else 2
    nearness = 1 if to_sinus >= 7 else 3 if to_sinus <= 4 else 2
    forward = tumor_centroid[1] - kidney.centroid[1]
    return KidneyFeatures(
        affected_side=split.affected_side,
        tumor_volume_ml=tumor_ml,
        cyst_volume_ml=cyst_ml,
        affected_parenchyma_ml=affected_ml,
        contralateral_parenchyma_ml=float(split.contralateral_parenchyma_ml),
        total_parenchyma_ml=affected_ml + float(split.contralateral_parenchyma_ml),
        tumor_max_diameter_mm=diameter,
        tumor_to_kidney_ratio=tumor_ml / (affected_ml + tumor_ml),
        exophytic_fraction=exophytic,
        tumor_to_kidney_centroid_mm=float(np.linalg.norm(tumor_centroid - kidney.centroid)),
        tumor_to_hilum_mm=float(np.linalg.norm(tumor_centroid - kidney.sinus.mean(axis=0))),
        tumor_to_sinus_mm=to_sinus,
        renal_radius_points=radius,
        renal_exophytic_points=exophytic_points,
        renal_nearness_points=nearness,
        renal_location_points=location,
        renal_score=radius + exophytic_points + nearness + location,
        renal_ap_suffix="a" if forward >= AP_MARGIN_MM else "p" if forward <= -AP_MARGIN_MM else "x",
        n_tumor_components=max(1, int(np.count_nonzero(sizes * voxel_ml >= MIN_TUMOR_COMPONENT_ML))),
        contralateral_present=split.contralateral_present,
        contralateral_tumor_volume_ml=float(split.contralateral_tumor_ml),
        hilum_from_concavity=kidney.hilum_from_concavity,
    )


class _Envelope:
    """The kidney's outline on a ~GRID_MM grid: per axial slice, the filled convex hull of the parenchyma.

    Gives the kidney centroid and long axis (principal axis of the outline), the sinus points (RAS) and the polar
    lines' positions along the long axis.
    """

    def __init__(self, box: np.ndarray, kidney: int, affine: np.ndarray, medial: np.ndarray) -> None:
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        self.axial = int(np.argmax(np.abs(affine[2, :3]) / spacing))  # the voxel axis closest to S-I
        steps = np.array([max(1, round(GRID_MM / s)) for s in spacing])
        grid = box[:: steps[0], :: steps[1], :: steps[2]]
        parenchyma = np.moveaxis(grid == kidney, self.axial, 0)
        inside = np.moveaxis(np.stack([_filled_hull_2d(plane) for plane in parenchyma]), 0, self.axial)
        if not inside.any():
            raise InputError("the affected kidney has no parenchyma (label 1) to outline")
        to_ras = affine[:3, :3] * steps
        points = np.argwhere(inside) @ to_ras.T + affine[:3, 3]
        self.centroid = points.mean(axis=0)
        centred = points - self.centroid
        self.long_axis = np.linalg.eigh(centred.T @ centred)[1][:, -1]
        radius = SINUS_DEPTH_MM / (spacing * steps)  # in grid steps; the disc lies in the axial plane
        half = [0 if a == self.axial else int(radius[a]) for a in range(3)]
        offsets = np.ogrid[tuple(slice(-h, h + 1) for h in half)]
        disc = sum((o / radius[a]) ** 2 for a, o in enumerate(offsets)) <= 1.0
        deep = ndimage.binary_erosion(inside, structure=disc) & (grid == 0)  # >= SINUS_DEPTH_MM inside the outline
        concave, n = ndimage.label(deep, structure=_FULL)
        region = None
        if n:
            sizes = np.bincount(concave.ravel())[1:]
            facing = (_component_centres(concave, n) @ to_ras.T + affine[:3, 3] - self.centroid) @ medial > 0
            chosen = int(np.argmax(np.where(facing, sizes, 0) if facing.any() else sizes))
            if sizes[chosen] * abs(np.linalg.det(to_ras)) / 1000.0 >= MIN_SINUS_ML:
                region = concave == chosen + 1
        self.hilum_from_concavity = region is not None
        if region is None:  # no sinus (filled in by the annotation, or a convex mask): the kidney's core stands in
            sampling = spacing * steps
            sampling[self.axial] = 1e6  # distances within the axial plane
            depth = ndimage.distance_transform_edt(np.pad(inside, 1), sampling=sampling)[1:-1, 1:-1, 1:-1]
            region = depth >= min(CORE_DEPTH_MM, depth.max())
        self.sinus = np.argwhere(region) @ to_ras.T + affine[:3, 3]
        ends = self.sinus @ self.long_axis
        self.polar = (float(ends.min()), float(ends.max()))


def _filled_hull_2d(mask: np.ndarray) -> np.ndarray:
    """The pixels whose centres lie in the convex hull of ``mask``'s pixel centres (``mask`` itself if flat)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return mask.copy()
    first = mask.argmax(axis=1)[rows]
    last = mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1)[rows]
    points = np.concatenate([np.stack([rows, first], 1), np.stack([rows, last], 1)]).astype(np.float64)
    try:
        equations = ConvexHull(points).equations
    except (QhullError, ValueError):
        return mask.copy()
    low, high = _intervals(equations[:, :2], equations[:, 2], 1, np.arange(mask.shape[0])[:, None])
    columns = np.arange(mask.shape[1])
    return (columns >= low[:, None]) & (columns <= high[:, None])


def _exophytic_fraction(
    box: np.ndarray, kidney: int, tumor: np.ndarray, tumor_box: tuple[slice, ...], axial: int
) -> float:
    """Share of ``tumor``'s voxels (a crop of ``box`` at ``tumor_box``) outside the axial slices' parenchyma hulls."""
    step = max(1, math.ceil(tumor.shape[axial] / MAX_SLICES))
    window = tuple(s for a, s in enumerate(tumor_box) if a != axial)
    inside = total = 0
    for k in range(0, tumor.shape[axial], step):
        tumor_plane = tumor[(slice(None),) * axial + (k,)]
        box_plane = box[(slice(None),) * axial + (tumor_box[axial].start + k,)]
        inside += int(np.count_nonzero(tumor_plane & _filled_hull_2d(box_plane == kidney)[window]))
        total += int(np.count_nonzero(tumor_plane))
    return 1.0 - inside / total


def _intervals(normals: np.ndarray, offsets: np.ndarray, axis: int, cross: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For grid lines along ``axis`` at the other axes' indices ``cross`` (n, d - 1): where the convex region
    ``normals @ x + offsets <= 0`` (facet planes in index space) starts and ends on each line."""
    along = normals[:, axis]
    others = np.delete(normals, axis, axis=1)
    rest = 1e-6 - (cross.astype(np.float64) @ others.T + offsets)  # along * t <= rest
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = rest / along
    high = np.where(along > 0, bound, np.inf).min(axis=1)
    low = np.where(along < 0, bound, -np.inf).max(axis=1)
    low[((along == 0) & (rest < 0)).any(axis=1)] = np.inf
    return low, high


def bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """The smallest box holding every True voxel of a non-empty 3D mask (two projections, cheaper than find_objects)."""
    plane = mask.any(axis=2)
    rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    depth = np.flatnonzero(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].any(axis=(0, 1)))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1), slice(depth[0], depth[-1] + 1)


def shifted_affine(affine: np.ndarray, start: list[int] | np.ndarray) -> np.ndarray:
    """The affine of a crop whose first voxel is ``start`` of the grid ``affine`` describes."""
    out = np.array(affine, dtype=np.float64)
    out[:3, 3] = affine[:3, :3] @ np.asarray(start, dtype=np.float64) + affine[:3, 3]
    return out


def _centroid_ras(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    count = np.count_nonzero(mask)
    weights = mask.view(np.uint8)
    ijk = [
        float(np.dot(weights.sum(axis=other, dtype=np.int64), np.arange(n))) / count
        for other, n in (((1, 2), mask.shape[0]), ((0, 2), mask.shape[1]), ((0, 1), mask.shape[2]))
    ]
    return np.asarray(ijk) @ affine[:3, :3].T + affine[:3, 3]


def _subsampled(mask: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``mask`` on a regular sub-grid with at most about MAX_SAMPLES voxels, and that sub-grid's affine."""
    step = max(1, math.ceil((np.count_nonzero(mask) / MAX_SAMPLES) ** (1 / 3)))
    out = np.array(affine, dtype=np.float64)
    out[:3, :3] *= step
    return mask[::step, ::step, ::step], out


def _surface(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """RAS centres of the voxels of ``mask`` with a 6-neighbour outside it."""
    inner = ndimage.binary_erosion(mask, border_value=0)
    return np.argwhere(mask & ~inner) @ affine[:3, :3].T + affine[:3, 3]
