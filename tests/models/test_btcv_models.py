"""The organ models trained on BTCV that the project ships: each package verifies and is small, its card states what
its numbers were measured on (the standard split's held-out cases, and the shipped weights' in-distribution
training data) beside the published results, its human card is generated from its machine card, and (slow) the
evaluate command reproduces the shipped weights' numbers from ../shared/data/btcv. (The held-out numbers come from
the standard-split model, which is not shipped: README, "Models", gives the commands that rebuild and score it.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from twin_imaging.cli import cli
from twin_imaging.models import load_model_package
from twin_imaging.models.card_markdown import render_markdown_card

REPO = Path(__file__).resolve().parents[2]
RENAL_CASCADE = "abdomen_ct_fast_renal"  # organs + renal masses, opt-in: its own test below
SHIPPED = [
    p.name
    for p in (REPO / "models").iterdir()
    if p.name.startswith("abdomen_ct_") and p.name not in ("abdomen_ct_organs", RENAL_CASCADE)
]
BTCV_STRUCTURES = [
    "spleen", "kidney_right", "kidney_left", "gallbladder", "esophagus", "liver", "stomach", "aorta",
    "inferior_vena_cava", "portal_vein_and_splenic_vein", "pancreas", "adrenal_gland_right", "adrenal_gland_left",
]  # fmt: skip
EIGHT = ["aorta", "gallbladder", "kidney_left", "kidney_right", "liver", "pancreas", "spleen", "stomach"]


@pytest.fixture(scope="module", params=SHIPPED)
def package(request):
    return load_model_package(REPO / "models" / request.param)  # verifies the ONNX sha256 against the card


def held_out(card):
    (record,) = [e for e in card.evaluations if e.split.startswith("held out: BTCV standard split")]
    return record


def test_the_fast_model_ships_and_is_the_default():
    from twin_imaging.models import default_segmentation_package

    assert "abdomen_ct_fast" in SHIPPED
    assert default_segmentation_package().card.model_id == "abdomen_ct_fast"


def test_the_package_is_small_complete_and_honest(package):
    card = package.card
    assert [s.name for s in card.structures] == BTCV_STRUCTURES
    assert all(s.type.scheme == "SCT" for s in card.structures)
    assert package.onnx_path.stat().st_size <= 40e6
    assert card.onnx.parity_max_abs_diff is not None and card.onnx.parity_max_abs_diff <= 1e-3
    assert (card.preprocessing.intensity.window_min_hu, card.preprocessing.intensity.window_max_hu) == (-125, 275)
    assert "research" in card.training.data[0].licence.lower()
    assert card.training.duration_s > 0 and card.training.hardware
    assert "not" in card.intended_use.lower() and "clinical" in card.intended_use.lower()
    record = held_out(card)
    assert record.n_cases == 12 and "not the shipped weights" in record.split
    assert "expert" in record.reference
    assert {m.structure for m in record.structures} == set(BTCV_STRUCTURES)
    in_distribution = [e for e in card.evaluations if "in-distribution" in e.split.lower()]
    assert in_distribution and all(e.n_cases == 30 for e in in_distribution)
    compared = {p.method for p in card.published_comparison if p.split == record.split}
    assert {"nnU-Net (3D)", "TransUNet", "Swin-Unet"} <= compared


def test_the_human_card_is_generated_from_the_machine_card(package):
    text = (REPO / "model_cards" / f"{package.card.model_id}.md").read_text(encoding="utf-8")
    assert text == render_markdown_card(package.card)


def test_the_renal_cascade_ships_opt_in_and_says_its_masses_were_measured_on_synthetic_lesions_only():
    from twin_imaging.models import default_segmentation_package

    package = load_model_package(REPO / "models" / RENAL_CASCADE)  # verifies both ONNX files
    card = package.card
    kidneys = ("kidney_right", "kidney_left")
    assert [s.name for s in card.structures] == [*BTCV_STRUCTURES, "renal_tumor", "renal_cyst"]
    assert card.refinement.around == kidneys and card.refinement.structures == (*kidneys, "renal_tumor", "renal_cyst")
    assert card.structure("renal_tumor").attached_to == kidneys == card.structure("renal_cyst").attached_to
    assert package.onnx_path.stat().st_size + package.refinement_onnx_path.stat().st_size <= 45e6
    assert card.refinement.preprocessing.spacing_mm == (1.5, 1.5, 1.5)
    (lesions,) = [e for e in card.evaluations if any(m.structure == "renal_tumor" and m.n_cases for m in e.structures)]
    assert "synthetic" in lesions.dataset.lower() and "synthetic" in lesions.split.lower()
    assert "held out" in lesions.split and lesions.n_cases >= 12
    organs = held_out(card)  # BTCV's expert kidneys, real CT, beside the synthetic masses
    assert organs.n_cases == 12 and set(kidneys) <= {m.structure for m in organs.structures}
    assert any("synthetic lesions only" in text for text in card.limitations)
    assert any("KiTS23" in d.name and "NC" in d.licence for d in card.training.data)
    assert "not the default" in card.title and default_segmentation_package().card.model_id != RENAL_CASCADE
    text = (REPO / "model_cards" / f"{RENAL_CASCADE}.md").read_text(encoding="utf-8")
    assert text == render_markdown_card(card)


@pytest.mark.slow
def test_the_evaluate_command_reproduces_the_shipped_weights_numbers(package, shared_data, tmp_path, monkeypatch):
    """About 12 min per model on 2 CPU cores: prepares BTCV's NIfTI copy, scores all 30 cases (in-distribution)."""
    from training.prepare_btcv import prepare_btcv

    monkeypatch.setenv("TWIN_IMAGING_PREPARED_DATA_DIR", str(tmp_path / "prepared"))
    from twin_imaging.settings import get_settings

    get_settings.cache_clear()
    try:
        prepare_btcv()
        (record,) = [e for e in package.card.evaluations if "in-distribution" in e.split.lower()]
        out = tmp_path / "scores.json"
        datalist = REPO / "training" / "datalists" / "btcv.json"
        result = CliRunner().invoke(cli, ["evaluate", str(package.root), str(datalist), "--json", str(out)])
        assert result.exit_code == 0, result.output
    finally:
        get_settings.cache_clear()
    summary = json.loads(out.read_text())["summary"]
    for metrics in record.structures:
        assert summary[metrics.structure]["n_cases"] == metrics.n_cases
        for key in ("dice", "nsd", "hd95_mm"):
            expected = getattr(metrics, key)
            assert summary[metrics.structure][key] == pytest.approx(expected, abs=1e-3), (metrics.structure, key)
