"""Structure codes for segmentation outputs: SNOMED CT concepts and display colours, by structure name.

Read from a TotalSegmentator-style mapping table (``totalsegmentator_snomed_mapping.csv``: one row per structure,
DICOM SEG code sequences flattened into columns, colour as "r,g,b"). Training uses it to write a model card; serving
reads the codes from the card and never needs the table.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from twin_imaging.models.card import CodedConcept, StructureSpec

_CATEGORY = "SegmentedPropertyCategoryCodeSequence"
_ANATOMICAL_STRUCTURE = CodedConcept(value="123037004", scheme="SCT", meaning="Anatomical Structure")
_ABNORMAL = CodedConcept(value="49755003", scheme="SCT", meaning="Morphologically Abnormal Structure")
_LEFT = CodedConcept(value="7771000", scheme="SCT", meaning="Left")
_RIGHT = CodedConcept(value="24028007", scheme="SCT", meaning="Right")


def _builtin(
    type_value: str,
    meaning: str,
    color_rgb: tuple[int, int, int],
    modifier: CodedConcept | None = None,
    category: CodedConcept = _ANATOMICAL_STRUCTURE,
):
    return {
        "category": category,
        "type": CodedConcept(value=type_value, scheme="SCT", meaning=meaning),
        "type_modifier": modifier,
        "color_rgb": color_rgb,
    }


# The abdominal structures the project's own models use, so that training on the phantom needs no external table.
# SNOMED CT codes as in DICOM PS3.16 (and TotalSegmentator's mapping). Colours: the project's own palette, chosen so
# that every two of these structures differ by a CIELab distance of at least 25 (TotalSegmentator's colours give the
# liver and the spleen two greens 12.5 apart, the kidneys two blues 15.4 apart); the card and the SEG carry them.
BUILTIN_STRUCTURES: dict[str, dict] = {
    "liver": _builtin("10200004", "Liver", (140, 86, 75)),
    "spleen": _builtin("78961009", "Spleen", (148, 103, 189)),
    "kidney_left": _builtin("64033007", "Kidney", (23, 190, 207), _LEFT),
    "kidney_right": _builtin("64033007", "Kidney", (255, 215, 0), _RIGHT),
    "pancreas": _builtin("15776009", "Pancreas", (227, 119, 194)),
    "stomach": _builtin("69695003", "Stomach", (255, 127, 14)),
    "gallbladder": _builtin("28231008", "Gallbladder", (44, 160, 44)),
    "aorta": _builtin("15825003", "Aorta", (214, 39, 40)),
    "esophagus": _builtin("32849002", "Esophagus", (152, 223, 138)),
    "inferior_vena_cava": _builtin("64131007", "Inferior vena cava", (31, 119, 180)),
    "portal_vein_and_splenic_vein": _builtin("110765007", "Portal vein and splenic vein", (174, 199, 232)),
    "adrenal_gland_left": _builtin("23451007", "Adrenal gland", (188, 189, 34), _LEFT),
    "adrenal_gland_right": _builtin("23451007", "Adrenal gland", (255, 152, 150), _RIGHT),
    # renal masses (DICOM CID 7159 style: a morphologically abnormal structure of the kidney)
    "renal_tumor": _builtin("108369006", "Neoplasm", (192, 0, 224), category=_ABNORMAL),
    "renal_cyst": _builtin("367643001", "Cyst", (0, 0, 224), category=_ABNORMAL),
}
_TYPE = "SegmentedPropertyTypeCodeSequence"
_MODIFIER = "SegmentedPropertyTypeModifierCodeSequence"


def read_structure_table(path: str | os.PathLike) -> dict[str, dict]:
    """Structure name → {category, type, type_modifier, color_rgb} from a mapping CSV."""
    table: dict[str, dict] = {}
    with open(Path(path), newline="", encoding="utf-8") as stream:
        for row in csv.DictReader(stream):
            name = row["Structure"].strip()
            table[name] = {
                "category": _concept(row, _CATEGORY),
                "type": _concept(row, _TYPE),
                "type_modifier": _concept(row, _MODIFIER),
                "color_rgb": tuple(int(c) for c in row["DicomRGBColor"].split(",")),
            }
    return table


def structure_specs(
    names: Iterable[str],
    table: dict[str, dict],
    *,
    keep_largest_component: Iterable[str] = (),
    attached_to: Mapping[str, Iterable[str]] | None = None,
) -> tuple[StructureSpec, ...]:
    """StructureSpecs labelled 1..N in the order of ``names``; every name must be in ``table``.

    ``attached_to``: structure → the structures its components must touch (``StructureSpec.attached_to``)."""
    names = list(names)
    missing = [n for n in names if n not in table]
    if missing:
        raise KeyError(f"no SNOMED codes for {missing} in the structure table")
    largest = set(keep_largest_component)
    unknown = largest - set(names)
    if unknown:
        raise KeyError(f"keep_largest_component names structures the model lacks: {sorted(unknown)}")
    attached = {name: tuple(anchors) for name, anchors in (attached_to or {}).items()}
    unknown = (set(attached) | {a for anchors in attached.values() for a in anchors}) - set(names)
    if unknown:
        raise KeyError(f"attached_to names structures the model lacks: {sorted(unknown)}")
    return tuple(
        StructureSpec(
            label=label,
            name=name,
            keep_largest_component=name in largest,
            attached_to=attached.get(name, ()),
            **table[name],
        )
        for label, name in enumerate(names, start=1)
    )


def _concept(row: dict[str, str], sequence: str) -> CodedConcept | None:
    value = (row.get(f"{sequence}.CodeValue") or "").strip()
    if not value:
        return None
    return CodedConcept(
        value=value,
        scheme=row[f"{sequence}.CodingSchemeDesignator"].strip(),
        meaning=row[f"{sequence}.CodeMeaning"].strip(),
    )
