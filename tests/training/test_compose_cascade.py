"""Two packages → one cascade package, on the threshold segmenter whose answers are known exactly."""

from __future__ import annotations

import numpy as np
import pytest

from training.compose_cascade import compose_package, main
from twin_imaging.files import file_sha256
from twin_imaging.inference.segment import segment_volume
from twin_imaging.models import load_model_package
from twin_imaging.models.package import write_model_package
from twin_imaging.models.structures import BUILTIN_STRUCTURES
from twin_imaging.testing import threshold_labels, write_threshold_model_package
from twin_imaging.volume import Volume

pytest.importorskip("onnx")  # builds the test models


@pytest.fixture
def first(tmp_path):
    return write_threshold_model_package(tmp_path / "first", model_id="first_net")


@pytest.fixture
def refinement_with_a_tumour(tmp_path):
    """A refinement whose labels are soft tissue (1) and a renal tumour (2, >= 200 HU): one structure is new."""
    plain = write_threshold_model_package(tmp_path / "plain", thresholds_hu=(0.0, 200.0), model_id="refine_net")
    tumour = BUILTIN_STRUCTURES["renal_tumor"]
    structures = (
        plain.card.structures[0],
        plain.card.structures[1].model_copy(update={"name": "renal_tumor", **tumour, "keep_largest_component": False}),
    )
    card = plain.card.model_copy(update={"structures": structures})
    return write_model_package(tmp_path / "refine", card, plain.onnx_path)


def test_the_cascade_appends_new_structures_and_holds_both_networks(tmp_path, first, refinement_with_a_tumour):
    package = compose_package(
        first, refinement_with_a_tumour, tmp_path / "cascade", around=["bone"], margin_mm=6.0, version="2.0.0"
    )
    card = load_model_package(package.root).card  # verified: both hashes
    assert card.model_id == "first_net" and card.version == "2.0.0" and card.evaluations == ()
    assert [(s.label, s.name) for s in card.structures] == [(1, "soft_tissue"), (2, "bone"), (3, "renal_tumor")]
    assert card.structure("renal_tumor").type.value == BUILTIN_STRUCTURES["renal_tumor"]["type"].value
    stage = card.refinement
    assert stage.around == ("bone",) and stage.structures == ("soft_tissue", "renal_tumor")
    assert stage.onnx.file == "refine_net.onnx" and stage.onnx.sha256 == file_sha256(refinement_with_a_tumour.onnx_path)
    assert card.onnx.sha256 == file_sha256(first.onnx_path)

    hu = np.full((40, 40, 20), -60, dtype=np.int16)
    hu[10:20, 10:20, 8:14] = 400  # bone for the first, tumour for the refinement
    hu[10:20, 10:20, 14:16] = 150  # bone for the first, soft tissue for the refinement
    hu[30:36, 30:36, 2:6] = -10  # soft tissue for the first, background for the refinement: far, so stays
    labels = segment_volume(Volume(hu, np.diag([3.0, 3.0, 3.0, 1.0])), package).labels.array
    expected = threshold_labels(hu)
    box = (slice(8, 22), slice(8, 22), slice(6, 18))  # around the first's bone (z 8:16), 2 voxels more
    inside = threshold_labels(hu[box], (0.0, 200.0))
    expected[box] = np.where(inside == 2, 3, inside)  # the refinement's 2 is the card's renal_tumor (3)
    np.testing.assert_array_equal(labels, expected)
    assert labels[15, 15, 10] == 3 and labels[15, 15, 15] == 1 and labels[32, 32, 3] == 1


def test_the_command_writes_the_package_and_its_human_card(tmp_path, first, refinement_with_a_tumour):
    words = tmp_path / "words.yaml"
    words.write_text("title: Threshold cascade\nextra_runs: ['refinement: thresholds 0 and 200 HU']\n")
    markdown = tmp_path / "card.md"
    code = main(
        [str(first.root), str(refinement_with_a_tumour.root), "--around", "bone", "--version", "1.1.0",
         "--out", str(tmp_path / "cascade"), "--model-id", "threshold_cascade", "--card-file", str(words),
         "--card-markdown", str(markdown),
         "--attached", "renal_tumor=bone,soft_tissue"]
    )  # fmt: skip
    assert code == 0
    card = load_model_package(tmp_path / "cascade").card
    assert card.title == "Threshold cascade" and card.training.extra_runs[-1] == "refinement: thresholds 0 and 200 HU"
    assert card.structure("renal_tumor").attached_to == ("bone", "soft_tissue")
    assert card.model_id == "threshold_cascade" and (tmp_path / "cascade" / "threshold_cascade.onnx").is_file()
    assert "## Refinement stage (a cascade)" in markdown.read_text()
    again = [str(first.root), str(refinement_with_a_tumour.root), "--around", "bone", "--version", "1"]
    assert main([*again, "--out", str(tmp_path / "x"), "--attached", "liver=bone"]) == 1
    assert not (tmp_path / "x").exists()


def test_a_cascade_of_a_cascade_and_unknown_structures_are_refused(tmp_path, first, refinement_with_a_tumour):
    cascade = compose_package(first, refinement_with_a_tumour, tmp_path / "c", around=["bone"], margin_mm=6.0,
                              version="2.0.0")  # fmt: skip
    with pytest.raises(ValueError, match="two single-network packages"):
        compose_package(cascade, first, tmp_path / "d", around=["bone"], margin_mm=6.0, version="3.0.0")
    with pytest.raises(ValueError, match=r"lacks: \['liver'\]"):
        compose_package(first, refinement_with_a_tumour, tmp_path / "e", around=["liver"], margin_mm=6.0,
                        version="2.0.0")  # fmt: skip
    assert not (tmp_path / "d").exists() and not (tmp_path / "e").exists()
