"""The browser viewer's copies: under the size bound, on one grid that covers the same patient space, the CT a
block mean, the labels each block's own structure."""

from __future__ import annotations

import numpy as np
import pytest

from twin_imaging.testing import PhantomGeometry, make_phantom
from twin_imaging.viewer_volumes import _block_means, viewer_copies, viewer_factors


def test_factors_keep_square_pixels_and_fit_the_bound():
    assert viewer_factors((512, 512, 300), (0.8, 0.8, 1.5), 8_000_000) == (4, 4, 2)
    assert viewer_factors((160, 160, 64), (2.5, 2.0, 3.0), 8_000_000) == (1, 1, 1)  # small: unchanged
    for shape, spacing in (((512, 512, 800), (0.7, 0.7, 1.0)), ((256, 256, 40), (1.5, 1.5, 5.0))):
        factors = viewer_factors(shape, spacing, 4_000_000)
        assert np.prod([-(-n // f) for n, f in zip(shape, factors, strict=True)]) * 2 <= 4_000_000


def test_copies_share_a_grid_in_the_same_patient_space():
    phantom = make_phantom(PhantomGeometry(shape=(200, 180, 60), spacing_mm=(1.0, 1.0, 2.5)))
    ct, labels = viewer_copies(phantom.image, phantom.labels, max_mb=0.6)
    assert ct.array.dtype == np.int16 and ct.array.nbytes <= 600_000
    assert labels.shape == ct.shape and np.array_equal(labels.affine_ras, ct.affine_ras)
    assert labels.label_names == phantom.labels.label_names
    # the first block's centre, in patient space, is the mean of its source voxels' positions
    factors = np.rint(np.linalg.norm(ct.affine_ras[:3, :3], axis=0) / phantom.image.spacing_mm).astype(int)
    corner = phantom.image.affine_ras @ np.array([*(factors - 1) / 2.0, 1.0])
    assert np.allclose(ct.affine_ras[:3, 3], corner[:3])
    # every structure keeps its volume within the sampling error of the coarser grid
    voxel_ml = abs(np.linalg.det(ct.affine_ras[:3, :3])) / 1000
    source_ml = abs(np.linalg.det(phantom.labels.affine_ras[:3, :3])) / 1000
    for value in (1, 2, 3, 4):
        small = (labels.array == value).sum() * voxel_ml
        assert small == pytest.approx((phantom.labels.array == value).sum() * source_ml, rel=0.1)
    liver = labels.array == 1
    hu = ct.array[liver].astype(float)
    assert abs(np.median(hu) - 60.0) < 10  # the phantom's liver HU survives the block mean


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize(
    ("shape", "factors"), [((10, 7, 5), (3, 2, 2)), ((9, 9, 9), (3, 3, 3)), ((8, 5, 4), (1, 3, 4))]
)
def test_block_means_match_a_plain_mean_of_each_block_including_partial_ones(order, shape, factors):
    array = np.asarray(np.random.default_rng(0).integers(-1000, 1000, shape), dtype=np.int16, order=order)
    got = _block_means(array, factors)
    expected = np.empty(got.shape)
    for index in np.ndindex(got.shape):
        block = tuple(slice(i * f, (i + 1) * f) for i, f in zip(index, factors, strict=True))
        expected[index] = array[block].mean()
    np.testing.assert_allclose(got, expected, atol=1e-3)
