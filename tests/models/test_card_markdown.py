"""The human-readable card: everything a reader needs to trust the model appears, rendered from card.json."""

from __future__ import annotations

import pytest

from tests.models.test_card import make_card, make_refinement, make_structure
from twin_imaging.models.card_markdown import render_markdown_card, write_markdown_card

SHA256 = "0123456789abcdef" * 4


@pytest.fixture
def card():
    base = make_card()
    second = {
        "dataset": "TotalSegmentator example_ct_dicom (20 slices)",
        "split": "never seen in training",
        "reference": "TotalSegmentator's predictions",
        "nsd_tolerance_mm": 1.5,
        "n_cases": 1,
        "structures": [{"structure": "spleen", "dice": 0.5, "nsd": 0.25, "hd95_mm": 12.345, "n_cases": 1}],
    }
    onnx = {"file": "tiny_abdomen.onnx", "sha256": SHA256, "size_bytes": 2_500_000, "opset": 17}
    evaluations = [e.model_dump() for e in base.evaluations] + [second]
    return make_card(evaluations=evaluations, onnx=onnx)


def test_every_structure_appears_with_its_code_and_colour(card):
    text = render_markdown_card(card)

    for s in card.structures:
        assert f"| {s.label} | {s.name} | {s.type.value} {s.type.meaning}" in text
        assert f"rgb{tuple(s.color_rgb)}" in text
    assert "10002 Kidney Left (Left)" in text  # the laterality modifier
    assert "| 1 | liver |" in text and "largest component" in text


def test_attachment_is_shown_as_post_processing():
    structures = [
        make_structure(1, "kidney_left", keep_largest_component=True),
        make_structure(2, "renal_tumor", attached_to=["kidney_left"]),
    ]
    text = render_markdown_card(make_card(structures=structures))
    row = next(line for line in text.splitlines() if line.startswith("| 2 | renal_tumor |"))
    assert row.endswith("| only where it touches kidney_left |")


def test_every_evaluation_appears_with_formatted_metrics(card):
    text = render_markdown_card(card)

    for e in card.evaluations:
        assert e.dataset in text and e.split in text and e.reference in text
    assert "| liver | 3 | 0.912 | 0.877 | 4.3 |" in text
    assert "| spleen | 1 | 0.500 | 0.250 | 12.3 |" in text
    assert "NSD (2 mm)" in text and "NSD (1.5 mm)" in text


def test_missing_metrics_read_n_a(card):
    text = render_markdown_card(card)

    assert "| kidney_left | 0 | n/a | n/a | n/a |" in text


def test_no_evaluation_is_said_plainly():
    text = render_markdown_card(make_card(evaluations=[]))

    assert "No evaluation is recorded" in text


def test_use_limitations_training_and_onnx_appear(card):
    text = render_markdown_card(card)

    assert card.title in text and card.description in text
    assert card.intended_use in text
    for item in (*card.out_of_scope, *card.limitations, *card.ethical_considerations):
        assert f"- {item}" in text
    assert "Trained in 12.5 min on 2 CPU cores, code abc1234." in text
    assert "1,234,567 parameters" in text and "seed 7" in text
    assert "training/configs/tiny_abdomen.yaml" in text
    assert SHA256 in text
    assert "2.5 MB" in text and "opset 17" in text
    assert "0.1.0" in text and "2024-05-06" in text
    assert "[-200, 300]" in text and "1.5 × 1.5 × 2 mm" in text and "96 × 96 × 64 voxels" in text


def test_optional_sections_are_left_out_when_empty():
    text = render_markdown_card(make_card(limitations=[], ethical_considerations=[], out_of_scope=[]))

    assert "## Limitations" not in text
    assert "## Ethical considerations" not in text
    assert "Out of scope" not in text


def test_write_markdown_card_creates_parent_folders(card, tmp_path):
    path = tmp_path / "cards" / "nested" / "tiny_abdomen.md"

    written = write_markdown_card(card, path)

    assert written == path
    assert path.read_text(encoding="utf-8") == render_markdown_card(card)


def test_published_results_sit_beside_the_evaluation_of_the_same_split(card):
    split = card.evaluations[1].split  # spleen 0.5
    published = [
        {"method": "Method A", "source": "paper A", "split": split, "dice": {"spleen": 0.9, "liver": 0.95}},
        {"method": "Method B", "source": "paper B", "split": split, "dice": {"spleen": 0.8}},
        {"method": "Elsewhere", "source": "paper C", "split": "another split", "dice": {"spleen": 0.1}},
    ]
    text = render_markdown_card(
        make_card(
            evaluations=[e.model_dump() for e in card.evaluations],
            onnx=card.onnx.model_dump(),
            published_comparison=published,
        )
    )
    assert "| structure | this model (tiny_abdomen) | Method A | Method B |" in text
    assert "| spleen | 0.500 | 0.900 | 0.800 |" in text
    assert "| **mean of 1** | **0.500** | 0.900 | 0.800 |" in text  # liver: not reported by every method
    assert "Elsewhere" not in text and "paper A" in text


def test_no_comparison_without_published_results(card):
    assert "Compared with published results" not in render_markdown_card(card)


def test_a_cascade_card_describes_its_refinement_stage():
    card = make_card(refinement=make_refinement(margin_mm=20.0))
    text = render_markdown_card(card)
    section = text.split("## Refinement stage (a cascade)")[1].split("## Evaluation")[0]
    assert "box around kidney_left (plus 20 mm on every side; a box each where they lie over 100 mm apart)" in section
    assert "a voxel it gives kidney_left, spleen is that structure" in section
    assert card.refinement.onnx.file in section
    assert "## Refinement stage" not in render_markdown_card(make_card())
