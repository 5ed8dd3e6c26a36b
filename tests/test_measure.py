import json
import math

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from tests.conftest import shared_file
from twin_imaging.io.nifti import read_nifti
from twin_imaging.measure import measure_structures
from twin_imaging.testing import PHANTOM_LABELS, PhantomGeometry, make_phantom
from twin_imaging.volume import LPS_TO_RAS, Volume

ELLIPSOIDS = ("liver", "spleen", "kidney_right", "kidney_left")
# A fine grid around the abdomen: every ellipsoid organ lies inside it.
FINE = PhantomGeometry(shape=(220, 160, 130), spacing_mm=(1.5, 1.5, 1.5))


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(FINE, noise_hu_sd=10.0)


@pytest.fixture(scope="module")
def phantom_measurements(phantom):
    return {m.name: m for m in measure_structures(phantom.labels, phantom.image)}


def centre_ras(anatomy, name: str) -> np.ndarray:
    centre_lps = np.asarray(anatomy.structure(name).shape.centre_mm) + anatomy.centre_lps_mm
    return (LPS_TO_RAS[:3, :3] @ centre_lps)[:3]


# --- the phantom ----------------------------------------------------------------------------------------------------


def test_every_phantom_organ_is_measured_in_label_order(phantom, phantom_measurements):
    assert [m.label for m in phantom_measurements.values()] == sorted(PHANTOM_LABELS)
    assert list(phantom_measurements) == [PHANTOM_LABELS[label] for label in sorted(PHANTOM_LABELS)]
    voxel_ml = math.prod(FINE.spacing_mm) / 1000.0
    for m in phantom_measurements.values():
        count = int(np.count_nonzero(phantom.labels.array == m.label))
        assert m.voxel_count == count
        assert m.volume_ml == pytest.approx(count * voxel_ml, rel=1e-12)


@pytest.mark.parametrize("name", ELLIPSOIDS)
def test_ellipsoid_organs_match_their_analytic_shape(phantom, phantom_measurements, name):
    m = phantom_measurements[name]
    shape = phantom.anatomy.structure(name).shape
    assert m.volume_ml * 1000.0 == pytest.approx(shape.volume_mm3(), rel=0.03)
    assert np.allclose(m.centroid_ras_mm, centre_ras(phantom.anatomy, name), atol=0.5)
    assert abs(m.greatest_extent_mm - 2 * max(shape.semi_axes_mm)) <= 2 * max(FINE.spacing_mm)
    # the box around the voxel centres sits inside the analytic one, less than a voxel from it
    centre, semi = centre_ras(phantom.anatomy, name), np.asarray(shape.semi_axes_mm)
    assert np.all(np.asarray(m.bbox_min_ras_mm) >= centre - semi - 1e-6)
    assert np.all(np.asarray(m.bbox_min_ras_mm) <= centre - semi + 1.5)
    assert np.all(np.asarray(m.bbox_max_ras_mm) <= centre + semi + 1e-6)
    assert np.all(np.asarray(m.bbox_max_ras_mm) >= centre + semi - 1.5)


def test_intensities_match_the_configured_means_within_noise(phantom, phantom_measurements):
    for structure in phantom.anatomy.structures:
        m = phantom_measurements[structure.name]
        assert m.hu_mean == pytest.approx(structure.hu, abs=0.5)
        assert m.hu_std == pytest.approx(10.0, abs=0.5)
        assert list(m.hu_percentiles) == [5, 25, 50, 75, 95]
        assert m.hu_percentiles[50] == pytest.approx(structure.hu, abs=1.0)
        assert m.hu_percentiles[5] == pytest.approx(structure.hu - 16.45, abs=1.5)


def test_bounding_box_in_voxels_is_inclusive(phantom, phantom_measurements):
    m = phantom_measurements["spleen"]
    where = np.argwhere(phantom.labels.array == m.label)
    assert m.bbox_min_ijk == tuple(where.min(axis=0))
    assert m.bbox_max_ijk == tuple(where.max(axis=0))


def _ellipsoid_measurements(geometry: PhantomGeometry):
    p = make_phantom(geometry, noise_hu_sd=0.0)
    return p, {m.name: m for m in measure_structures(p.labels, p.image) if m.name in ELLIPSOIDS}


def test_measurements_do_not_depend_on_how_the_grid_is_oriented():
    spacing = (2.0, 2.0, 2.0)
    axial, reference = _ellipsoid_measurements(PhantomGeometry(shape=(150, 110, 95), spacing_mm=spacing))
    turned = axial.labels.reoriented("RAS")
    assert turned.orientation == "RAS" and axial.labels.orientation == "LPS"
    ras = {m.name: m for m in measure_structures(turned, axial.image.reoriented("RAS")) if m.name in ELLIPSOIDS}
    # oblique: rows 20° off x and tilted 15° out of the axial plane, centred on the abdomen
    a, b = math.radians(20), math.radians(15)
    row = (math.cos(a), math.sin(a), 0.0)
    col = (-math.sin(a) * math.cos(b), math.cos(a) * math.cos(b), math.sin(b))
    _, oblique = _ellipsoid_measurements(
        PhantomGeometry(shape=(165, 150, 120), spacing_mm=spacing, orientation=row + col)
    )
    for name, m in reference.items():
        assert ras[name].voxel_count == m.voxel_count
        assert np.allclose(ras[name].centroid_ras_mm, m.centroid_ras_mm, atol=1e-6)
        assert ras[name].greatest_extent_mm == pytest.approx(m.greatest_extent_mm, abs=1e-6)
        assert ras[name].hu_mean == m.hu_mean
        assert oblique[name].volume_ml == pytest.approx(m.volume_ml, rel=0.02)
        assert np.allclose(oblique[name].centroid_ras_mm, m.centroid_ras_mm, atol=2.0)
        # sampled at voxel centres, a pointed end (the kidneys' poles) can lose up to about a voxel on either grid
        assert oblique[name].greatest_extent_mm == pytest.approx(m.greatest_extent_mm, abs=2 * spacing[0])
        assert np.allclose(m.centroid_ras_mm, centre_ras(axial.anatomy, name), atol=1.0)


def test_diameter_is_exact_on_an_oblique_grid():
    rng = np.random.default_rng(7)
    angle = math.radians(30)
    affine = np.eye(4)
    affine[:3, :3] = np.array(
        [[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]]
    )
    affine[:3, :3] = affine[:3, :3] @ np.diag([0.7, 1.3, 2.5])
    affine[:3, 3] = [-40.0, 12.0, 7.0]
    array = np.zeros((30, 25, 12), np.uint8)
    array[3:20, 4:22, 2:10][rng.random((17, 18, 8)) < 0.15] = 1
    array[22:29, 1:5, 0:3] = 2  # a box: its diagonal
    [blob, box] = measure_structures(Volume(array, affine))
    for m in (blob, box):
        points = Volume(array, affine).index_to_ras(np.argwhere(array == m.label))
        assert m.greatest_extent_mm == pytest.approx(pdist(points).max(), abs=1e-9)
        assert np.allclose(m.centroid_ras_mm, points.mean(axis=0))
        assert np.allclose(m.bbox_min_ras_mm, points.min(axis=0)) and np.allclose(m.bbox_max_ras_mm, points.max(axis=0))
    assert (blob.name, box.name) == ("label_1", "label_2")


# --- agreement with TotalSegmentator ---------------------------------------------------------------------------------


def test_agrees_with_totalsegmentator_statistics(shared_data):
    folder = shared_file(shared_data, "totalsegmentator/example_seg_fast")
    statistics = json.loads(shared_file(shared_data, "totalsegmentator/example_seg_fast/statistics.json").read_text())
    # TotalSegmentator measured example_ct_sm.nii.gz itself: its intensities reproduce to the 5 decimals of
    # statistics.json. (example_ct_sm is voxel for voxel example_ct.nii.gz's slices 82-111, so those give the same.)
    # "volume" is the voxel count x 27 mm³, "intensity" the mean over the mask; absent structures have 0 for both.
    image = read_nifti(shared_file(shared_data, "totalsegmentator/example_ct_sm.nii.gz"))
    names = dict(enumerate(statistics, start=1))
    labels = np.zeros(image.shape, np.uint8)
    for label, name in names.items():
        mask = read_nifti(folder / f"{name}.nii.gz").array > 0
        assert not np.any(labels[mask]), f"{name} overlaps another mask"
        labels[mask] = label
    measured = {m.name: m for m in measure_structures(image.with_array(labels, label_names=names), image)}
    present = {name for name, s in statistics.items() if s["volume"] > 0}
    assert set(measured) == present and len(present) >= 30
    for name in present:
        assert measured[name].volume_ml * 1000.0 == pytest.approx(statistics[name]["volume"], rel=0.005), name
        assert measured[name].hu_mean == pytest.approx(statistics[name]["intensity"], abs=1.0), name


# --- bad input ------------------------------------------------------------------------------------------------------


def _small_labels() -> Volume:
    array = np.zeros((6, 5, 4), np.uint8)
    array[1:3, 1:3, 1:3] = 1
    return Volume(array, np.diag([0.8, 0.8, 2.0, 1.0]), label_names={1: "liver"})


def test_image_on_another_grid_is_refused():
    labels = _small_labels()
    with pytest.raises(ValueError, match=r"shape \(6, 5, 3\) differs"):
        measure_structures(labels, Volume(np.zeros((6, 5, 3), np.int16), labels.affine_ras))
    shifted = labels.affine_ras.copy()
    shifted[0, 3] += 0.01
    with pytest.raises(ValueError, match=r"different grids.*0\.01 mm"):
        measure_structures(labels, Volume(np.zeros(labels.shape, np.int16), shifted))
    nudged = labels.affine_ras.copy()
    nudged[0, 3] += 1e-4  # within tolerance
    assert measure_structures(labels, Volume(np.ones(labels.shape, np.int16), nudged))[0].hu_mean == 1.0


def test_non_integer_label_maps_are_refused():
    labels = _small_labels()
    image_like = labels.with_array(labels.array * 0.5)
    with pytest.raises(ValueError, match=r"whole numbers, found 0\.5"):
        measure_structures(image_like)
    with pytest.raises(ValueError, match="integer dtype"):
        measure_structures(labels.with_array(labels.array.astype(np.complex64)))
    with pytest.raises(ValueError, match="non-negative, found -1"):
        measure_structures(labels.with_array(labels.array.astype(np.int16) * -1))
    whole_floats = measure_structures(labels.with_array(labels.array.astype(np.float32)))
    assert [m.voxel_count for m in whole_floats] == [8]
    with pytest.raises(ValueError, match="percentiles"):
        measure_structures(labels, percentiles=(50, 101))


# --- small structures, names, options -------------------------------------------------------------------------------


def test_single_voxel_and_two_voxel_structures():
    affine = np.diag([0.7, 0.9, 2.5, 1.0])
    affine[:3, 3] = [10.0, 20.0, 30.0]
    array = np.zeros((5, 5, 5), np.uint8)
    array[2, 3, 1] = 4
    array[0, 0, 0] = array[0, 1, 0] = 9
    image = Volume(np.arange(125, dtype=np.int16).reshape(5, 5, 5), affine)
    single, pair = measure_structures(Volume(array, affine), image)
    assert (single.label, single.name, single.voxel_count) == (4, "label_4", 1)
    assert single.greatest_extent_mm == 0.0
    assert single.volume_ml == pytest.approx(0.7 * 0.9 * 2.5 / 1000)
    assert single.centroid_ras_mm == pytest.approx((11.4, 22.7, 32.5))
    assert single.bbox_min_ras_mm == single.bbox_max_ras_mm == single.centroid_ras_mm
    assert single.bbox_min_ijk == single.bbox_max_ijk == (2, 3, 1)
    assert single.hu_mean == image.array[2, 3, 1] and single.hu_std == 0.0
    assert set(single.hu_percentiles.values()) == {float(image.array[2, 3, 1])}
    assert pair.greatest_extent_mm == pytest.approx(0.9)
    assert pair.centroid_ras_mm == pytest.approx((10.0, 20.45, 30.0))
    assert pair.bbox_min_ijk == (0, 0, 0) and pair.bbox_max_ijk == (0, 1, 0)


def test_names_come_from_the_argument_then_the_volume():
    labels = _small_labels()
    assert [m.name for m in measure_structures(labels)] == ["liver"]
    assert [m.name for m in measure_structures(labels, label_names={1: "spleen"})] == ["spleen"]
    assert [m.name for m in measure_structures(labels.with_array(labels.array))] == ["label_1"]
    assert measure_structures(labels.with_array(np.zeros(labels.shape, np.uint8))) == []


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_intensity_statistics_match_numpy(dtype):
    rng = np.random.default_rng(3)
    labels = Volume(rng.integers(0, 3, (20, 20, 10)).astype(np.uint8), np.eye(4))
    image = labels.with_array(rng.normal(40, 300, labels.shape).astype(dtype))
    for m in measure_structures(labels, image, percentiles=(0, 2.5, 50, 99, 100)):
        values = image.array[labels.array == m.label].astype(np.float64)
        assert m.hu_mean == pytest.approx(values.mean(), abs=1e-9)
        assert m.hu_std == pytest.approx(values.std(), rel=1e-9)
        assert list(m.hu_percentiles) == [0, 2.5, 50, 99, 100]
        expected = np.percentile(values, [0, 2.5, 50, 99, 100])
        assert list(m.hu_percentiles.values()) == pytest.approx(list(expected), abs=1e-9)


def test_measurements_without_an_image_have_no_intensities_and_serialise_to_json():
    [m] = measure_structures(_small_labels())
    assert m.hu_mean is None and m.hu_std is None and m.hu_percentiles == {}
    [with_image] = measure_structures(_small_labels(), _small_labels().with_array(np.ones((6, 5, 4), np.int16)))
    payload = json.loads(json.dumps(with_image.to_json()))
    assert payload["name"] == "liver" and payload["voxel_count"] == 8
    assert payload["hu_percentiles"] == {"5": 1.0, "25": 1.0, "50": 1.0, "75": 1.0, "95": 1.0}
    assert payload["centroid_ras_mm"] == list(with_image.centroid_ras_mm)
