"""After segmentation: the checks that mark an analysis "review required", each with a reason a reader can act on.

- ``cut_by_field_of_view``: an organ touches an edge of the image, so its volume is a lower bound (tubular
  structures such as the aorta always leave an abdominal scan and are not checked);
- ``volume_outside_adult_range``: an organ's volume lies outside the wide adult bounds of ``twin_imaging.anatomy``
  (a low volume is reported only for an organ wholly inside the image);
- ``unexpected_laterality``: the right one of a pair (right/left kidney, liver/spleen) lies to the patient's left of
  the other: a mirrored image, a wrong orientation header, situs inversus or a segmentation error;
- ``renal_mass_not_validated``: the model found a renal tumour or cyst, and its tumour and cyst masks were measured
  on synthetic lesions only (no CT of a real renal tumour with expert masks is available to the project): every such
  analysis waits for a radiologist, who may send a SEG that replaces the masks;
- ``unattached_mass_left_out``: the model labelled at least ``LEFT_OUT_REPORTED_ML`` (all such structures together)
  of structures that must touch another (a renal mass its kidney, card ``attached_to``) away from it, and that part
  was left out of the masks: a mass of a kidney the model did not find, or a false finding; a human should look.

The review never changes the labels or the measurements; it says where they need a human look.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from twin_imaging.anatomy import PLAUSIBLE_ADULT_VOLUME_ML, RIGHT_OF, TUBULAR_CODES
from twin_imaging.measure import StructureMeasurement
from twin_imaging.models.card import ModelCard, StructureSpec

CUT_BY_FIELD_OF_VIEW = "cut_by_field_of_view"
VOLUME_OUTSIDE_ADULT_RANGE = "volume_outside_adult_range"
UNEXPECTED_LATERALITY = "unexpected_laterality"
RENAL_MASS_NOT_VALIDATED = "renal_mass_not_validated"
UNATTACHED_MASS_LEFT_OUT = "unattached_mass_left_out"
REVIEW_CODES = (
    CUT_BY_FIELD_OF_VIEW,
    VOLUME_OUTSIDE_ADULT_RANGE,
    UNEXPECTED_LATERALITY,
    RENAL_MASS_NOT_VALIDATED,
    UNATTACHED_MASS_LEFT_OUT,
)
LEFT_OUT_REPORTED_ML = 1.0  # smaller unattached specks are noise at a kidney's edge, not worth a radiologist's look
RENAL_MASS_CODES = frozenset({"108369006", "4147007", "367643001"})  # SNOMED CT neoplasm, mass, cyst
_RAS_DIRECTIONS = (("right", "left"), ("anterior", "posterior"), ("superior", "inferior"))  # +, - along x, y, z


@dataclass(frozen=True)
class ReviewReason:
    code: str  # one of REVIEW_CODES
    structures: tuple[str, ...]
    message: str


def review_segmentation(
    measurements: Sequence[StructureMeasurement],
    shape: tuple[int, int, int],
    affine_ras: np.ndarray,
    card: ModelCard,
    unattached_dropped_ml: Mapping[str, float] | None = None,
) -> list[ReviewReason]:
    """The reasons (possibly none) why this segmentation needs a human look, in structure order.
    ``unattached_dropped_ml``: structure → mL the segmenter left out for touching none of its anchors."""
    specs = {s.name: s for s in card.structures}
    reasons: list[ReviewReason] = []
    for m in measurements:
        spec = specs.get(m.name)
        if spec is None or spec.type.value in TUBULAR_CODES:
            continue
        edges = _edges_touched(m, shape, np.asarray(affine_ras, dtype=np.float64))
        if edges:
            reasons.append(
                ReviewReason(
                    CUT_BY_FIELD_OF_VIEW,
                    (m.name,),
                    f"{spec.display_name} touches the {' and '.join(edges)} edge of the image: part of it may lie "
                    f"outside the scan, so its volume ({m.volume_ml:.0f} mL) is a lower bound",
                )
            )
        bounds = PLAUSIBLE_ADULT_VOLUME_ML.get(spec.type.value)
        if bounds is not None and (m.volume_ml > bounds.high_ml or (m.volume_ml < bounds.low_ml and not edges)):
            reasons.append(
                ReviewReason(
                    VOLUME_OUTSIDE_ADULT_RANGE,
                    (m.name,),
                    f"{spec.display_name} measures {m.volume_ml:.0f} mL, outside {bounds.low_ml:g}-{bounds.high_ml:g}"
                    " mL, far from the adult range: check the segmentation (or a real finding)",
                )
            )
    reasons += _laterality(measurements, specs)
    masses = [m for m in measurements if m.name in specs and specs[m.name].type.value in RENAL_MASS_CODES]
    if any(m.volume_ml > 0 for m in masses):
        said = ", ".join(
            f"{specs[m.name].display_name.lower()} {m.volume_ml:.1f} mL" for m in masses if m.volume_ml > 0
        )
        reasons.append(
            ReviewReason(
                RENAL_MASS_NOT_VALIDATED,
                tuple(m.name for m in masses if m.volume_ml > 0),
                f"renal mass found ({said}) by a model validated on synthetic lesions only, not on real tumours: "
                "a radiologist must check the tumour and cyst masks (a SEG sent back replaces them)",
            )
        )
    reasons += _left_out(unattached_dropped_ml or {}, specs)
    return reasons


def _left_out(dropped_ml: Mapping[str, float], specs: dict[str, StructureSpec]) -> list[ReviewReason]:
    known = {name: ml for name, ml in dropped_ml.items() if name in specs}
    if sum(known.values()) < LEFT_OUT_REPORTED_ML:  # together: 0.6 mL of tumour and 0.6 mL of cyst count
        return []
    left_out = {name: ml for name, ml in known.items() if ml >= 0.05}  # named where it shows as at least 0.1 mL

    def anchors(name: str) -> str:
        named = [specs[a].display_name.lower() for a in specs[name].attached_to if a in specs]
        return " or ".join(named) or "structure it must touch"

    said = "; ".join(
        f"{ml:.1f} mL of {specs[name].display_name.lower()} touching no {anchors(name)}"
        for name, ml in left_out.items()
    )
    return [
        ReviewReason(
            UNATTACHED_MASS_LEFT_OUT,
            tuple(left_out),
            f"left out of the masks: {said}. A mass of an organ the model did not find, or a false finding: "
            "look beside the organs",
        )
    ]


def _edges_touched(m: StructureMeasurement, shape: tuple[int, int, int], affine: np.ndarray) -> list[str]:
    """The patient-direction names of the image edges the structure's voxel box reaches."""
    edges = []
    for axis in range(3):
        direction = affine[:3, axis] / np.linalg.norm(affine[:3, axis])
        dominant = int(np.argmax(np.abs(direction)))
        towards_plus = _RAS_DIRECTIONS[dominant][0 if direction[dominant] > 0 else 1]
        towards_minus = _RAS_DIRECTIONS[dominant][1 if direction[dominant] > 0 else 0]
        if m.bbox_min_ijk[axis] == 0:
            edges.append(towards_minus)
        if m.bbox_max_ijk[axis] == shape[axis] - 1:
            edges.append(towards_plus)
    return edges


def _laterality(measurements: Sequence[StructureMeasurement], specs: dict[str, StructureSpec]) -> list[ReviewReason]:
    found = {m.name: m for m in measurements if m.name in specs}

    def side(m: StructureMeasurement) -> str:
        modifier = specs[m.name].type_modifier
        return "" if modifier is None else modifier.meaning.lower()

    pairs = [  # paired organs: the same code with the Right and Left modifiers
        (right, left)
        for right in found.values()
        for left in found.values()
        if side(right) == "right" and side(left) == "left" and specs[right.name].type == specs[left.name].type
    ]
    unpaired = {specs[m.name].type.value: m for m in found.values() if not side(m)}
    pairs += [(unpaired[r], unpaired[lt]) for r, lt in RIGHT_OF if r in unpaired and lt in unpaired]
    reasons = []
    for right, left in pairs:
        offset_mm = right.centroid_ras_mm[0] - left.centroid_ras_mm[0]  # RAS: +x is the patient's right
        if offset_mm < 0:
            rname, lname = specs[right.name].display_name, specs[left.name].display_name
            reasons.append(
                ReviewReason(
                    UNEXPECTED_LATERALITY,
                    (right.name, left.name),
                    f"the {rname.lower()} lies {-offset_mm:.0f} mm to the patient's left of the {lname.lower()}: "
                    "a mirrored image, a wrong orientation header, situs inversus or a segmentation error",
                )
            )
    return reasons
