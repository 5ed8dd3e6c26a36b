"""Structure codes: the TotalSegmentator SNOMED table, the built-in subset, and StructureSpecs built from them."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import shared_file
from twin_imaging.models.card import CodedConcept, StructureSpec
from twin_imaging.models.structures import BUILTIN_STRUCTURES, read_structure_table, structure_specs

MAPPING_CSV = "totalsegmentator/totalsegmentator_snomed_mapping.csv"
LEFT = CodedConcept(value="7771000", scheme="SCT", meaning="Left")
RIGHT = CodedConcept(value="24028007", scheme="SCT", meaning="Right")

# a small table in the same layout as TotalSegmentator's, for tests that must not depend on the shared data
HEADER = (
    "Structure,"
    "SegmentedPropertyCategoryCodeSequence.CodingSchemeDesignator,SegmentedPropertyCategoryCodeSequence.CodeValue,"
    "SegmentedPropertyCategoryCodeSequence.CodeMeaning,"
    "SegmentedPropertyTypeCodeSequence.CodingSchemeDesignator,SegmentedPropertyTypeCodeSequence.CodeValue,"
    "SegmentedPropertyTypeCodeSequence.CodeMeaning,"
    "SegmentedPropertyTypeModifierCodeSequence.CodingSchemeDesignator,"
    "SegmentedPropertyTypeModifierCodeSequence.CodeValue,SegmentedPropertyTypeModifierCodeSequence.CodeMeaning,"
    "DicomRGBColor"
)
ROWS = [
    'liver,SCT,123037004,Anatomical Structure,SCT,10200004,Liver,,,,"40,140,40"',
    'kidney_left,SCT,123037004,Anatomical Structure,SCT,64033007,Kidney,SCT,7771000,Left,"46,138,184"',
    ' spleen ,SCT,123037004,Anatomical Structure, SCT , 78961009 , Spleen ,,,,"50,170,60"',
]


@pytest.fixture
def small_table(tmp_path: Path) -> Path:
    path = tmp_path / "mapping.csv"
    path.write_text("\n".join([HEADER, *ROWS]) + "\n", encoding="utf-8")
    return path


def test_small_table_parses_codes_modifiers_and_colours(small_table):
    table = read_structure_table(small_table)

    assert list(table) == ["liver", "kidney_left", "spleen"]
    assert table["liver"]["type"] == CodedConcept(value="10200004", scheme="SCT", meaning="Liver")
    assert table["liver"]["category"].meaning == "Anatomical Structure"
    assert table["liver"]["type_modifier"] is None
    from pydicom.sr.codedict import codes

    for name, concept in (("renal_tumor", codes.SCT.Neoplasm), ("renal_cyst", codes.SCT.Cyst)):
        assert BUILTIN_STRUCTURES[name]["type"].value == concept.value
        assert BUILTIN_STRUCTURES[name]["category"].value == codes.SCT.MorphologicallyAbnormalStructure.value
    assert table["liver"]["color_rgb"] == (40, 140, 40)
    assert table["kidney_left"]["type_modifier"] == LEFT
    # surrounding spaces are stripped
    assert table["spleen"]["type"] == CodedConcept(value="78961009", scheme="SCT", meaning="Spleen")


def test_totalsegmentator_table_agrees_with_builtin_structures(shared_data):
    table = read_structure_table(shared_file(shared_data, MAPPING_CSV))

    assert len(table) > 100
    for name, builtin in BUILTIN_STRUCTURES.items():  # the same codes; the colours are the project's palette
        if name in ("renal_tumor", "renal_cyst"):  # not in TotalSegmentator's table: checked against pydicom below
            continue
        assert {k: v for k, v in table[name].items() if k != "color_rgb"} == {
            k: v for k, v in builtin.items() if k != "color_rgb"
        }, name
    assert table["kidney_left"]["type_modifier"] == LEFT
    assert table["kidney_right"]["type_modifier"] == RIGHT
    assert table["liver"]["type_modifier"] is None


def test_totalsegmentator_table_rows_are_valid_specs(shared_data):
    table = read_structure_table(shared_file(shared_data, MAPPING_CSV))
    # card names are lower snake_case; the table's vertebrae_C1 … vertebrae_S1 are not (a model using them renames)
    names = [name for name in table if re.fullmatch(r"[a-z0-9_]+", name)]

    specs = structure_specs(names, table)

    assert len(specs) == len(names) > 100
    assert all(isinstance(s, StructureSpec) and len(s.color_rgb) == 3 for s in specs)
    assert all(s.category is not None and s.type is not None for s in specs)


def cielab(rgb) -> np.ndarray:
    """sRGB (D65) → CIELab, by the standard formulas (an independent reference for the palette test)."""
    c = np.asarray(rgb, dtype=float) / 255.0
    c = np.where(c > 0.04045, ((c + 0.055) / 1.055) ** 2.4, c / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ c
    xyz = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 216 / 24389, np.cbrt(xyz), (24389 / 27 * xyz + 16) / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_the_palette_tells_every_two_structures_apart():
    """Liver and spleen were two greens (CIELab distance 12.5), the kidneys two blues (15.4): now at least 25."""
    lab = {name: cielab(entry["color_rgb"]) for name, entry in BUILTIN_STRUCTURES.items()}
    closest = min((float(np.linalg.norm(lab[a] - lab[b])), a, b) for a, b in itertools.combinations(sorted(lab), 2))
    assert closest[0] >= 25.0, closest
    assert np.linalg.norm(cielab((40, 140, 40)) - cielab((50, 170, 60))) < 13  # the reference itself is sound


def test_display_names_are_what_a_clinician_reads():
    specs = {s.name: s for s in structure_specs(list(BUILTIN_STRUCTURES), BUILTIN_STRUCTURES)}
    assert specs["kidney_right"].display_name == "Right kidney"
    assert specs["adrenal_gland_left"].display_name == "Left adrenal gland"
    assert specs["inferior_vena_cava"].display_name == "Inferior vena cava"
    assert specs["liver"].display_name == "Liver"


def test_builtin_left_and_right_kidneys_differ_only_in_modifier_and_colour():
    left, right = BUILTIN_STRUCTURES["kidney_left"], BUILTIN_STRUCTURES["kidney_right"]

    assert left["type"] == right["type"]
    assert (left["type_modifier"], right["type_modifier"]) == (LEFT, RIGHT)
    assert left["color_rgb"] != right["color_rgb"]


def test_structure_specs_label_in_order_and_keep_largest_component():
    names = ["spleen", "liver", "kidney_left", "aorta"]

    specs = structure_specs(names, BUILTIN_STRUCTURES, keep_largest_component=["liver", "aorta"])

    assert [(s.label, s.name) for s in specs] == [(1, "spleen"), (2, "liver"), (3, "kidney_left"), (4, "aorta")]
    assert [s.keep_largest_component for s in specs] == [False, True, False, True]
    assert specs[2].type_modifier == LEFT
    assert specs[1].type.value == "10200004"
    assert specs[0].color_rgb == BUILTIN_STRUCTURES["spleen"]["color_rgb"]


def test_structure_specs_accept_any_iterable_of_names():
    specs = structure_specs(iter(["liver", "spleen"]), BUILTIN_STRUCTURES, keep_largest_component=iter(["spleen"]))

    assert [(s.label, s.name, s.keep_largest_component) for s in specs] == [(1, "liver", False), (2, "spleen", True)]


def test_structure_specs_refuse_unknown_names():
    with pytest.raises(KeyError, match="'brain'"):
        structure_specs(["liver", "brain"], BUILTIN_STRUCTURES)


def test_structure_specs_refuse_keep_largest_component_for_structures_not_in_the_model():
    with pytest.raises(KeyError, match=r"lacks.*'spleen'"):
        structure_specs(["liver"], BUILTIN_STRUCTURES, keep_largest_component=["liver", "spleen"])


def test_structure_specs_carry_attachments_and_refuse_unknown_ones():
    names = ["kidney_right", "kidney_left", "renal_tumor"]
    specs = structure_specs(names, BUILTIN_STRUCTURES, attached_to={"renal_tumor": ["kidney_right", "kidney_left"]})
    assert [s.attached_to for s in specs] == [(), (), ("kidney_right", "kidney_left")]
    with pytest.raises(KeyError, match=r"attached_to.*'liver'"):
        structure_specs(names, BUILTIN_STRUCTURES, attached_to={"renal_tumor": ["liver"]})
    with pytest.raises(KeyError, match=r"attached_to.*'renal_cyst'"):
        structure_specs(names, BUILTIN_STRUCTURES, attached_to={"renal_cyst": ["kidney_left"]})
