"""Telling a KiTS-style label map's kidneys apart: the affected side's box and the other side's volumes.

Kidneys are 3D connected components of kidney ∪ tumour ∪ cyst, found on coarse blocks; see ``kidney_features``'s
definitions. Used by ``kidney_features`` and ``resection``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from twin_imaging.errors import InputError
from twin_imaging.measure import as_label_array
from twin_imaging.volume import Volume

KITS_LABELS: Mapping[str, int] = {"kidney": 1, "tumor": 2, "cyst": 3}
BLOCK_MM = (4.0, 1.5)  # blocks the kidneys are told apart on; the finer where the coarser find one kidney
MIN_SEPARATION_MM = 40.0
MIN_KIDNEY_ML = 5.0
_FULL = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True, eq=False)
class KidneySplit:
    """The affected side's box of a label map, and the volumes of the other side."""

    labels: np.ndarray  # label values in the box; 0 where a voxel belongs to the other side
    affine_ras: np.ndarray  # voxel → RAS of the box
    voxel_ml: float
    values: Mapping[str, int]  # label value per structure
    affected_side: str
    medial_ras: np.ndarray  # unit vector from the affected kidney towards the midline
    affected_parenchyma_ml: float
    contralateral_present: bool
    contralateral_parenchyma_ml: float
    contralateral_tumor_ml: float

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in np.linalg.norm(self.affine_ras[:3, :3], axis=0))  # type: ignore[return-value]


def split_kidneys(labels: Volume, *, labels_map: Mapping[str, int] = KITS_LABELS) -> KidneySplit:
    """Find the affected and contralateral kidneys (see the module's definitions); InputError on an unusable map."""
    values = _label_values(labels_map)
    offset, crop = _foreground(_checked_array(labels.array), values)
    voxel_ml = abs(float(np.linalg.det(labels.affine_ras[:3, :3]))) / 1000.0
    is_tumor = crop == values["tumor"]
    total_kidney, total_tumor = int(np.count_nonzero(crop == values["kidney"])), int(np.count_nonzero(is_tumor))
    if total_kidney == 0:
        raise InputError(f"no kidney (label {values['kidney']}) in the mask")
    if total_tumor == 0:
        raise InputError(f"no tumour (label {values['tumor']}) in the mask")
    for block_mm in BLOCK_MM:  # finer blocks where coarse ones leave no contralateral kidney (a narrow gap)
        steps = [max(1, round(block_mm / s)) for s in labels.spacing_mm]
        blocks, n = ndimage.label(_block_any(crop > 0, steps), structure=_FULL)
        flat = blocks.ravel()
        block_ml = np.bincount(flat, minlength=n + 1)[1:] * voxel_ml * math.prod(steps)
        tumor_blocks = np.bincount(flat, weights=_block_any(is_tumor, steps).ravel(), minlength=n + 1)[1:]
        x = labels.index_to_ras(offset + _component_centres(blocks, n) * steps + (np.array(steps) - 1) / 2)[:, 0]
        affected = int(np.argmax(tumor_blocks))
        far = [c for c in range(n) if block_ml[c] >= MIN_KIDNEY_ML and abs(x[c] - x[affected]) >= MIN_SEPARATION_MM]
        other = max(far, key=lambda c: block_ml[c]) if far else None
        if other is not None:
            break
    if other is None:
        midline = float(labels.index_to_ras((np.array(labels.shape) - 1) / 2)[0])
        mine = np.ones(n, dtype=bool)
    else:
        midline = (x[affected] + x[other]) / 2
        mine = (x - midline) * (x[affected] - midline) > 0
    objects = ndimage.find_objects(blocks)
    ids = np.flatnonzero(mine)
    low = [min(objects[c][d].start for c in ids) for d in range(3)]
    high = [max(objects[c][d].stop for c in ids) for d in range(3)]
    box = tuple(slice(lo * s, min(hi * s, size)) for lo, hi, s, size in zip(low, high, steps, crop.shape, strict=True))
    box_labels = crop[box]
    if any(
        all(objects[c][d].start < high[d] and objects[c][d].stop > low[d] for d in range(3))
        for c in np.flatnonzero(~mine)
    ):
        member = np.isin(blocks[tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))], ids + 1)
        for axis, step in enumerate(steps):
            member = np.repeat(member, step, axis=axis)
        box_labels = np.where(member[tuple(slice(0, size) for size in box_labels.shape)], box_labels, 0)
    start = offset + np.array([s.start for s in box])
    affine = labels.affine_ras.copy()
    affine[:3, 3] = labels.index_to_ras(start)
    affected_x = x[affected]
    affected_kidney = int(np.count_nonzero(box_labels == values["kidney"]))
    return KidneySplit(
        labels=box_labels,
        affine_ras=affine,
        voxel_ml=voxel_ml,
        values=values,
        affected_side="right" if affected_x > midline else "left",
        medial_ras=np.array([1.0 if midline >= affected_x else -1.0, 0.0, 0.0]),
        affected_parenchyma_ml=affected_kidney * voxel_ml,
        contralateral_present=other is not None,
        contralateral_parenchyma_ml=(total_kidney - affected_kidney) * voxel_ml,
        contralateral_tumor_ml=(total_tumor - np.count_nonzero(box_labels == values["tumor"])) * voxel_ml,
    )


def _label_values(labels_map: Mapping[str, int]) -> dict[str, int]:
    missing = [name for name in ("kidney", "tumor") if name not in labels_map]
    if missing:
        raise InputError(f"labels_map lacks {missing}; it needs 'kidney' and 'tumor' (and optionally 'cyst')")
    return {name: int(value) for name, value in labels_map.items() if name in ("kidney", "tumor", "cyst")}


def _checked_array(array: np.ndarray) -> np.ndarray:
    try:
        return as_label_array(np.asarray(array))
    except ValueError as exc:
        raise InputError(f"not a kidney label map: {exc}") from None


def _foreground(array: np.ndarray, values: Mapping[str, int]) -> tuple[np.ndarray, np.ndarray]:
    """The box around every labelled voxel (its first index, its labels); InputError on unexpected label values."""
    allowed = {0, *values.values()}
    plane = array.max(axis=2)
    top = int(plane.max())
    if top == 0:
        raise InputError(f"no kidney (label {values['kidney']}) in the mask: it is empty")
    unexpected = np.unique(array[array > max(allowed)]) if top > max(allowed) else np.empty(0, dtype=int)
    rows, cols = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    box = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    depth = np.flatnonzero(array[box].max(axis=(0, 1)))
    crop = array[box[0], box[1], depth[0] : depth[-1] + 1]
    if not unexpected.size and not set(range(top + 1)) <= allowed:
        unexpected = np.setdiff1d(np.unique(crop), sorted(allowed))
    if unexpected.size:
        expected = ", ".join(f"{value} {name}" for name, value in values.items())
        raise InputError(
            f"unexpected label values {unexpected.tolist()} in the mask (expected 0 background, {expected})"
        )
    return np.array([box[0].start, box[1].start, depth[0]]), crop


def _block_any(mask: np.ndarray, steps: list[int]) -> np.ndarray:
    """Whether each block of ``steps`` voxels holds a True voxel (the last blocks may be smaller)."""
    for axis in np.argsort(mask.strides)[::-1]:  # the axis with the longest stride first: whole planes at a time
        if steps[axis] > 1:
            view = np.moveaxis(mask, axis, 0)
            out = view[:: steps[axis]].copy()
            for start in range(1, steps[axis]):
                part = view[start :: steps[axis]]
                out[: len(part)] |= part
            mask = np.moveaxis(out, 0, axis)
    return mask


def _component_centres(components: np.ndarray, n: int) -> np.ndarray:
    """Mean index (n, 3) of each labelled component 1..n."""
    found = np.nonzero(components)
    which = components[found]
    counts = np.bincount(which, minlength=n + 1)[1:]
    return np.stack([np.bincount(which, weights=ax, minlength=n + 1)[1:] for ax in found], axis=1) / counts[:, None]
