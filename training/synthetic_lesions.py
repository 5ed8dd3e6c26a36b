"""Synthetic renal tumours and cysts for training: real KiTS23 shapes inserted into tumour-free kidneys.

No CT of a renal tumour is available here (KiTS23's images are not; BTCV's kidneys are tumour-free), only the shapes
of 400 expert tumour and cyst masks. Following the "synthetic tumour" idea (Hu et al., CVPR 2023: tumours synthesised
into healthy organs train segmentation models nearly as well as real ones, for liver tumours), each training case
gets copies with one lesion inserted:

- **shape**: a KiTS tumour or cyst component of at most 250 mL, rotated at random about every axis and scaled by
  0.8-1.25, on the model grid (``ShapeBank``, built once by ``python -m training.prepare_kits_shapes``);
- **place**: centred inside a random kidney at a random depth (0-60 % of the lesion's radius below the surface), so
  that it is from half exophytic to mostly endophytic, as renal masses are; it takes the kidney and the fat around
  it (unlabelled voxels under -20 HU), never another organ or unlabelled soft tissue (muscle, bowel, the renal
  pelvis and vessels, which BTCV leaves unlabelled): a mass painted over muscle would look like muscle and teach the
  network that muscle beside a kidney is tumour. Parts cut off from the kidney by that rule are dropped;
- **appearance** (portal-venous, as BTCV): a tumour is heterogeneous and enhances less than the cortex (mean
  35-130 HU, from hypo-enhancing papillary to clear-cell tumours; correlated texture of 8-20 HU, a hypodense
  necrotic core in 40 % of those over 4 cm); a cyst is homogeneous near water (0-20 HU); both get the patch's noise
  back and a one-voxel partial-volume edge. The contrast phase simulation (``training.augment``) then moves them
  with the other structures;
- **mass effect** (optional, ``InsertionSpec.mass_effect``): the tissue around the lesion is pushed outward first,
  so that the kidney's outline bulges over it;
- **how often**: drawn afresh for a share of the training patches (``training.data.FreshLesions``), and once per
  case for fixed validation and test copies (``training.synthetic_lesion_set``).

Not modelled: calcification, the fat of angiomyolipomas, renal-vein invasion. Dice on such insertions is not Dice on
real tumours: the model card says which is which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

BANK_SPACING_MM = 1.5  # isotropic grid of the stored shapes
FAT_MAX_HU = -20.0  # unlabelled voxels below this are fat a mass may grow into; above it, soft tissue it may not


@dataclass(frozen=True)
class LesionShape:
    kind: str  # "tumor" or "cyst"
    mask: np.ndarray  # bool, on a BANK_SPACING_MM isotropic grid
    case_id: str

    @cached_property  # a bank draw filters hundreds of shapes by it
    def volume_ml(self) -> float:
        return float(self.mask.sum()) * BANK_SPACING_MM**3 / 1000.0


class ShapeBank:
    """The lesion shapes of ``prepare_kits_shapes``: a .npz of packed masks and a .json of what each is."""

    def __init__(self, shapes: list[LesionShape]) -> None:
        if not shapes:
            raise ValueError("the shape bank is empty")
        self.shapes = shapes
        self.by_kind = {kind: [s for s in shapes if s.kind == kind] for kind in ("tumor", "cyst")}

    @classmethod
    def load(cls, path: str | Path) -> ShapeBank:
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        packed = np.load(path.with_suffix(".npz"))
        shapes = []
        for index, item in enumerate(meta["shapes"]):
            bits = packed[f"s{index:04d}"]
            mask = np.unpackbits(bits, count=int(np.prod(item["shape"]))).reshape(item["shape"]).astype(bool)
            shapes.append(LesionShape(item["kind"], mask, item["case_id"]))
        return cls(shapes)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {f"s{i:04d}": np.packbits(s.mask.ravel()) for i, s in enumerate(self.shapes)}
        np.savez_compressed(path.with_suffix(".npz"), **arrays)
        meta = {
            "spacing_mm": BANK_SPACING_MM,
            "shapes": [
                {"kind": s.kind, "case_id": s.case_id, "shape": list(s.mask.shape), "volume_ml": round(s.volume_ml, 2)}
                for s in self.shapes
            ],
        }
        path.with_suffix(".json").write_text(json.dumps(meta, indent=1))


def shape_on_grid(
    shape: LesionShape, spacing_mm: tuple[float, float, float], rng: np.random.Generator, *, scale: float = 1.0
) -> np.ndarray:
    """The shape rotated at random and scaled by ``scale``, resampled onto a grid of ``spacing_mm`` (bool)."""
    rotation = Rotation.random(random_state=rng).as_matrix()
    source = np.asarray(shape.mask.shape, dtype=float)
    extent_mm = np.linalg.norm(source * BANK_SPACING_MM) * scale  # the diagonal bounds any rotation
    out_shape = np.maximum(np.ceil(extent_mm / np.asarray(spacing_mm)).astype(int), 3)
    # output voxel (mm, centred) → rotate back → source voxel
    matrix = rotation.T @ np.diag(np.asarray(spacing_mm) / (BANK_SPACING_MM * scale))
    offset = (source - 1) / 2.0 - matrix @ ((out_shape - 1) / 2.0)
    moved = ndimage.affine_transform(
        shape.mask.astype(np.float32), matrix, offset=offset, output_shape=tuple(out_shape), order=1
    )
    mask = moved >= 0.5
    if not mask.any():  # a tiny shape on a coarse grid: keep one voxel at its centre
        mask[tuple(s // 2 for s in mask.shape)] = True
    return mask


@dataclass(frozen=True)
class InsertionSpec:
    window_hu: tuple[float, float]
    spacing_mm: tuple[float, float, float]
    kidney_labels: tuple[int, ...]  # the model's label values of the kidneys
    tumor_label: int
    cyst_label: int
    cyst_probability: float = 0.3
    # push strength (range, drawn per lesion) of the mass effect: the tissue around the lesion is moved outward by
    # strength x its radius at the lesion's edge (``_pushed``), so the kidney's outline bulges as over a real mass;
    # (0, 0): none
    mass_effect: tuple[float, float] = (0.0, 0.0)
    # KiTS holds tumours up to about 1 L; inserted without mass effect, such a mass would only be clipped by the
    # organs around it, so shapes larger than this are not drawn (T1-T2 tumours, where partial vs radical is asked)
    max_volume_ml: float = 250.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.cyst_probability <= 1.0:
            raise ValueError(f"cyst_probability is a probability (0-1), not {self.cyst_probability}")
        check_mass_effect(*self.mass_effect)


def check_mass_effect(low: float, high: float) -> None:
    """Refuse a push-strength range outside [0, 1): a strength of 1 or more folds the tissue."""
    if not 0.0 <= low <= high < 1.0:
        raise ValueError(f"mass_effect must be a range within [0, 1) (1 or more folds the tissue), not {low, high}")


def insert_lesion(
    image: np.ndarray, labels: np.ndarray, bank: ShapeBank, spec: InsertionSpec, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """A copy of (image, labels) (windowed [0, 1], model labels; both (X, Y, Z)) with one lesion, and what was
    inserted (``info["box"]``: the lesion's bounding box, [start, stop) per axis); None where the case has no kidney
    or too little of the lesion (under 3 voxels) finds kidney and fat to take.

    Only a box around the lesion is computed on (the rest is copied), so that a lesion can be drawn afresh for every
    training patch: about 0.05 s on a 3 mm abdomen."""
    kidneys = {value: labels == value for value in spec.kidney_labels}
    present = [value for value, mask in kidneys.items() if mask.any()]
    if not present:
        return None
    kidney_value = int(rng.choice(present))
    kind = "cyst" if rng.random() < spec.cyst_probability and bank.by_kind["cyst"] else "tumor"
    choices = [s for s in bank.by_kind[kind] if s.volume_ml <= spec.max_volume_ml] or bank.by_kind[kind]
    shape = choices[rng.integers(len(choices))]
    mask = shape_on_grid(shape, spec.spacing_mm, rng, scale=float(rng.uniform(0.8, 1.25)))
    kidney_box = _grown(_bounding_box(kidneys[kidney_value]), 1, labels.shape)
    kidney_local = labels[kidney_box] == kidney_value
    depth_mm = ndimage.distance_transform_edt(kidney_local, sampling=spec.spacing_mm)
    radius_mm = (mask.sum() * float(np.prod(spec.spacing_mm)) * 3.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    target_mm = rng.uniform(0.0, 0.6) * radius_mm
    # the kidney voxels nearest that depth (a shell; a thin kidney has no deep voxels: its deepest ones)
    reachable = min(target_mm, float(depth_mm.max()))
    candidates = np.argwhere(kidney_local & (np.abs(depth_mm - reachable) <= max(spec.spacing_mm)))
    centre = candidates[rng.integers(len(candidates))] + np.array([b.start for b in kidney_box])
    start = centre - np.asarray(mask.shape) // 2
    placed_box = tuple(
        slice(max(int(a), 0), min(int(a) + n, size)) for a, n, size in zip(start, mask.shape, labels.shape, strict=True)
    )
    if any(b.stop <= b.start for b in placed_box):
        return None
    # 3 voxels around it: the partial-volume edge (2) and the noise estimate's own neighbours (1); with a mass
    # effect, as far again as the push reaches (it fades out by 1.5 radii beyond the edge)
    # (no draw without a mass effect: the random stream, and so every lesion of a seed, stays as it was)
    strength = float(rng.uniform(*spec.mass_effect)) if max(spec.mass_effect) > 0 else 0.0
    reach = np.ceil(1.5 * radius_mm / np.asarray(spec.spacing_mm)).astype(int) if strength else 0  # per axis
    box = _grown(placed_box, 3 + reach, labels.shape)
    origin = np.array([b.start for b in box])
    local_labels = labels[box]
    local_image = image[box]
    if strength:
        local_image, local_labels = _pushed(local_image, local_labels, centre - origin, radius_mm, strength, spec)
    lesion = _placed(mask, centre - origin, local_labels.shape)
    low, high = spec.window_hu
    width = high - low
    in_kidney = local_labels == kidney_value
    # fat by its local mean, so that noise does not punch holes (air is below the window too: rare)
    fat = (local_labels == 0) & (ndimage.uniform_filter(local_image, size=3) < (FAT_MAX_HU - low) / width)
    lesion &= in_kidney | fat
    # what the rule cut off from the part in the kidney goes (a mass grows from the kidney); enclosed holes filled
    parts, _ = ndimage.label(lesion)
    lesion = ndimage.binary_fill_holes(np.isin(parts, np.unique(parts[lesion & in_kidney])))
    if lesion.sum() < 3:
        return None
    hu = _lesion_hu(lesion, kind, spec.spacing_mm, rng)
    # the patch's own noise stays: the local deviation from a smoothed copy
    noise = local_image - ndimage.uniform_filter(local_image, size=3)
    soft = ndimage.gaussian_filter(lesion.astype(np.float32), 0.6)  # partial volume at the edge
    target = np.clip((hu - low) / width + noise, 0.0, 1.0)
    out_image = image.copy()
    out_image[box] = (local_image * (1.0 - soft) + target * soft).astype(image.dtype)
    out_labels = labels.copy()
    out_labels[box] = local_labels
    out_labels[box][lesion] = spec.cyst_label if kind == "cyst" else spec.tumor_label
    found = np.argwhere(lesion)
    info = {
        "kind": kind,
        "source_case": shape.case_id,
        "kidney_label": kidney_value,
        "voxels": int(lesion.sum()),
        "volume_ml": float(lesion.sum() * np.prod(spec.spacing_mm) / 1000.0),
        "box": [[int(a), int(b)] for a, b in zip(found.min(0) + origin, found.max(0) + origin + 1, strict=True)],
    }
    return out_image, out_labels, info


def _pushed(
    image: np.ndarray, labels: np.ndarray, centre, radius_mm: float, strength: float, spec: InsertionSpec
) -> tuple[np.ndarray, np.ndarray]:
    """(image, labels) with the tissue pushed away from ``centre`` (voxel coordinates) as a growing mass pushes it.

    What lies at r mm from the centre is shown at r + push: the source of an output voxel at r is r - strength * R *
    g(r), g = r / R inside the radius R and exp(-3 ((r - R) / R)^2) beyond, a monotonic map (no folding for strength
    < 1) that is continuous at R and fades to nothing by 2.5 R. Image resampled linearly, labels nearest. Written here:
    scipy has the resampling (``map_coordinates``), not a radial mass-effect field."""
    spacing = np.asarray(spec.spacing_mm, np.float32).reshape(3, 1, 1, 1)
    centre = np.asarray(centre, np.float32).reshape(3, 1, 1, 1)
    offset_mm = (np.indices(image.shape, dtype=np.float32) - centre) * spacing
    r = np.sqrt((offset_mm**2).sum(axis=0))
    g = np.where(r < radius_mm, r / radius_mm, np.exp(-3.0 * ((r - radius_mm) / radius_mm) ** 2))
    scale = np.where(r > 0, (r - strength * radius_mm * g) / np.maximum(r, 1e-6), 1.0)
    reached = r < 2.5 * radius_mm  # beyond, the push is under 0.2 % of strength x R: left exactly as it was
    source = (centre + offset_mm * scale / spacing)[:, reached]
    pushed_image, pushed_labels = image.copy(), labels.copy()
    # the anatomy moves, the noise stays: resampling the noise at fractional positions would smooth it into a
    # halo of calm tissue around every lesion, a cue real CT does not give
    smooth = ndimage.uniform_filter(image, size=3)
    moved = ndimage.map_coordinates(smooth, source, order=1, mode="nearest") + (image - smooth)[reached]
    pushed_image[reached] = np.clip(moved, 0.0, 1.0)
    pushed_labels[reached] = ndimage.map_coordinates(labels, source, order=0, mode="nearest")
    return pushed_image, pushed_labels


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """The bounding box of a non-empty mask; three axis projections, a tenth of ``find_objects``' time here."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _grown(box: tuple[slice, ...], margin, shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``box`` grown by ``margin`` voxels (one number, or one per axis), clipped to ``shape``."""
    margins = np.broadcast_to(np.asarray(margin, dtype=int), (len(box),))
    return tuple(
        slice(max(b.start - int(m), 0), min(b.stop + int(m), n)) for b, m, n in zip(box, margins, shape, strict=True)
    )


def _placed(mask: np.ndarray, centre: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``mask`` centred on ``centre`` inside an array of ``shape`` (cut at the edges)."""
    out = np.zeros(shape, dtype=bool)
    start = centre - np.asarray(mask.shape) // 2
    lo = np.maximum(start, 0)
    hi = np.minimum(start + np.asarray(mask.shape), shape)
    if np.any(hi <= lo):
        return out
    out[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] = mask[
        tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))
    ]
    return out


def _lesion_hu(lesion: np.ndarray, kind: str, spacing_mm, rng: np.random.Generator) -> np.ndarray:
    """HU inside the lesion (elsewhere unused): see the module docstring."""
    if kind == "cyst":
        return np.full(lesion.shape, rng.uniform(0.0, 20.0), dtype=np.float32)
    mean = rng.uniform(35.0, 130.0)  # down to hypo-enhancing (papillary) tumours
    sd = rng.uniform(8.0, 20.0)
    texture = ndimage.gaussian_filter(rng.normal(size=lesion.shape).astype(np.float32), 1.5)
    texture *= sd / max(float(texture[lesion].std()), 1e-6)
    hu = mean + texture
    diameter_mm = 2.0 * (lesion.sum() * np.prod(spacing_mm) * 3.0 / (4.0 * np.pi)) ** (1.0 / 3.0)
    if diameter_mm > 40.0 and rng.random() < 0.4:  # a necrotic core: the voxels deepest inside
        depth = ndimage.distance_transform_edt(lesion, sampling=spacing_mm)
        core = depth > rng.uniform(0.45, 0.7) * depth.max()
        hu = np.where(core, rng.uniform(15.0, 40.0) + 0.5 * texture, hu)
    return hu.astype(np.float32)
