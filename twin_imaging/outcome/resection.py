"""Virtual nephrectomy on a kidney label map: how much parenchyma a partial or radical nephrectomy leaves.

- ``partial_nephrectomy`` removes the affected kidney's parenchyma (label 1) whose voxel centres lie within
  ``margin_mm`` of any tumour voxel of that side (Euclidean distance in mm on the grid's voxel spacing, which assumes
  orthogonal voxel axes, as CT has): an idealised resection with a uniform margin. Parenchyma devascularised by the
  cut or by clamping is not counted, nor is the surgeon's freedom in shaping the cut.
- ``radical_nephrectomy`` removes the whole affected kidney (``margin_mm`` is recorded but plays no part).

The contralateral kidney is never touched. Kidneys are told apart as in ``kidney_features`` (``split_kidneys``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from twin_imaging.errors import InputError
from twin_imaging.outcome.kidney_features import KidneyFeatures, bounding_box
from twin_imaging.outcome.kidney_split import KITS_LABELS, KidneySplit, split_kidneys
from twin_imaging.volume import Volume

SCENARIOS = ("partial_nephrectomy", "radical_nephrectomy")
# the distance transform costs about a quarter of a k-d tree query per voxel of the region searched
EDT_VOXELS_PER_QUERY = 4
EDT_MIN_VOXELS = 200_000


@dataclass(frozen=True)
class ResectionResult:
    scenario: str
    margin_mm: float
    removed_parenchyma_ml: float
    remaining_affected_ml: float
    remaining_total_ml: float
    remaining_fraction: float  # of the pre-operative total parenchyma (both kidneys)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def virtual_resection(
    labels: Volume,
    features: KidneyFeatures | None = None,
    *,
    scenario: str,
    margin_mm: float = 5.0,
    labels_map: Mapping[str, int] = KITS_LABELS,
) -> ResectionResult:
    """The parenchyma removed and left by ``scenario`` (see the module's definitions).

    ``features`` (from ``kidney_features`` on the same map) spares the map's analysis for a radical nephrectomy.
    """
    if scenario not in SCENARIOS:
        raise InputError(f"unknown scenario {scenario!r}; expected one of {', '.join(SCENARIOS)}")
    if not math.isfinite(margin_mm) or margin_mm < 0:
        raise InputError(f"margin_mm must be a finite distance >= 0, got {margin_mm!r}")
    split = None
    if features is None or scenario == "partial_nephrectomy":
        split = split_kidneys(labels, labels_map=labels_map)
    if features is not None:
        affected, contralateral = features.affected_parenchyma_ml, features.contralateral_parenchyma_ml
    else:
        affected, contralateral = split.affected_parenchyma_ml, split.contralateral_parenchyma_ml
    removed = affected if scenario == "radical_nephrectomy" else min(affected, _within_margin_ml(split, margin_mm))
    remaining_total = affected - removed + contralateral
    return ResectionResult(
        scenario=scenario,
        margin_mm=float(margin_mm),
        removed_parenchyma_ml=float(removed),
        remaining_affected_ml=float(affected - removed),
        remaining_total_ml=float(remaining_total),
        remaining_fraction=float(remaining_total / (affected + contralateral)),
    )


def _within_margin_ml(split: KidneySplit, margin_mm: float) -> float:
    """Volume (mL) of the affected side's parenchyma within ``margin_mm`` of its tumour.

    Only the tumour's box grown by the margin is searched: with a distance transform, or, where that box is large
    for the parenchyma in it (a large tumour), with a k-d tree of the tumour's surface voxels, which hold the nearest
    tumour voxel of any other voxel. Both are exact.
    """
    box, values = split.labels, split.values
    spacing = np.array(split.spacing_mm)
    grow = np.ceil(margin_mm / spacing).astype(int) + 1
    region = tuple(
        slice(max(0, s.start - g), min(n, s.stop + g))
        for s, g, n in zip(bounding_box(box == values["tumor"]), grow, box.shape, strict=True)
    )
    labels = box[region]
    tumor, parenchyma = labels == values["tumor"], labels == values["kidney"]
    n_parenchyma = int(np.count_nonzero(parenchyma))
    if n_parenchyma == 0:
        return 0.0
    if labels.size <= EDT_MIN_VOXELS + EDT_VOXELS_PER_QUERY * n_parenchyma:
        near = ndimage.distance_transform_edt(~tumor, sampling=spacing) <= margin_mm + 1e-9
        return float(np.count_nonzero(parenchyma & near)) * split.voxel_ml
    tree = cKDTree(np.argwhere(_surface_mask(tumor)) * spacing)
    distance, _ = tree.query(np.argwhere(parenchyma) * spacing, distance_upper_bound=margin_mm + 1e-9)
    return float(np.count_nonzero(np.isfinite(distance))) * split.voxel_ml


def _surface_mask(mask: np.ndarray) -> np.ndarray:
    """The voxels of ``mask`` with a 6-neighbour outside it or on the array's border."""
    inner = mask.copy()
    for axis in range(3):
        low, high = [slice(None)] * 3, [slice(None)] * 3
        low[axis], high[axis] = slice(None, -1), slice(1, None)
        inner[tuple(high)] &= mask[tuple(low)]
        inner[tuple(low)] &= mask[tuple(high)]
        edge = [slice(None)] * 3
        for end in (0, -1):
            edge[axis] = end
            inner[tuple(edge)] = False
    return mask & ~inner
