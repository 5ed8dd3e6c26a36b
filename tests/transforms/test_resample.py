"""Resampling: exact on the same grid, anatomy kept in place in world coordinates, fills outside the input."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from twin_imaging.testing import PHANTOM_LABELS, PhantomGeometry, make_phantom
from twin_imaging.transforms import resample_to_grid, resample_to_spacing, spacing_grid
from twin_imaging.volume import LPS_TO_RAS, SourceImage, Volume

OBLIQUE = (0.9, 0.3, 0.0, -0.3, 0.9, 0.2)  # LPS row and column cosines, tilted about two axes


def geometry_of(shape: tuple[int, int, int], affine_ras: np.ndarray) -> PhantomGeometry:
    """The phantom geometry whose grid is ``shape``/``affine_ras`` (a right-handed grid), to sample it directly."""
    affine_lps = LPS_TO_RAS @ affine_ras
    spacing = np.linalg.norm(affine_lps[:3, :3], axis=0)
    cosines = affine_lps[:3, :3] / spacing
    assert np.linalg.det(cosines) > 0
    centre = affine_lps[:3, :3] @ ((np.asarray(shape) - 1) / 2.0) + affine_lps[:3, 3]
    return PhantomGeometry(
        shape=shape,
        spacing_mm=tuple(spacing),
        orientation=tuple(cosines[:, 0]) + tuple(cosines[:, 1]),
        centre_lps_mm=tuple(centre),
    )


def centroids_ras(labels: Volume) -> dict[int, np.ndarray]:
    """World (RAS mm) centroid of each label present."""
    return {
        label: labels.index_to_ras(np.argwhere(labels.array == label)).mean(axis=0)
        for label in np.unique(labels.array)
        if label
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(PhantomGeometry(shape=(120, 90, 40), spacing_mm=(2.8, 2.8, 4.5)))


def test_identical_grid_returns_the_same_voxels(phantom):
    sources = tuple(SourceImage("1.2.840.10008.5.1.4.1.1.2", f"1.2.3.{k}") for k in range(phantom.image.shape[2]))
    image = Volume(phantom.image.array, phantom.image.affine_ras, info=phantom.image.info, sources=sources)

    linear = resample_to_grid(image, image.shape, image.affine_ras, order=1)
    nearest = resample_to_grid(phantom.labels, image.shape, image.affine_ras, order=0)

    assert linear.array.dtype == np.float32
    np.testing.assert_array_equal(linear.array, image.array.astype(np.float32))
    assert not np.shares_memory(linear.array, image.array)
    assert linear.sources == sources and linear.info == image.info
    assert nearest.array.dtype == np.uint8 and nearest.label_names == phantom.labels.label_names
    np.testing.assert_array_equal(nearest.array, phantom.labels.array)


@pytest.mark.parametrize("axcodes", ["RAS", "PIL", "SRA"])
def test_flipped_and_permuted_grids_give_the_reoriented_voxels(phantom, axcodes):
    """The same voxel centres in another axis order: interpolation must reproduce them exactly."""
    reoriented = phantom.image.reoriented(axcodes)
    resampled = resample_to_grid(phantom.image, reoriented.shape, reoriented.affine_ras, order=1)
    labels = resample_to_grid(phantom.labels, reoriented.shape, reoriented.affine_ras, order=0)

    assert resampled.orientation == axcodes
    np.testing.assert_array_equal(resampled.array, reoriented.array.astype(np.float32))
    np.testing.assert_array_equal(labels.array, phantom.labels.reoriented(axcodes).array)
    assert resampled.sources == ()


@pytest.mark.parametrize("spacing_mm", [(1.5, 1.5, 1.5), (3.0, 3.0, 3.0), (2.0, 4.0, 2.5)])
def test_resampled_organs_stay_in_place_in_world_coordinates(phantom, spacing_mm):
    labels = resample_to_spacing(phantom.labels, spacing_mm, order=0)

    assert labels.spacing_mm == pytest.approx(spacing_mm)
    assert labels.array.dtype == np.uint8 and labels.label_names == PHANTOM_LABELS
    before, after = centroids_ras(phantom.labels), centroids_ras(labels)
    assert before.keys() == after.keys()
    coarser_mm = np.maximum(phantom.labels.spacing_mm, spacing_mm)  # both grids are axis-aligned with RAS
    for label, centroid in before.items():
        assert np.all(np.abs(after[label] - centroid) < 0.5 * coarser_mm), PHANTOM_LABELS[label]


def test_resampled_image_matches_the_phantom_sampled_on_the_new_grid():
    """Trilinear resampling of a noise-free phantom agrees with the phantom drawn directly on the finer grid."""
    source = make_phantom(PhantomGeometry(shape=(100, 76, 36), spacing_mm=(3.2, 3.2, 5.0)), noise_hu_sd=0.0)
    image = resample_to_spacing(source.image, (1.6, 1.6, 2.5), order=1)
    direct = make_phantom(geometry_of(image.shape, image.affine_ras), noise_hu_sd=0.0)

    assert image.array.dtype == np.float32
    # voxels whose trilinear taps all lie in the organ: deeper inside than 1.5 source voxels (boundary + one tap)
    radius = np.ceil(1.5 * np.divide(source.image.spacing_mm, image.spacing_mm)).astype(int)
    deep = np.ones(tuple(2 * radius + 1), dtype=bool)
    checked = 0
    for label, name in PHANTOM_LABELS.items():
        inside = ndimage.binary_erosion(direct.labels.array == label, structure=deep)
        checked += inside.any()
        np.testing.assert_allclose(image.array[inside], source.anatomy.structure(name).hu, atol=1e-3, err_msg=name)
    assert checked >= 6


def test_resample_to_an_oblique_grid_keeps_the_anatomy():
    """The general (not axis-aligned) path vs the phantom drawn directly on the tilted grid."""
    source = make_phantom(PhantomGeometry(shape=(120, 90, 40), spacing_mm=(2.8, 2.8, 4.5)), noise_hu_sd=0.0)
    grid = PhantomGeometry(shape=(110, 90, 50), spacing_mm=(3.0, 3.0, 4.0), orientation=OBLIQUE)
    image = resample_to_grid(source.image, grid.shape, grid.affine_ras(), order=1)
    labels = resample_to_grid(source.labels, grid.shape, grid.affine_ras(), order=0)
    direct = make_phantom(grid, noise_hu_sd=0.0)

    np.testing.assert_allclose(labels.affine_ras, grid.affine_ras())
    deep = ndimage.generate_binary_structure(3, 3)
    for label, name in PHANTOM_LABELS.items():
        organ = direct.labels.array == label
        assert dice(labels.array == label, organ) > 0.8, name
        # deeper than one tilted voxel diagonal plus one source voxel: every trilinear tap is inside the organ
        inside = ndimage.binary_erosion(organ, structure=deep, iterations=4)
        np.testing.assert_allclose(image.array[inside], source.anatomy.structure(name).hu, atol=1e-3, err_msg=name)
    assert ndimage.binary_erosion(direct.labels.array == 1, structure=deep, iterations=4).sum() > 1000
    resampled, drawn = centroids_ras(labels), centroids_ras(direct.labels)
    for label in (1, 2, 3, 4):  # the organs (the cylinders run past the source's slab, where labels are 0)
        assert np.linalg.norm(resampled[label] - drawn[label]) < 1.5, PHANTOM_LABELS[label]


@pytest.mark.parametrize("oblique", [False, True])
def test_samples_beyond_half_a_voxel_outside_get_the_fill_value(oblique):
    volume = Volume(np.ones((10, 12, 8), np.int16), np.diag([2.0, 2.0, 3.0, 1.0]))
    affine = np.diag([1.0, 1.0, 1.5, 1.0])
    if oblique:
        angle = np.deg2rad(20.0)
        rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        affine[:3, :3] = rotation @ affine[:3, :3]
    affine[:3, 3] = (-6.0, -5.0, -4.0)
    shape = (34, 36, 24)

    out = resample_to_grid(volume, shape, affine, order=1, fill_value=-7.0)
    nearest = resample_to_grid(volume, shape, affine, order=0, fill_value=0)

    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    source_ijk = (np.c_[ijk, np.ones(len(ijk))] @ np.linalg.solve(volume.affine_ras, affine).T)[:, :3]
    inside = np.all((source_ijk >= -0.5) & (source_ijk <= np.asarray(volume.shape) - 0.5), axis=1)
    inside = inside.reshape(shape)
    assert 0 < inside.sum() < inside.size
    np.testing.assert_array_equal(out.array, np.where(inside, 1.0, -7.0).astype(np.float32))
    np.testing.assert_array_equal(nearest.array, inside.astype(np.int16))


def test_spacing_grid_spans_the_input_voxel_centres():
    affine = LPS_TO_RAS @ np.diag([0.7, 0.7, 2.0, 1.0])
    affine[:3, 3] = (180.0, 170.0, -50.0)
    shape, out = spacing_grid((512, 400, 31), affine, (1.5, 1.5, 1.5))

    assert shape == tuple(round((n - 1) * s / 1.5 + 1) for n, s in zip((512, 400, 31), (0.7, 0.7, 2.0), strict=True))
    np.testing.assert_allclose(out[:3, :3], LPS_TO_RAS[:3, :3] * 1.5)
    np.testing.assert_allclose(out[:3, 3], affine[:3, 3])  # voxel (0, 0, 0) stays where it was


def test_spacing_within_tolerance_is_kept_per_axis():
    affine = np.diag([0.9995, 2.0, 1.5004, 1.0])
    shape, out = spacing_grid((50, 40, 30), affine, (1.0, 1.0, 1.5))

    np.testing.assert_allclose(np.linalg.norm(out[:3, :3], axis=0), (0.9995, 1.0, 1.5004))
    assert shape == (50, 79, 30)
    volume = Volume(np.arange(50 * 40 * 30, dtype=np.int32).reshape(50, 40, 30), affine)
    unchanged = resample_to_spacing(volume, (1.0, 2.0, 1.5), order=0)
    np.testing.assert_allclose(unchanged.affine_ras, affine, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(unchanged.array, volume.array)


def test_bad_arguments_are_refused(phantom):
    with pytest.raises(ValueError, match="spacing"):
        resample_to_spacing(phantom.image, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="order"):
        resample_to_spacing(phantom.image, (2.0, 2.0, 2.0), order=3)
    with pytest.raises(ValueError, match="shape"):
        resample_to_grid(phantom.image, (10, 0, 10), np.eye(4))
    with pytest.raises(ValueError, match="affine"):
        resample_to_grid(phantom.image, (10, 10, 10), np.zeros((4, 4)))
