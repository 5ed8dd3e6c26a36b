"""Whole-volume segmentation with a model package, on the threshold segmenter whose answer is known exactly."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from tests.transforms.test_logits_to_source import reference_argmax
from twin_imaging.errors import ModelError
from twin_imaging.files import file_sha256
from twin_imaging.inference import sliding_window
from twin_imaging.inference.segment import Segmenter, segment_volume
from twin_imaging.models import load_model_package
from twin_imaging.testing import (
    PHANTOM_LABELS,
    PhantomGeometry,
    make_phantom,
    threshold_labels,
    write_threshold_model_package,
)
from twin_imaging.transforms import preprocess_image
from twin_imaging.volume import Volume

pytest.importorskip("onnx")  # builds the test model

# Thresholds that no trilinearly resampled phantom value below comes near (checked in the test), so the network's
# float32 arithmetic and the float64 expectation cannot disagree on a tie.
THRESHOLDS_HU = (-29.71828, 130.31416)
PHANTOM_LABEL = {name: value for value, name in PHANTOM_LABELS.items()}

GEOMETRIES = {
    # axial LPS, 2 x 2 x 3 mm against the model's 3 mm: resampled in-plane, kept along z
    "axial_2x2x3": PhantomGeometry(shape=(128, 128, 40), spacing_mm=(2.0, 2.0, 3.0)),
    # coronal, coarser along i and k and finer along j than the model: every axis resampled, axes permuted
    "coronal_4x2.5x5": PhantomGeometry(shape=(80, 56, 40), spacing_mm=(4.0, 2.5, 5.0), orientation="coronal"),
}


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    return write_threshold_model_package(tmp_path_factory.mktemp("threshold"), thresholds_hu=THRESHOLDS_HU)


@pytest.fixture(scope="module")
def default_package(tmp_path_factory):
    return write_threshold_model_package(tmp_path_factory.mktemp("threshold_default"))


@pytest.fixture(scope="module")
def axial_phantom():
    return make_phantom(GEOMETRIES["axial_2x2x3"])


def expected_labels(volume: Volume, card, thresholds_hu) -> np.ndarray:
    """The pipeline done by hand: preprocess, the threshold model's three logits written out (see tiny_model), every
    class resampled to the source grid with scipy, argmax there."""
    prepared = preprocess_image(volume, card.preprocessing)
    window = card.preprocessing.intensity
    width = window.window_max_hu - window.window_min_hu
    t1, t2 = ((t - window.window_min_hu) / width for t in thresholds_hu)
    x = prepared.array[0].astype(np.float64)
    a = 100.0
    logits = np.stack([np.zeros_like(x), a * (x - t1), 2 * a * (x - (t1 + t2) / 2)])
    return reference_argmax(logits, prepared)


# --- the model itself ----------------------------------------------------------------------------------------------


def test_threshold_labels_intervals():
    hu = np.array([-1000.0, -30.001, -30.0, 0.0, 129.999, 130.0, 3000.0])
    assert threshold_labels(hu, (-30.0, 130.0)).tolist() == [0, 0, 1, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="increasing"):
        threshold_labels(hu, (130.0, -30.0))


def test_network_argmax_matches_thresholds_on_a_ramp(package):
    """Run the ONNX graph alone on windowed HU values on both sides of each threshold."""
    window = package.card.preprocessing.intensity
    near = [t + d for t in THRESHOLDS_HU for d in (-1.0, -0.01, 0.01, 1.0)]
    hu = np.concatenate([np.linspace(-1000.0, 1000.0, 253), near]).astype(np.float64)
    x = np.clip((hu - window.window_min_hu) / (window.window_max_hu - window.window_min_hu), 0.0, 1.0)
    session = ort.InferenceSession(str(package.onnx_path), providers=["CPUExecutionProvider"])
    batch = x.astype(np.float32).reshape(1, 1, -1, 1, 1)
    (logits,) = session.run(["logits"], {"image": batch})
    assert logits.shape == (1, 3, hu.size, 1, 1)
    np.testing.assert_array_equal(np.argmax(logits[0, :, :, 0, 0], axis=0), threshold_labels(hu, THRESHOLDS_HU))
    assert set(np.unique(threshold_labels(hu, THRESHOLDS_HU))) == {0, 1, 2}


def test_package_is_deterministic_and_valid(tmp_path, package):
    again = write_threshold_model_package(tmp_path, thresholds_hu=THRESHOLDS_HU)
    assert again.card == package.card
    assert file_sha256(again.onnx_path) == package.card.onnx.sha256
    card = package.card
    assert card.intended_use == "tests only"
    assert card.label_names() == {1: "soft_tissue", 2: "bone"}
    assert (card.structure("soft_tissue").type.value, card.structure("bone").type.value) == ("87784001", "272673000")
    assert card.training.max_steps == 0 and "not trained" in card.training.network
    with pytest.raises(ValueError, match="inside the window"):
        write_threshold_model_package(tmp_path / "bad", thresholds_hu=(-300.0, 130.0))


# --- segmentation ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("geometry", list(GEOMETRIES), ids=list(GEOMETRIES))
def test_segmentation_equals_the_pipeline_done_by_hand(package, geometry):
    phantom = make_phantom(GEOMETRIES[geometry])
    assert not np.allclose(phantom.image.spacing_mm, package.card.preprocessing.spacing_mm)  # resampled both ways

    result = segment_volume(phantom.image, package)

    labels = result.labels
    assert labels.shape == phantom.image.shape
    np.testing.assert_array_equal(labels.affine_ras, phantom.image.affine_ras)
    assert labels.array.dtype == np.uint8
    assert dict(labels.label_names) == {1: "soft_tissue", 2: "bone"}
    assert (result.model_id, result.model_version) == ("threshold_test", "1.0.0")
    assert result.onnx_sha256 == file_sha256(package.onnx_path)
    assert "CPUExecutionProvider" in result.providers
    assert set(result.timings_s) == {"preprocess", "network", "resample_back", "postprocess"}

    expected = expected_labels(phantom.image, package.card, THRESHOLDS_HU)
    assert set(np.unique(expected)) == {0, 1, 2}
    np.testing.assert_array_equal(labels.array, expected)


def test_segmentation_labels_the_right_anatomy(default_package, axial_phantom):
    labels = Segmenter(default_package).segment(axial_phantom.image).labels.array
    truth = axial_phantom.labels.array
    vertebrae, liver = truth == PHANTOM_LABEL["vertebrae"], truth == PHANTOM_LABEL["liver"]
    assert vertebrae.sum() > 1000 and liver.sum() > 10000
    assert np.mean(labels[vertebrae] == 2) > 0.95  # 400 HU: bone
    assert np.mean(labels[liver] == 1) > 0.90  # 60 HU: soft tissue
    assert np.mean(labels[truth == PHANTOM_LABEL["subcutaneous_fat"]] == 0) > 0.90  # -100 HU: background
    assert np.all(labels[axial_phantom.image.array <= -500] == 0)  # air


def _blob_volume() -> Volume:
    """A 3 mm RAS volume (the model's grid): a soft-tissue slab, a large bone block, and small separate blobs."""
    hu = np.full((40, 40, 20), -60, dtype=np.int16)
    hu[4:36, 4:36, 2:8] = 50  # soft tissue, the large component
    hu[10:20, 10:20, 10:18] = 400  # bone, the large component
    hu[30:32, 30:32, 14:16] = 400  # a small bone blob, far from the block
    hu[30:32, 4:6, 14:16] = 50  # a small soft-tissue blob
    return Volume(hu, np.diag([3.0, 3.0, 3.0, 1.0]))


@pytest.mark.parametrize("largest", [("bone",), True], ids=["bone", "all"])
def test_keep_largest_component_from_the_card(tmp_path, largest):
    volume = _blob_volume()
    plain = segment_volume(volume, write_threshold_model_package(tmp_path / "plain")).labels.array
    np.testing.assert_array_equal(plain, threshold_labels(volume.array))  # on the model grid: no resampling
    cleaned_package = write_threshold_model_package(tmp_path / "largest", keep_largest_component=largest)
    cleaned = segment_volume(volume, cleaned_package).labels.array

    bone_blob, soft_blob = (slice(30, 32), slice(30, 32), slice(14, 16)), (slice(30, 32), slice(4, 6), slice(14, 16))
    assert np.all(cleaned[bone_blob] == 0)
    assert np.all(cleaned[soft_blob] == (0 if largest is True else 1))
    expected = plain.copy()
    expected[bone_blob] = 0
    if largest is True:
        expected[soft_blob] = 0
    np.testing.assert_array_equal(cleaned, expected)  # everything else untouched
    assert np.count_nonzero(cleaned == 2) == 10 * 10 * 8


def test_attached_structures_keep_only_components_touching_their_anchors(tmp_path):
    volume = _blob_volume()
    volume.array[20:22, 10:12, 6:10] = 400  # a bone bridge from the soft-tissue block (z 2:8) to the large bone
    plain = segment_volume(volume, write_threshold_model_package(tmp_path / "plain")).labels.array
    package = write_threshold_model_package(tmp_path / "attached", attached_to={"bone": ["soft_tissue"]})
    assert package.card.structure("bone").attached_to == ("soft_tissue",)
    result = segment_volume(volume, package)
    cleaned = result.labels.array

    expected = plain.copy()
    expected[30:32, 30:32, 14:16] = 0  # the bone blob far from any soft tissue goes
    np.testing.assert_array_equal(cleaned, expected)
    assert result.unattached_dropped_ml == pytest.approx({"bone": 2 * 2 * 2 * 27 / 1000})  # and is accounted for
    # the block (z 10:18, two slices above the soft tissue) stays through the bridge it touches
    assert np.count_nonzero(cleaned == 2) == 10 * 10 * 8 + 2 * 2 * 4


def test_a_cascade_relabels_only_the_box_around_its_structures(tmp_path):
    hu = np.full((40, 40, 20), -60, dtype=np.int16)  # fat: background for both networks
    hu[10:20, 10:20, 8:14] = 400  # bone for both
    hu[10:20, 10:20, 14:16] = -10  # soft tissue for the first (>= -30), background for the refinement (< 0)
    hu[30:36, 30:36, 2:6] = -10  # the same, far from the bone
    hu[21, 12:14, 10:12] = -10  # the last row inside the box along x (bone ends at 19, 2 voxels of margin)
    hu[22, 12:14, 10:12] = -10  # the first row outside it
    volume = Volume(hu, np.diag([3.0, 3.0, 3.0, 1.0]))  # the model grid: no resampling
    package = write_threshold_model_package(tmp_path / "cascade", refine_around=("bone",), refine_margin_mm=6.0)
    assert package.refinement_onnx_path.is_file() and package.card.refinement.around == ("bone",)
    labels = segment_volume(volume, package).labels.array

    expected = threshold_labels(hu)  # (-30, 130): the first network
    box = (slice(8, 22), slice(8, 22), slice(6, 16))  # the bone's box, 2 voxels (6 mm) more on every side
    expected[box] = threshold_labels(hu[box], (0.0, 200.0))
    np.testing.assert_array_equal(labels, expected)
    assert labels[15, 15, 10] == 2 and labels[15, 15, 15] == 0 and labels[32, 32, 3] == 1
    assert labels[21, 12, 10] == 0 and labels[22, 12, 10] == 1  # the margin, exactly


def test_a_cascade_without_its_around_structure_keeps_the_first_networks_labels(tmp_path):
    volume = Volume(np.full((20, 20, 10), -10, dtype=np.int16), np.diag([3.0, 3.0, 3.0, 1.0]))
    volume.array[:3] = -100  # -10 HU: soft tissue for the first network, background for the refinement
    package = write_threshold_model_package(tmp_path / "cascade", refine_around=("bone",))
    labels = segment_volume(volume, package).labels.array
    np.testing.assert_array_equal(labels, threshold_labels(volume.array))


@pytest.mark.parametrize(
    ("bone_x", "probe_x", "probe_refined"), [(100, 50, False), (30, 20, True)], ids=["far", "near"]
)
def test_a_cascade_refines_structures_far_apart_in_separate_crops(tmp_path, bone_x, probe_x, probe_refined):
    """Boxes more than 100 mm apart are refined one by one (the space between them is left to the first network);
    nearer ones as one crop, as the kidneys are."""
    hu = np.full((120, 20, 10), -60, dtype=np.int16)  # fat: background for both networks
    hu[2:8, 5:15, 3:7] = -10  # soft tissue for both
    hu[bone_x : bone_x + 6, 5:15, 3:7] = 400  # bone for both
    hu[probe_x, 5:15, 3:7] = -40  # background for the first network, soft tissue for the refinement
    volume = Volume(hu, np.diag([3.0, 3.0, 3.0, 1.0]))
    package = write_threshold_model_package(
        tmp_path / "cascade",
        refine_around=("soft_tissue", "bone"),
        refine_thresholds_hu=(-50.0, 200.0),
        refine_margin_mm=6.0,
    )
    labels = segment_volume(volume, package).labels.array
    assert (labels[2:8, 5:15, 3:7] == 1).all() and (labels[bone_x : bone_x + 6, 5:15, 3:7] == 2).all()
    assert (labels[probe_x, 5:15, 3:7] == (1 if probe_refined else 0)).all()
    assert (labels[9, 5:15, 3:7] == 0).all()  # fat inside the crop: background for both


@pytest.mark.parametrize("damage", ["swapped", "truncated"])
def test_changed_onnx_file_is_refused_before_a_session_is_built(tmp_path, monkeypatch, damage):
    package = write_threshold_model_package(tmp_path / "package")
    if damage == "swapped":  # a valid ONNX model with other weights
        other = write_threshold_model_package(tmp_path / "other", thresholds_hu=(0.0, 200.0))
        shutil.copyfile(other.onnx_path, package.onnx_path)
    else:
        package.onnx_path.write_bytes(package.onnx_path.read_bytes()[:-10])

    def no_session(*args, **kwargs):
        raise AssertionError("an ONNX Runtime session was built for a refused model")

    monkeypatch.setattr(ort, "InferenceSession", no_session)
    with pytest.raises(ModelError, match=r"sha256.*changed or damaged"):
        Segmenter(load_model_package(package.root))
    with pytest.raises(ModelError, match="sha256"):
        load_model_package(package.root / "card.json")


def test_progress_is_forwarded(package, axial_phantom):
    calls: list[tuple[int, int]] = []
    segmenter = Segmenter(package, batch_size=3)
    segmenter.segment(axial_phantom.image, progress=lambda done, total: calls.append((done, total)))

    prepared = preprocess_image(axial_phantom.image, package.card.preprocessing)
    spec = package.card.inference
    total = len(sliding_window.window_starts(prepared.shape, spec.patch_size_voxels, spec.overlap))
    assert total > 3
    assert calls == [(min(done, total), total) for done in range(3, total + 3, 3)]


_NO_TORCH_SCRIPT = textwrap.dedent(
    """
    import json, sys

    BLOCKED = {"torch", "monai", "lightning", "pytorch_lightning", "torchio"}

    class BlockTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"{name} is blocked in this test", name=name)
            return None

    sys.meta_path.insert(0, BlockTorch())
    try:
        import torch  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("the import blocker does not work")

    import numpy as np

    import twin_imaging
    from twin_imaging.inference.segment import Segmenter
    from twin_imaging.models import load_model_package
    from twin_imaging.testing import PhantomGeometry, make_phantom

    package_dir, output = sys.argv[1], sys.argv[2]
    phantom = make_phantom(PhantomGeometry(shape=(64, 64, 20), spacing_mm=(4.0, 4.0, 5.0)))
    result = Segmenter(load_model_package(package_dir)).segment(phantom.image)
    np.save(output, result.labels.array)
    loaded = sorted({m.split(".")[0] for m in sys.modules} & BLOCKED)
    print(json.dumps({"blocked_modules_loaded": loaded, "label_names": result.labels.label_names}))
    """
)


def test_serving_path_needs_no_torch(tmp_path, package):
    output = tmp_path / "labels.npy"
    completed = subprocess.run(
        [sys.executable, "-c", _NO_TORCH_SCRIPT, str(package.root), str(output)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads(completed.stdout.strip().splitlines()[-1])
    assert report == {"blocked_modules_loaded": [], "label_names": {"1": "soft_tissue", "2": "bone"}}

    phantom = make_phantom(PhantomGeometry(shape=(64, 64, 20), spacing_mm=(4.0, 4.0, 5.0)))
    labels = np.load(output)
    np.testing.assert_array_equal(labels, Segmenter(package).segment(phantom.image).labels.array)
    assert set(np.unique(labels)) == {0, 1, 2}
