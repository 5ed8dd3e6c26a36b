"""The shipped organ model: its package verifies, its human card is generated from its machine card, it runs where
torch cannot be imported, and the evaluate command reproduces the metrics its card states."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from twin_imaging.cli import cli
from twin_imaging.models import load_model_package
from twin_imaging.models.card_markdown import render_markdown_card

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "models" / "abdomen_ct_organs"
DATALIST = REPO / "training" / "datalists" / "abdomen_ct_organs.json"
STRUCTURES = ["liver", "spleen", "kidney_right", "kidney_left", "pancreas", "stomach", "gallbladder", "aorta"]


@pytest.fixture(scope="module")
def package():
    return load_model_package(PACKAGE)  # verifies the ONNX sha256 against the card


def test_the_package_is_small_and_complete(package):
    card = package.card
    assert [s.name for s in card.structures] == STRUCTURES
    assert all(s.type.scheme == "SCT" for s in card.structures)
    assert package.onnx_path.stat().st_size <= 30e6
    assert card.onnx.parity_max_abs_diff is not None and card.onnx.parity_max_abs_diff <= 1e-3
    assert card.training.duration_s > 0 and card.training.hardware
    assert any("H200" in run or "GPU" in run for run in card.training.extra_runs)
    assert "not" in card.intended_use.lower() and "clinical" in card.intended_use.lower()
    splits = [e.split.lower() for e in card.evaluations]
    assert any("training data" in s for s in splits)
    assert sum("leave-one-volume-out" in s for s in splits) == 2
    assert all("pseudo-labels" in e.reference for e in card.evaluations)


def test_the_human_card_is_generated_from_the_machine_card(package):
    text = (REPO / "model_cards" / "abdomen_ct_organs.md").read_text(encoding="utf-8")
    assert text == render_markdown_card(package.card)


def test_the_package_segments_where_torch_cannot_be_imported(tmp_path):
    script = f"""
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "monai", "lightning", "training"):
            raise ImportError(f"{{name}} is not importable in this test")
sys.meta_path.insert(0, Refuse())
from twin_imaging.inference.segment import segment_volume
from twin_imaging.models import load_model_package
from twin_imaging.testing import PhantomGeometry, make_phantom
phantom = make_phantom(PhantomGeometry(shape=(128, 96, 40), spacing_mm=(3.0, 3.0, 5.0)))
result = segment_volume(phantom.image, load_model_package({str(PACKAGE)!r}))
labels = result.labels
assert labels.shape == phantom.image.shape and labels.array.dtype.name == "uint8"
assert (labels.affine_ras == phantom.image.affine_ras).all()
assert sorted(labels.label_names.values()) == sorted({STRUCTURES!r})
assert labels.array.max() <= 8 and (labels.array > 0).any()
assert not any(m.split(".")[0] in ("torch", "monai", "lightning") for m in sys.modules)
print("segmented", int((labels.array > 0).sum()), "voxels")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "segmented" in result.stdout


def test_the_evaluate_command_reproduces_the_cards_metrics(package, shared_data, tmp_path):
    (record,) = [e for e in package.card.evaluations if "training data" in e.split.lower()]
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(cli, ["evaluate", str(PACKAGE), str(DATALIST), "--json", str(out)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out.read_text())["summary"]
    for metrics in record.structures:
        measured = summary[metrics.structure]
        assert measured["n_cases"] == metrics.n_cases
        for key in ("dice", "nsd", "hd95_mm"):
            expected = getattr(metrics, key)
            if expected is None:
                assert measured[key] is None
            else:
                assert measured[key] == pytest.approx(expected, abs=1e-3), (metrics.structure, key)
