"""The model card schema: a JSON round trip, and each validator refusing what it should."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from twin_imaging.models.card import (
    CodedConcept,
    IntensitySpec,
    ModelCard,
    OnnxFile,
    PreprocessingSpec,
    StructureSpec,
)

ANATOMY = {"value": "123037004", "scheme": "SCT", "meaning": "Anatomical Structure"}
LEFT = {"value": "7771000", "scheme": "SCT", "meaning": "Left"}


def make_structure(label: int, name: str, **overrides: Any) -> dict[str, Any]:
    return {
        "label": label,
        "name": name,
        "category": ANATOMY,
        "type": {"value": f"1000{label}", "scheme": "SCT", "meaning": name.replace("_", " ").title()},
        "color_rgb": (10 * label, 20, 30),
        **overrides,
    }


def card_dict(**overrides: Any) -> dict[str, Any]:
    """The fields of a valid card as plain data; ``overrides`` replace top-level fields."""
    document = {
        "model_id": "tiny_abdomen",
        "version": "0.1.0",
        "modality": "CT",
        "title": "Tiny abdomen organs",
        "description": "A test card for a network that does not exist.",
        "intended_use": "Unit tests of the model package contract only.",
        "out_of_scope": ["Any patient"],
        "limitations": ["Trained on a phantom", "Never seen a real kidney"],
        "ethical_considerations": ["No patient data was used"],
        "structures": [
            make_structure(1, "liver", keep_largest_component=True),
            make_structure(2, "kidney_left", type_modifier=LEFT),
            make_structure(3, "spleen"),
        ],
        "preprocessing": {
            "spacing_mm": (1.5, 1.5, 2.0),
            "intensity": {"window_min_hu": -200.0, "window_max_hu": 300.0},
        },
        "inference": {"num_classes": 4, "patch_size_voxels": (96, 96, 64)},
        "evaluations": [
            {
                "dataset": "phantom set A",
                "split": "held out: fold 2",
                "reference": "synthetic truth",
                "n_cases": 3,
                "structures": [
                    {"structure": "liver", "dice": 0.91234, "nsd": 0.8766, "hd95_mm": 4.26, "n_cases": 3},
                    {"structure": "kidney_left", "dice": None, "nsd": None, "hd95_mm": None, "n_cases": 0},
                ],
            }
        ],
        "training": {
            "data": [
                {
                    "name": "phantom",
                    "licence": "CC0",
                    "description": "synthetic CT phantoms",
                    "n_cases": 12,
                    "labels": "synthetic truth",
                }
            ],
            "recipe": "training/configs/tiny_abdomen.yaml",
            "network": "SegResNet",
            "parameters": 1234567,
            "max_steps": 200,
            "seed": 7,
            "duration_s": 750.0,
            "hardware": "2 CPU cores",
            "code_version": "abc1234",
        },
        "onnx": {"file": "tiny_abdomen.onnx", "sha256": "0" * 64, "size_bytes": 0, "opset": 17},
        "created": datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC),
    }
    document.update(overrides)
    return document


def make_card(**overrides: Any) -> ModelCard:
    return ModelCard.model_validate(card_dict(**overrides))


def make_refinement(**overrides: Any) -> dict[str, Any]:
    """A refinement stage that fits ``make_card()``: relabels kidney_left and spleen around kidney_left."""
    card = make_card()
    stage = {
        "around": ["kidney_left"],
        "structures": ["kidney_left", "spleen"],
        "preprocessing": card.preprocessing.model_dump(),
        "inference": card.inference.model_dump(),
        "onnx": {**card.onnx.model_dump(), "file": "tiny_refinement.onnx"},
        "training": card.training.model_dump(),
    }
    return {**stage, **overrides}


def test_card_round_trips_through_json():
    card = make_card()

    again = ModelCard.model_validate_json(card.model_dump_json())

    assert again == card
    assert again.structures[1].type_modifier == CodedConcept(**LEFT)
    assert again.created == card.created


def test_label_names_and_structure_lookup():
    card = make_card()

    assert card.label_names() == {1: "liver", 2: "kidney_left", 3: "spleen"}
    assert card.structure("kidney_left").label == 2
    assert card.structure("liver").keep_largest_component
    with pytest.raises(KeyError, match="no structure 'pancreas'"):
        card.structure("pancreas")


@pytest.mark.parametrize(
    ("structures", "message"),
    [
        ([make_structure(1, "liver"), make_structure(1, "spleen")], "labels and names must be unique"),
        ([make_structure(1, "liver"), make_structure(2, "liver")], "labels and names must be unique"),
        ([make_structure(1, "liver"), make_structure(4, "spleen")], r"label \(4\) is beyond the network's 4 classes"),
        (
            [make_structure(1, "liver"), make_structure(2, "renal_tumor", attached_to=["kidney_left"])],
            r"renal_tumor is attached_to \['kidney_left'\]",
        ),
        ([make_structure(1, "liver", attached_to=["liver"])], "liver is attached_to liver"),
        (
            [
                make_structure(1, "kidney_left"),
                make_structure(2, "renal_tumor", attached_to=["renal_cyst"]),
                make_structure(3, "renal_cyst", attached_to=["renal_tumor"]),
            ],
            r"attached_to \['renal_cyst'\], themselves attached",
        ),
    ],
)
def test_card_refuses_bad_structure_sets(structures, message):
    with pytest.raises(ValidationError, match=message):
        make_card(structures=structures)


def test_card_accepts_highest_label_below_num_classes():
    card = make_card(structures=[make_structure(3, "liver")])
    assert card.label_names() == {3: "liver"}


@pytest.mark.parametrize("patch", [(96, 96, 60), (100, 96, 64)])
def test_card_refuses_patch_not_multiple_of_divisible_by(patch):
    with pytest.raises(ValidationError, match="patch size must be a multiple of 16"):
        make_card(inference={"num_classes": 4, "patch_size_voxels": patch})


def test_patch_multiple_of_a_custom_divisor_is_accepted():
    card = make_card(inference={"num_classes": 4, "patch_size_voxels": (24, 24, 24), "divisible_by": 8})
    assert card.inference.patch_size_voxels == (24, 24, 24)
    with pytest.raises(ValidationError, match="multiple of 32"):
        make_card(inference={"num_classes": 4, "patch_size_voxels": (48, 64, 64), "divisible_by": 32})


@pytest.mark.parametrize("color", [(256, 0, 0), (0, -1, 0), (0, 0, 1000)])
def test_structure_refuses_colour_outside_0_255(color):
    with pytest.raises(ValidationError, match=r"0\.\.255"):
        StructureSpec.model_validate(make_structure(1, "liver", color_rgb=color))


@pytest.mark.parametrize("label", [0, 256])
def test_structure_refuses_label_outside_1_255(label):
    with pytest.raises(ValidationError, match="label"):
        StructureSpec.model_validate(make_structure(label, "liver"))


@pytest.mark.parametrize("name", ["kidney-left", "kidney left", "", "liver/left"])
def test_structure_refuses_names_that_are_not_table_identifiers(name):
    with pytest.raises(ValidationError, match="name"):
        StructureSpec.model_validate(make_structure(1, name))


@pytest.mark.parametrize("spacing", [(1.0, 0.0, 1.0), (1.0, 1.0, -2.0)])
def test_preprocessing_refuses_non_positive_spacing(spacing):
    intensity = {"window_min_hu": -200.0, "window_max_hu": 300.0}
    with pytest.raises(ValidationError, match="spacing must be positive"):
        PreprocessingSpec.model_validate({"spacing_mm": spacing, "intensity": intensity})


@pytest.mark.parametrize(("low", "high"), [(300.0, 300.0), (300.0, -200.0)])
def test_intensity_refuses_window_max_not_above_min(low, high):
    with pytest.raises(ValidationError, match="window_max_hu must exceed window_min_hu"):
        IntensitySpec(window_min_hu=low, window_max_hu=high)


@pytest.mark.parametrize("sha256", ["0" * 63, "0" * 65, "A" * 64, "g" * 64, ""])
def test_onnx_refuses_sha256_not_64_lowercase_hex(sha256):
    with pytest.raises(ValidationError, match="sha256"):
        OnnxFile(file="m.onnx", sha256=sha256, size_bytes=1, opset=17)


def test_card_refuses_unknown_fields_at_every_level():
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        make_card(licence_of_weights="MIT")
    structures = [make_structure(1, "liver", opacity=0.5)]
    with pytest.raises(ValidationError, match=r"structures\.0\.opacity"):
        make_card(structures=structures)


def test_card_refuses_bad_model_id_and_modality():
    with pytest.raises(ValidationError, match="model_id"):
        make_card(model_id="Tiny-Abdomen")
    with pytest.raises(ValidationError, match="modality"):
        make_card(modality="PET")


def test_card_is_frozen():
    card = make_card()
    with pytest.raises(ValidationError, match="frozen"):
        card.version = "0.2.0"


def test_structure_names_as_in_the_totalsegmentator_table_are_accepted():
    assert StructureSpec.model_validate(make_structure(1, "vertebrae_L1")).name == "vertebrae_L1"
