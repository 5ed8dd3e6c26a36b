"""A synthetic abdominal CT phantom: analytic anatomy, sampled exactly on any voxel grid.

The anatomy lives in DICOM patient coordinates (LPS+ mm: +x patient Left, +y Posterior, +z Superior) relative to
``PhantomAnatomy.centre_lps_mm``; a ``PhantomGeometry`` places a voxel grid in the same space. Labels are exact
(voxel-centre membership of the shapes); HU are the structures' means plus Gaussian noise drawn per slice from
``np.random.default_rng([seed, k])``, so any slice can be generated on its own and always comes out the same.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np

from twin_imaging.volume import LPS_TO_RAS, SeriesInfo, Volume

PHANTOM_LABELS: dict[int, str] = {
    1: "liver",
    2: "spleen",
    3: "kidney_right",
    4: "kidney_left",
    5: "aorta",
    6: "vertebrae",
    7: "skeletal_muscle",
    8: "subcutaneous_fat",
}
HU_MIN, HU_MAX = -1024, 3071  # stored 0..4095 with RescaleIntercept -1024

_PLANES: dict[str, tuple[float, ...]] = {
    "axial": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "coronal": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    "sagittal": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
}
_UNBOUNDED = (-math.inf, math.inf)


# --- shapes (LPS mm, relative to the anatomy centre) -------------------------------------------------------------


@dataclass(frozen=True)
class Ellipsoid:
    """An axis-aligned ellipsoid."""

    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]

    def contains(self, x, y, z) -> np.ndarray:
        return _ellipse_sum(self.centre_mm, self.semi_axes_mm, (x, y, z)) <= 1.0

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        centre, semi = np.asarray(self.centre_mm, float), np.asarray(self.semi_axes_mm, float)
        return centre - semi, centre + semi

    def scaled(self, factor: float) -> Ellipsoid:
        return replace(self, semi_axes_mm=tuple(a * factor for a in self.semi_axes_mm))

    def volume_mm3(self) -> float:
        return 4.0 / 3.0 * math.pi * math.prod(self.semi_axes_mm)


@dataclass(frozen=True)
class EllipticCylinder:
    """An elliptic cylinder along z, between ``z_range_mm`` (unbounded by default)."""

    centre_mm: tuple[float, float] = (0.0, 0.0)
    semi_axes_mm: tuple[float, float] = (1.0, 1.0)
    z_range_mm: tuple[float, float] = _UNBOUNDED

    def contains(self, x, y, z) -> np.ndarray:
        inside = _ellipse_sum(self.centre_mm, self.semi_axes_mm, (x, y)) <= 1.0
        return inside & _in_z_range(self.z_range_mm, z)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        (cx, cy), (a, b) = self.centre_mm, self.semi_axes_mm
        return np.array([cx - a, cy - b, self.z_range_mm[0]]), np.array([cx + a, cy + b, self.z_range_mm[1]])

    def scaled(self, factor: float) -> EllipticCylinder:
        return replace(
            self,
            semi_axes_mm=tuple(a * factor for a in self.semi_axes_mm),
            z_range_mm=_scaled_range(self.z_range_mm, factor),
        )

    def area_mm2(self) -> float:
        return math.pi * math.prod(self.semi_axes_mm)


@dataclass(frozen=True)
class EllipticRing:
    """The wall between two coaxial elliptic cylinders along z (outer minus inner)."""

    centre_mm: tuple[float, float]
    outer_semi_axes_mm: tuple[float, float]
    inner_semi_axes_mm: tuple[float, float]
    z_range_mm: tuple[float, float] = _UNBOUNDED

    def contains(self, x, y, z) -> np.ndarray:
        outer = _ellipse_sum(self.centre_mm, self.outer_semi_axes_mm, (x, y)) <= 1.0
        inner = _ellipse_sum(self.centre_mm, self.inner_semi_axes_mm, (x, y)) <= 1.0
        return outer & ~inner & _in_z_range(self.z_range_mm, z)

    def bounds_mm(self) -> tuple[np.ndarray, np.ndarray]:
        return EllipticCylinder(self.centre_mm, self.outer_semi_axes_mm, self.z_range_mm).bounds_mm()

    def scaled(self, factor: float) -> EllipticRing:
        return replace(
            self,
            outer_semi_axes_mm=tuple(a * factor for a in self.outer_semi_axes_mm),
            inner_semi_axes_mm=tuple(a * factor for a in self.inner_semi_axes_mm),
            z_range_mm=_scaled_range(self.z_range_mm, factor),
        )

    def area_mm2(self) -> float:
        return math.pi * (math.prod(self.outer_semi_axes_mm) - math.prod(self.inner_semi_axes_mm))


Shape = Ellipsoid | EllipticCylinder | EllipticRing


def _ellipse_sum(centre, semi_axes, coords) -> np.ndarray:
    total = 0.0
    for c, a, u in zip(centre, semi_axes, coords, strict=True):
        d = (u - c) * (1.0 / a)
        total = total + d * d
    return total


def _in_z_range(z_range, z):
    lo, hi = z_range
    if lo == -math.inf and hi == math.inf:
        return True
    return (z >= lo) & (z <= hi)


def _scaled_range(z_range: tuple[float, float], factor: float) -> tuple[float, float]:
    lo, hi = z_range
    if math.isinf(lo) or math.isinf(hi):
        return z_range
    mid, half = (lo + hi) / 2.0, (hi - lo) / 2.0 * factor
    return (mid - half, mid + half)


# --- anatomy ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Structure:
    """One structure: its label (0 for none), mean HU and shape; ``clip_to_cavity`` keeps it in the cavity."""

    name: str
    label: int
    hu: float
    shape: Shape
    clip_to_cavity: bool = True


_DEFAULT_STRUCTURES = (
    Structure("subcutaneous_fat", 8, -100.0, EllipticRing((0.0, 0.0), (160.0, 115.0), (145.0, 100.0)), False),
    Structure("skeletal_muscle", 7, 50.0, EllipticRing((0.0, 0.0), (145.0, 100.0), (133.0, 88.0)), False),
    Structure("liver", 1, 60.0, Ellipsoid((-52.0, -12.0, 35.0), (62.0, 56.0, 55.0))),
    Structure("spleen", 2, 50.0, Ellipsoid((85.0, 15.0, 50.0), (25.0, 38.0, 38.0))),
    Structure("kidney_right", 3, 160.0, Ellipsoid((-65.0, 48.0, -38.0), (25.0, 20.0, 50.0))),
    Structure("kidney_left", 4, 160.0, Ellipsoid((65.0, 48.0, -28.0), (25.0, 20.0, 50.0))),
    Structure("aorta", 5, 180.0, EllipticCylinder((18.0, 22.0), (11.0, 11.0))),
    Structure("vertebrae", 6, 400.0, EllipticCylinder((0.0, 55.0), (18.0, 16.0))),
)


# Renal masses the phantom can grow (``PhantomAnatomy().with_structure(RENAL_TUMOUR)``), with their exact truth: a
# 28 mm hypo-enhancing tumour at the left kidney's lateral lip, partly exophytic, and a 20 mm water-density cyst at
# the right kidney's lower pole.
RENAL_TUMOUR = Structure("renal_tumor", 9, 45.0, Ellipsoid((84.0, 48.0, -20.0), (14.0, 14.0, 14.0)))
RENAL_CYST = Structure("renal_cyst", 10, 8.0, Ellipsoid((-72.0, 50.0, -78.0), (10.0, 10.0, 10.0)))


@dataclass(frozen=True)
class PhantomAnatomy:
    """An adult abdomen: a body outline filled with ``body_hu`` (label 0), then ``structures`` painted in order.

    Later structures overwrite earlier ones; those with ``clip_to_cavity`` are cut to ``cavity``.
    """

    structures: tuple[Structure, ...] = _DEFAULT_STRUCTURES
    body: EllipticCylinder = EllipticCylinder((0.0, 0.0), (160.0, 115.0))
    cavity: EllipticCylinder = EllipticCylinder((0.0, 0.0), (133.0, 88.0))
    body_hu: float = -60.0  # the cavity background: visceral fat and bowel
    air_hu: float = -1000.0
    centre_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def __post_init__(self) -> None:
        names = [s.name for s in self.structures]
        if len(set(names)) != len(names):
            raise ValueError(f"structure names must be unique, got {names}")
        for s in self.structures:
            if not 0 <= s.label <= 255:
                raise ValueError(f"label of {s.name!r} must be in 0..255, got {s.label}")

    @property
    def label_names(self) -> dict[int, str]:
        """Label value → name of the labelled structures (the first structure of each label names it)."""
        names: dict[int, str] = {}
        for s in sorted(self.structures, key=lambda s: s.label):
            if s.label:
                names.setdefault(s.label, s.name)
        return names

    def structure(self, name: str) -> Structure:
        for s in self.structures:
            if s.name == name:
                return s
        raise KeyError(f"no structure named {name!r}; have {[s.name for s in self.structures]}")

    def with_structure(self, structure: Structure) -> PhantomAnatomy:
        """This anatomy with ``structure`` replacing the one of the same name, or painted last if new."""
        if any(s.name == structure.name for s in self.structures):
            structures = tuple(structure if s.name == structure.name else s for s in self.structures)
        else:
            structures = (*self.structures, structure)
        return replace(self, structures=structures)

    def with_scaled(self, name: str, factor: float) -> PhantomAnatomy:
        """This anatomy with one structure's semi-axes scaled by ``factor`` about its centre."""
        if factor <= 0:
            raise ValueError(f"scale factor must be positive, got {factor}")
        structure = self.structure(name)
        return self.with_structure(replace(structure, shape=structure.shape.scaled(factor)))

    def without(self, name: str) -> PhantomAnatomy:
        self.structure(name)
        return replace(self, structures=tuple(s for s in self.structures if s.name != name))


# --- geometry ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhantomGeometry:
    """A voxel grid in LPS space: ``shape`` and ``spacing_mm`` along (i, j, k), centred on ``centre_lps_mm``.

    ``orientation`` is "axial", "coronal", "sagittal" or six LPS direction cosines (row, then column, as in
    ImageOrientationPatient); explicit cosines are normalised and must be orthogonal.
    """

    shape: tuple[int, int, int] = (256, 256, 80)
    spacing_mm: tuple[float, float, float] = (1.5, 1.5, 2.5)
    orientation: str | tuple[float, ...] = "axial"
    centre_lps_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    _cosines: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(n) != n or n < 1 for n in self.shape):
            raise ValueError(f"shape must be three positive integers, got {self.shape}")
        if len(self.spacing_mm) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing_mm):
            raise ValueError(f"spacing_mm must be three positive numbers, got {self.spacing_mm}")
        if len(self.centre_lps_mm) != 3:
            raise ValueError(f"centre_lps_mm must have three values, got {self.centre_lps_mm}")
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))
        object.__setattr__(self, "_cosines", _orientation_cosines(self.orientation))

    @property
    def row_cosines(self) -> np.ndarray:
        """Direction of increasing i (along a row; DICOM's first ImageOrientationPatient vector)."""
        return self._cosines[0].copy()

    @property
    def column_cosines(self) -> np.ndarray:
        """Direction of increasing j (down a column)."""
        return self._cosines[1].copy()

    @property
    def normal(self) -> np.ndarray:
        """Direction of increasing k: row_cosines x column_cosines."""
        return self._cosines[2].copy()

    @property
    def image_orientation_patient(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self._cosines[:2].ravel())

    def affine_lps(self) -> np.ndarray:
        """Voxel index (i, j, k, 1) → LPS mm."""
        axes = self._cosines.T * np.asarray(self.spacing_mm, float)
        half = (np.asarray(self.shape, float) - 1.0) / 2.0
        affine = np.eye(4)
        affine[:3, :3] = axes
        affine[:3, 3] = np.asarray(self.centre_lps_mm, float) - axes @ half
        return affine

    def affine_ras(self) -> np.ndarray:
        """Voxel index (i, j, k, 1) → RAS mm."""
        return LPS_TO_RAS @ self.affine_lps()

    def slice_position_lps(self, k: int) -> np.ndarray:
        """ImagePositionPatient of slice k: the centre of voxel (0, 0, k)."""
        affine = self.affine_lps()
        return affine[:3, 3] + k * affine[:3, 2]


def _orientation_cosines(orientation: str | tuple[float, ...]) -> np.ndarray:
    if isinstance(orientation, str):
        if orientation not in _PLANES:
            raise ValueError(f"orientation must be one of {sorted(_PLANES)} or 6 cosines, got {orientation!r}")
        values = _PLANES[orientation]
    else:
        values = tuple(float(v) for v in orientation)
        if len(values) != 6 or not all(math.isfinite(v) for v in values):
            raise ValueError(f"orientation needs 6 finite direction cosines, got {orientation!r}")
    row, col = np.array(values[:3]), np.array(values[3:])
    if min(np.linalg.norm(row), np.linalg.norm(col)) < 1e-6:
        raise ValueError(f"orientation has a zero-length direction: {orientation!r}")
    row, col = row / np.linalg.norm(row), col / np.linalg.norm(col)
    if abs(row @ col) > 1e-4:
        raise ValueError(f"row and column directions are not orthogonal (cos = {row @ col:.4g}): {orientation!r}")
    col = col - (row @ col) * row
    col /= np.linalg.norm(col)
    cosines = np.stack([row, col, np.cross(row, col)])
    cosines[np.abs(cosines) < 1e-12] = 0.0  # no 1e-17 residues in ImageOrientationPatient
    return cosines + 0.0  # and no -0.0


# --- sampling ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Phantom:
    """A sampled phantom: ``image`` (int16 HU) and ``labels`` (uint8) on the same grid."""

    image: Volume
    labels: Volume
    geometry: PhantomGeometry
    anatomy: PhantomAnatomy


def make_phantom(
    geometry: PhantomGeometry | None = None,
    *,
    anatomy: PhantomAnatomy | None = None,
    noise_hu_sd: float = 10.0,
    seed: int = 0,
    info: SeriesInfo | None = None,
) -> Phantom:
    """Sample the phantom on ``geometry``: noisy HU and exact labels."""
    geometry = geometry or PhantomGeometry()
    anatomy = anatomy or PhantomAnatomy()
    hu = np.empty(geometry.shape, dtype=np.int16)
    labels = np.empty(geometry.shape, dtype=np.uint8)
    slices = iter_phantom_slices(geometry, anatomy=anatomy, noise_hu_sd=noise_hu_sd, seed=seed)
    for k, (hu_slice, label_slice) in enumerate(slices):
        hu[:, :, k] = hu_slice
        labels[:, :, k] = label_slice
    info = info or SeriesInfo(modality="CT", series_description="Phantom", body_part_examined="ABDOMEN")
    image = Volume(hu, geometry.affine_ras(), info=info)
    return Phantom(image, image.with_array(labels, label_names=anatomy.label_names), geometry, anatomy)


def iter_phantom_slices(
    geometry: PhantomGeometry | None = None,
    *,
    anatomy: PhantomAnatomy | None = None,
    noise_hu_sd: float = 10.0,
    seed: int = 0,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield ``(hu, labels)`` for each slice k in order: int16 and uint8 arrays of shape (ni, nj)."""
    geometry = geometry or PhantomGeometry()
    anatomy = anatomy or PhantomAnatomy()
    sampler = _SliceSampler(geometry, anatomy)
    for k in range(geometry.shape[2]):
        mean_hu, labels, _ = sampler.sample(k)
        if noise_hu_sd:
            noise = np.random.default_rng([seed, k]).standard_normal(mean_hu.shape, dtype=np.float32)
            mean_hu += noise * np.float32(noise_hu_sd)
        yield np.clip(np.rint(mean_hu), HU_MIN, HU_MAX).astype(np.int16), labels


def project_phantom(
    geometry: PhantomGeometry, *, anatomy: PhantomAnatomy | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free projection along k: mean HU over the voxels inside the body, air where a ray misses it.

    Returns ``(mean_hu, body_voxel_count)``, both of shape (ni, nj): a localizer (scout) image.
    """
    sampler = _SliceSampler(geometry, anatomy or PhantomAnatomy())
    total = np.zeros(geometry.shape[:2], np.float64)
    count = np.zeros(geometry.shape[:2], np.int64)
    for k in range(geometry.shape[2]):
        mean_hu, _, body = sampler.sample(k)
        total += np.where(body, mean_hu, 0.0)
        count += body
    mean = np.full(total.shape, sampler.anatomy.air_hu)
    np.divide(total, count, out=mean, where=count > 0)
    return mean, count


class _SliceSampler:
    """Noise-free mean HU, labels and body mask of one slice; each shape is evaluated only where it can be."""

    def __init__(self, geometry: PhantomGeometry, anatomy: PhantomAnatomy) -> None:
        self.geometry, self.anatomy = geometry, anatomy
        affine = geometry.affine_lps()
        self._axes = affine[:3, :3]
        # voxel (0, 0, 0) relative to the anatomy centre
        self._origin = affine[:3, 3] - np.asarray(anatomy.centre_lps_mm, float)
        self._body_box = self._index_box(anatomy.body)
        self._boxes = [self._index_box(s.shape) for s in anatomy.structures]

    def _index_box(self, shape: Shape) -> tuple[int, int, int, int, float, float] | None:
        """Index ranges (i0, i1, j0, j1, k_min, k_max) that can hold the shape; None if outside the grid."""
        lo, hi = shape.bounds_mm()
        shape_ijk = np.asarray(self.geometry.shape, float)
        grid_corners = _box_corners(np.full(3, -1.0), shape_ijk) @ self._axes.T + self._origin
        lo, hi = np.maximum(lo, grid_corners.min(0)), np.minimum(hi, grid_corners.max(0))
        if np.any(lo > hi):
            return None
        ijk = np.linalg.solve(self._axes, (_box_corners(lo, hi) - self._origin).T).T
        ijk_lo, ijk_hi = ijk.min(0), ijk.max(0)
        i0, j0 = (max(0, math.floor(v)) for v in ijk_lo[:2])
        i1, j1 = (min(n, math.ceil(v) + 1) for v, n in zip(ijk_hi[:2], self.geometry.shape[:2], strict=True))
        if i0 >= i1 or j0 >= j1:
            return None
        return i0, i1, j0, j1, ijk_lo[2] - 1e-6, ijk_hi[2] + 1e-6

    def _coords(self, box, k: int):
        """x, y, z of the voxel centres in the box on slice k, as broadcastable arrays or scalars."""
        i0, i1, j0, j1 = box[:4]
        ii, jj = np.arange(i0, i1, dtype=np.float64), np.arange(j0, j1, dtype=np.float64)
        base = self._origin + k * self._axes[:, 2]
        coords = []
        for axis in range(3):
            value = base[axis]
            if self._axes[axis, 0]:
                value = value + (ii * self._axes[axis, 0])[:, None]
            if self._axes[axis, 1]:
                value = value + (jj * self._axes[axis, 1])[None, :]
            coords.append(value)
        return coords

    def sample(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        anatomy, shape = self.anatomy, self.geometry.shape[:2]
        mean_hu = np.full(shape, anatomy.air_hu, dtype=np.float32)
        labels = np.zeros(shape, dtype=np.uint8)
        body = np.zeros(shape, dtype=bool)
        box = self._body_box
        if box is None or not box[4] <= k <= box[5]:
            return mean_hu, labels, body
        body_mask = _full(anatomy.body.contains(*self._coords(box, k)), box)
        body[box[0] : box[1], box[2] : box[3]] = body_mask
        mean_hu[body] = anatomy.body_hu
        for structure, box in zip(anatomy.structures, self._boxes, strict=True):
            if box is None or not box[4] <= k <= box[5]:
                continue
            coords = self._coords(box, k)
            mask = structure.shape.contains(*coords)
            if structure.clip_to_cavity:
                mask = mask & anatomy.cavity.contains(*coords)
            mask = _full(mask, box) & body[box[0] : box[1], box[2] : box[3]]
            mean_hu[box[0] : box[1], box[2] : box[3]][mask] = structure.hu
            labels[box[0] : box[1], box[2] : box[3]][mask] = structure.label
        return mean_hu, labels, body


def _full(mask, box) -> np.ndarray:
    return np.broadcast_to(mask, (box[1] - box[0], box[3] - box[2]))


def _box_corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return np.array([[(lo, hi)[b][0], (lo, hi)[c][1], (lo, hi)[d][2]] for b in (0, 1) for c in (0, 1) for d in (0, 1)])
