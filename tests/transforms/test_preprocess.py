"""The model card's preprocessing: equal to MONAI's transforms, anatomy kept in place, labels back onto the source."""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage

from tests.transforms.test_resample import OBLIQUE, centroids_ras, dice, geometry_of
from twin_imaging.models.card import IntensitySpec, PreprocessingSpec
from twin_imaging.testing import PHANTOM_LABELS, PhantomGeometry, make_phantom
from twin_imaging.transforms import (
    labels_to_source_grid,
    preprocess_image,
    preprocess_labels,
    scale_intensity,
)
from twin_imaging.volume import Volume

WINDOW = IntensitySpec(window_min_hu=-200, window_max_hu=300)

MONAI_CASES = {
    # name: (geometry of the source image, spacing_mm of the model)
    "lps_dicom_to_1.5": (PhantomGeometry(shape=(90, 72, 36), spacing_mm=(3.0, 3.0, 4.0)), (1.5, 1.5, 1.5)),
    "anisotropic_0.8x0.8x2.5_to_1.5": (PhantomGeometry(shape=(160, 128, 24), spacing_mm=(0.8, 0.8, 2.5)), (1.5,) * 3),
    "downsample_1.5_to_3": (PhantomGeometry(shape=(101, 78, 61), spacing_mm=(1.5, 1.5, 1.5)), (3.0, 3.0, 3.0)),
    "sagittal_to_1.5": (
        PhantomGeometry(shape=(64, 60, 30), spacing_mm=(2.0, 2.5, 3.0), orientation="sagittal"),
        (1.5, 1.5, 1.5),
    ),
    "oblique_to_1.5x1.5x2.5": (
        PhantomGeometry(shape=(64, 60, 30), spacing_mm=(2.0, 2.5, 3.0), orientation=OBLIQUE),
        (1.5, 1.5, 2.5),
    ),
    "one_axis_within_1e-3": (PhantomGeometry(shape=(80, 64, 40), spacing_mm=(2.0, 2.0, 1.5004)), (1.5, 1.5, 1.5)),
    "spacing_already_matches": (PhantomGeometry(shape=(80, 64, 40), spacing_mm=(1.5, 1.5, 1.5)), (1.5, 1.5, 1.5)),
}


@pytest.fixture(scope="module")
def monai_preprocess():
    """MONAI's Orientation("RAS") + Spacing(pixdim) (+ ScaleIntensityRange) on a MetaTensor of the volume."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("monai")
    from monai.data import MetaTensor
    from monai.transforms import Orientation, ScaleIntensityRange, Spacing

    def run(volume: Volume, spec: PreprocessingSpec, *, mode: str) -> tuple[np.ndarray, np.ndarray]:
        data = MetaTensor(
            torch.as_tensor(volume.array[np.newaxis].astype(np.float32)), affine=torch.as_tensor(volume.affine_ras)
        )
        data = Orientation(axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S")))(data)
        data = Spacing(pixdim=spec.spacing_mm, mode=mode)(data)
        if mode != "nearest":
            window = spec.intensity
            scale = ScaleIntensityRange(
                window.window_min_hu, window.window_max_hu, window.output_min, window.output_max, clip=window.clip
            )
            data = scale(data)
        return data.numpy()[0], data.affine.numpy()

    return run


@pytest.mark.parametrize("case", MONAI_CASES)
def test_image_agrees_with_monai(monai_preprocess, case):
    geometry, spacing_mm = MONAI_CASES[case]
    image = make_phantom(geometry).image
    spec = PreprocessingSpec(spacing_mm=spacing_mm, intensity=WINDOW)

    prepared = preprocess_image(image, spec)
    expected, expected_affine = monai_preprocess(image, spec, mode="bilinear")

    assert prepared.array.dtype == np.float32 and prepared.array.shape == (1, *expected.shape)
    np.testing.assert_allclose(prepared.affine_ras, expected_affine, rtol=0, atol=1e-4)
    # MONAI's padding_mode="border" is scipy's mode="nearest": the border agrees too, so every voxel is compared
    np.testing.assert_allclose(prepared.array[0], expected, rtol=0, atol=1e-4)
    assert np.count_nonzero((expected > 0.01) & (expected < 0.99)) > 0.1 * expected.size  # not just the clip values
    assert prepared.source_shape == image.shape
    np.testing.assert_array_equal(prepared.source_affine_ras, image.affine_ras)


@pytest.mark.parametrize("case", MONAI_CASES)
def test_labels_agree_with_monai_nearest(monai_preprocess, case):
    geometry, spacing_mm = MONAI_CASES[case]
    labels = make_phantom(geometry).labels
    spec = PreprocessingSpec(spacing_mm=spacing_mm, intensity=WINDOW)

    model = preprocess_labels(labels, spec)
    expected, expected_affine = monai_preprocess(labels, spec, mode="nearest")

    assert model.array.dtype == np.uint8 and model.label_names == labels.label_names
    assert model.shape == expected.shape
    np.testing.assert_allclose(model.affine_ras, expected_affine, rtol=0, atol=1e-4)
    # Where a model voxel centre lies exactly halfway between two source voxels, both are nearest; MONAI's pick there
    # follows the rounding noise of its normalised grid_sample coordinates (it varies along one axis), ours rounds
    # half to even. Everywhere else the label must be the same.
    tie = _halfway(labels.reoriented("RAS"), model)
    assert np.count_nonzero(model.array != expected) <= np.count_nonzero(tie)
    np.testing.assert_array_equal(model.array[~tie], expected[~tie])


def test_preprocess_labels_share_the_image_grid():
    phantom = make_phantom(PhantomGeometry(shape=(80, 64, 30), spacing_mm=(2.0, 2.0, 3.0)))
    spec = PreprocessingSpec(spacing_mm=(1.5, 1.5, 1.5), intensity=WINDOW)
    labels16 = phantom.labels.with_array(phantom.labels.array.astype(np.int16), label_names=PHANTOM_LABELS)

    prepared, model = preprocess_image(phantom.image, spec), preprocess_labels(labels16, spec)

    assert model.shape == prepared.shape and model.array.dtype == np.uint8
    np.testing.assert_array_equal(model.affine_ras, prepared.affine_ras)
    assert model.orientation == "RAS"


def test_matching_spacing_only_reorients_and_windows():
    image = make_phantom(PhantomGeometry(shape=(60, 50, 20), spacing_mm=(1.5, 1.5, 2.0004))).image
    spec = PreprocessingSpec(spacing_mm=(1.5, 1.5, 2.0), intensity=WINDOW)

    prepared = preprocess_image(image, spec)

    ras = image.reoriented("RAS")
    np.testing.assert_array_equal(prepared.affine_ras, ras.affine_ras)
    np.testing.assert_array_equal(prepared.array[0], scale_intensity(ras.array, WINDOW))


@pytest.mark.parametrize("orientation", ["axial", OBLIQUE])
def test_labels_survive_the_round_trip_to_a_coarser_model_grid(orientation):
    """1.5 mm source → 3 mm model grid → back onto the exact source grid."""
    phantom = make_phantom(PhantomGeometry(shape=(216, 160, 124), spacing_mm=(1.5,) * 3, orientation=orientation))
    truth = phantom.labels.array
    spec = PreprocessingSpec(spacing_mm=(3.0, 3.0, 3.0), intensity=WINDOW)

    prepared = preprocess_image(phantom.image, spec)
    model = preprocess_labels(phantom.labels, spec)
    back = labels_to_source_grid(model.array, prepared)

    assert back.dtype == np.uint8 and back.shape == truth.shape
    np.testing.assert_array_equal(labels_to_source_grid(model.array[np.newaxis].astype(np.int64), prepared), back)
    # Source voxels that are model voxel centres come back exactly ...
    xform = np.linalg.solve(prepared.affine_ras, prepared.source_affine_ras)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in truth.shape], indexing="ij"), axis=-1)
    model_ijk = ijk @ xform[:3, :3].T + xform[:3, 3]
    on_model_centres = np.all(np.abs(model_ijk - np.rint(model_ijk)) < 1e-6, axis=-1)
    assert np.count_nonzero(on_model_centres) >= truth.size // 8 - truth.size // 100
    np.testing.assert_array_equal(back[on_model_centres], truth[on_model_centres])
    # ... and every other one takes the label of a source voxel at most one voxel away (the nearest model centre)
    padded = np.pad(truth, 1, mode="edge")
    near = np.zeros(truth.shape, dtype=bool)
    for di, dj, dk in itertools.product(range(3), repeat=3):
        near |= back == padded[di : di + truth.shape[0], dj : dj + truth.shape[1], dk : dk + truth.shape[2]]
    assert near.all()
    # What a 3 mm grid can hold: kidneys measure 0.948-0.953 over grid phases, and the thin aorta, vertebrae, muscle
    # and fat rings 0.91-0.975, with any rule for the halfway voxels (half to even, up or down agree within 0.005).
    for label, name in PHANTOM_LABELS.items():
        minimum = {"liver": 0.95, "spleen": 0.95, "kidney_right": 0.94, "kidney_left": 0.94}.get(name, 0.9)
        assert dice(back == label, truth == label) > minimum, name


def test_oblique_image_keeps_its_anatomy_in_world_coordinates():
    """An oblique acquisition: the model grid keeps the tilt (closest-canonical RAS axes) and the organs stay put."""
    geometry = PhantomGeometry(shape=(100, 80, 40), spacing_mm=(2.5, 2.5, 4.0), orientation=OBLIQUE)
    phantom = make_phantom(geometry, noise_hu_sd=0.0)
    spec = PreprocessingSpec(spacing_mm=(1.5, 1.5, 2.0), intensity=WINDOW)

    prepared = preprocess_image(phantom.image, spec)
    model = preprocess_labels(phantom.labels, spec)

    ras = phantom.image.reoriented("RAS")
    assert model.orientation == "RAS" and model.spacing_mm == pytest.approx(spec.spacing_mm)
    direction = model.affine_ras[:3, :3] / model.spacing_mm
    np.testing.assert_allclose(direction, ras.affine_ras[:3, :3] / ras.spacing_mm, atol=1e-12)  # tilt kept
    assert np.abs(direction - np.diag(np.diag(direction))).max() > 0.1  # really oblique
    before, after = centroids_ras(phantom.labels), centroids_ras(model)
    coarser_mm = np.maximum(ras.spacing_mm, spec.spacing_mm)
    for label, centroid in before.items():
        shift_mm = (after[label] - centroid) @ direction  # along the (shared) grid axes
        assert np.all(np.abs(shift_mm) < 0.5 * coarser_mm), PHANTOM_LABELS[label]
    # the windowed image, drawn directly on the model grid: organ interiors carry their windowed HU exactly
    direct = make_phantom(geometry_of(prepared.shape, prepared.affine_ras), noise_hu_sd=0.0)
    for label, name in PHANTOM_LABELS.items():
        inside = ndimage.binary_erosion(direct.labels.array == label, iterations=4)
        expected = scale_intensity(np.array([phantom.anatomy.structure(name).hu]), WINDOW)[0]
        np.testing.assert_allclose(prepared.array[0][inside], expected, atol=1e-5, err_msg=name)


def test_labels_to_source_grid_refuses_what_does_not_fit():
    phantom = make_phantom(PhantomGeometry(shape=(40, 30, 10), spacing_mm=(3.0, 3.0, 3.0)))
    prepared = preprocess_image(phantom.image, PreprocessingSpec(spacing_mm=(4.0, 4.0, 4.0), intensity=WINDOW))

    with pytest.raises(ValueError, match="model grid"):
        labels_to_source_grid(np.zeros((5, 5, 5), np.uint8), prepared)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        labels_to_source_grid(np.full(prepared.shape, 300, np.int64), prepared)


def test_transforms_never_import_torch_or_monai():
    code = "import sys, twin_imaging.transforms; print(sorted({'torch', 'monai'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _halfway(source: Volume, model: Volume) -> np.ndarray:
    """Model voxels whose centre lies halfway between two source voxel centres along some source axis."""
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in model.shape], indexing="ij"), axis=-1)
    xform = np.linalg.solve(source.affine_ras, model.affine_ras)
    coords = ijk @ xform[:3, :3].T + xform[:3, 3]
    return np.any(np.abs(coords - np.floor(coords) - 0.5) < 1e-6, axis=-1)
