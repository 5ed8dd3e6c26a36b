"""Structure codes for segmentation outputs: SNOMED CT concepts and display colours, by structure name.

Read from a TotalSegmentator-style mapping table (``totalsegmentator_snomed_mapping.csv``: one row per structure,
DICOM SEG code sequences flattened into columns, colour as "r,g,b"). Training uses it to write a model card; serving
reads the codes from the card and never needs the table.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from pathlib import Path

from twin_imaging.models.card import CodedConcept, StructureSpec

_CATEGORY = "SegmentedPropertyCategoryCodeSequence"
_ANATOMICAL_STRUCTURE = CodedConcept(value="123037004", scheme="SCT", meaning="Anatomical Structure")
_LEFT = CodedConcept(value="7771000", scheme="SCT", meaning="Left")
_RIGHT = CodedConcept(value="24028007", scheme="SCT", meaning="Right")


def _builtin(type_value: str, meaning: str, color_rgb: tuple[int, int, int], modifier: CodedConcept | None = None):
    return {
        "category": _ANATOMICAL_STRUCTURE,
        "type": CodedConcept(value=type_value, scheme="SCT", meaning=meaning),
        "type_modifier": modifier,
        "color_rgb": color_rgb,
    }


# The abdominal structures the project's own models use, so that training on the phantom needs no external table.
# SNOMED CT codes as in DICOM PS3.16; colours as TotalSegmentator displays them (Apache-2.0).
BUILTIN_STRUCTURES: dict[str, dict] = {
    "liver": _builtin("10200004", "Liver", (40, 140, 40)),
    "spleen": _builtin("78961009", "Spleen", (50, 170, 60)),
    "kidney_left": _builtin("64033007", "Kidney", (46, 138, 184), _LEFT),
    "kidney_right": _builtin("64033007", "Kidney", (34, 102, 136), _RIGHT),
    "pancreas": _builtin("15776009", "Pancreas", (60, 150, 80)),
    "stomach": _builtin("69695003", "Stomach", (180, 70, 160)),
    "gallbladder": _builtin("28231008", "Gallbladder", (54, 216, 119)),
    "aorta": _builtin("15825003", "Aorta", (216, 108, 54)),
    "esophagus": _builtin("32849002", "Esophagus", (190, 90, 170)),
    "inferior_vena_cava": _builtin("64131007", "Inferior vena cava", (0, 70, 200)),
    "portal_vein_and_splenic_vein": _builtin("110765007", "Portal vein and splenic vein", (0, 90, 220)),
    "adrenal_gland_left": _builtin("23451007", "Adrenal gland", (241, 172, 34), _LEFT),
    "adrenal_gland_right": _builtin("23451007", "Adrenal gland", (178, 128, 26), _RIGHT),
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
    names: Iterable[str], table: dict[str, dict], *, keep_largest_component: Iterable[str] = ()
) -> tuple[StructureSpec, ...]:
    """StructureSpecs labelled 1..N in the order of ``names``; every name must be in ``table``."""
    names = list(names)
    missing = [n for n in names if n not in table]
    if missing:
        raise KeyError(f"no SNOMED codes for {missing} in the structure table")
    largest = set(keep_largest_component)
    unknown = largest - set(names)
    if unknown:
        raise KeyError(f"keep_largest_component names structures the model lacks: {sorted(unknown)}")
    return tuple(
        StructureSpec(label=label, name=name, keep_largest_component=name in largest, **table[name])
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
