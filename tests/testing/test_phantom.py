"""The analytic phantom: anatomy in the right places, exact labels, reproducible noise, any grid orientation."""

import math

import numpy as np
import pytest

from twin_imaging.testing import (
    PHANTOM_LABELS,
    Ellipsoid,
    EllipticCylinder,
    EllipticRing,
    PhantomAnatomy,
    PhantomGeometry,
    Structure,
    iter_phantom_slices,
    make_phantom,
    project_phantom,
)
from twin_imaging.volume import LPS_TO_RAS

ANATOMY = PhantomAnatomy()
SMALL = PhantomGeometry(shape=(64, 48, 24), spacing_mm=(6.0, 6.0, 8.0))
OBLIQUE = (0.8, 0.36, 0.48, -0.6, 0.48, 0.64)  # orthonormal, tilted about all three axes


def centroids_ras(labels) -> dict[str, np.ndarray]:
    out = {}
    for value, name in labels.label_names.items():
        ijk = np.argwhere(labels.array == value)
        assert len(ijk), f"{name} is missing"
        out[name] = labels.index_to_ras(ijk.mean(0))
    return out


@pytest.fixture(scope="module")
def default_phantom():
    return make_phantom()


def test_default_geometry_and_label_table(default_phantom):
    assert default_phantom.image.shape == (256, 256, 80)
    assert default_phantom.image.spacing_mm == pytest.approx((1.5, 1.5, 2.5))
    assert default_phantom.image.orientation == "LPS"
    assert default_phantom.image.array.dtype == np.int16
    assert default_phantom.labels.array.dtype == np.uint8
    assert dict(default_phantom.labels.label_names) == PHANTOM_LABELS
    assert set(np.unique(default_phantom.labels.array)) == {0, *PHANTOM_LABELS}
    assert np.array_equal(default_phantom.image.affine_ras, default_phantom.labels.affine_ras)
    assert default_phantom.image.info.modality == "CT"


def test_organs_sit_where_an_abdomen_has_them_in_world_space(default_phantom):
    c = centroids_ras(default_phantom.labels)  # RAS: +x patient right, +y anterior, +z superior
    assert c["liver"][0] > 20 and c["spleen"][0] < -20
    assert c["kidney_right"][0] > 20 and c["kidney_left"][0] < -20
    assert c["liver"][1] > c["spleen"][1]  # liver anterior, spleen posterior
    assert c["liver"][2] > c["kidney_right"][2] and c["spleen"][2] > c["kidney_left"][2]  # both superior
    assert c["kidney_right"][2] < c["kidney_left"][2]  # the right kidney sits lower
    for kidney in ("kidney_right", "kidney_left"):
        assert c[kidney][1] < c["aorta"][1]  # kidneys posterior of the aorta
    assert c["vertebrae"][1] < c["aorta"][1] and abs(c["vertebrae"][0]) < 3  # spine: posterior midline
    assert c["aorta"][0] < c["vertebrae"][0]  # aorta just left of the spine

    # The body wall: fat outside muscle outside the organs, air outside the body.
    def mean_radius(name):
        value = next(v for v, n in PHANTOM_LABELS.items() if n == name)
        ijk = np.argwhere(default_phantom.labels.array == value)
        return np.linalg.norm(default_phantom.labels.index_to_ras(ijk)[:, :2], axis=1).mean()

    assert mean_radius("subcutaneous_fat") > mean_radius("skeletal_muscle") > mean_radius("liver")
    corner = default_phantom.image.array[:5, :5, :]
    assert abs(np.median(corner) - ANATOMY.air_hu) < 5


@pytest.mark.parametrize("name", ["liver", "spleen", "kidney_right", "kidney_left"])
def test_organ_label_volume_matches_its_analytic_ellipsoid(name):
    shape = ANATOMY.structure(name).shape
    spacing = 1.25
    extent = 2 * np.asarray(shape.semi_axes_mm) + 10.0
    geometry = PhantomGeometry(
        shape=tuple(int(n) for n in np.ceil(extent / spacing)),
        spacing_mm=(spacing,) * 3,
        centre_lps_mm=shape.centre_mm,
    )
    phantom = make_phantom(geometry, noise_hu_sd=0)
    value = ANATOMY.structure(name).label
    volume_mm3 = np.count_nonzero(phantom.labels.array == value) * spacing**3
    assert volume_mm3 == pytest.approx(shape.volume_mm3(), rel=0.01)


@pytest.mark.parametrize("name", ["aorta", "vertebrae", "skeletal_muscle", "subcutaneous_fat"])
def test_cylinder_and_ring_cross_sections_match_their_analytic_area(name):
    geometry = PhantomGeometry(shape=(400, 300, 3), spacing_mm=(0.8, 0.8, 10.0))
    phantom = make_phantom(geometry, noise_hu_sd=0)
    value = ANATOMY.structure(name).label
    for k in range(3):
        area = np.count_nonzero(phantom.labels.array[:, :, k] == value) * 0.8 * 0.8
        assert area == pytest.approx(ANATOMY.structure(name).shape.area_mm2(), rel=0.02)


def test_mean_hu_per_label_is_the_configured_mean_within_noise(default_phantom):
    hu, labels = default_phantom.image.array, default_phantom.labels.array
    for structure in ANATOMY.structures:
        values = hu[labels == structure.label].astype(np.float64)
        assert abs(values.mean() - structure.hu) < 5 * 10.0 / math.sqrt(values.size) + 0.05, structure.name
        assert values.std() == pytest.approx(10.0, rel=0.05), structure.name
    background = hu[(labels == 0) & (hu > -500)].astype(np.float64)  # the cavity, not the air
    assert background.mean() == pytest.approx(ANATOMY.body_hu, abs=0.5)


def test_without_noise_every_voxel_holds_its_structure_mean():
    phantom = make_phantom(SMALL, noise_hu_sd=0)
    for structure in ANATOMY.structures:
        assert np.all(phantom.image.array[phantom.labels.array == structure.label] == structure.hu)


def paint_naively(geometry, anatomy):
    """Every shape evaluated at every voxel centre, no shortcuts: what the labels must be."""
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij"), -1).reshape(-1, 3)
    affine = geometry.affine_lps()
    x, y, z = (ijk @ affine[:3, :3].T + affine[:3, 3] - anatomy.centre_lps_mm).T
    labels = np.zeros(len(ijk), np.uint8)
    body, cavity = anatomy.body.contains(x, y, z), anatomy.cavity.contains(x, y, z)
    for structure in anatomy.structures:
        inside = structure.shape.contains(x, y, z) & body & (cavity if structure.clip_to_cavity else True)
        labels[inside] = structure.label
    return labels.reshape(geometry.shape)


@pytest.mark.parametrize("orientation", ["axial", "sagittal", OBLIQUE], ids=["axial", "sagittal", "oblique"])
def test_labels_are_exactly_voxel_centre_membership(orientation):
    geometry = PhantomGeometry((70, 50, 30), (5.0, 4.5, 7.0), orientation, centre_lps_mm=(10.0, 20.0, -5.0))
    anatomy = PhantomAnatomy(centre_lps_mm=(3.0, -4.0, 5.0)).with_scaled("liver", 1.2)
    labels = make_phantom(geometry, anatomy=anatomy).labels.array
    assert np.array_equal(labels, paint_naively(geometry, anatomy))


def test_same_seed_same_voxels_other_seed_other_noise_same_labels():
    a, b = make_phantom(SMALL, seed=3), make_phantom(SMALL, seed=3)
    c = make_phantom(SMALL, seed=4)
    assert np.array_equal(a.image.array, b.image.array)
    assert not np.array_equal(a.image.array, c.image.array)
    assert np.array_equal(a.labels.array, c.labels.array)
    difference = a.image.array.astype(np.float64) - c.image.array
    assert difference.std() == pytest.approx(10.0 * math.sqrt(2), rel=0.1)  # independent noise
    noise = a.image.array - make_phantom(SMALL, noise_hu_sd=0).image.array.astype(np.float64)
    assert abs(np.corrcoef(noise[:, :, 0].ravel(), noise[:, :, 1].ravel())[0, 1]) < 0.1  # and per slice


def test_slices_from_the_iterator_equal_the_volume():
    phantom = make_phantom(SMALL, seed=7, noise_hu_sd=12.0)
    slices = list(iter_phantom_slices(SMALL, seed=7, noise_hu_sd=12.0))
    assert len(slices) == SMALL.shape[2]
    for k, (hu, labels) in enumerate(slices):
        assert hu.dtype == np.int16 and labels.dtype == np.uint8
        assert np.array_equal(hu, phantom.image.array[:, :, k])
        assert np.array_equal(labels, phantom.labels.array[:, :, k])


def test_a_512_slice_is_generated_on_its_own_and_equals_a_one_slice_grid():
    big = PhantomGeometry(shape=(512, 512, 300), spacing_mm=(0.8, 0.8, 1.0))
    hu, labels = next(iter_phantom_slices(big, seed=5))  # no 512 x 512 x 300 array is made
    centre = big.affine_lps() @ [255.5, 255.5, 0.0, 1.0]
    single = make_phantom(PhantomGeometry((512, 512, 1), big.spacing_mm, centre_lps_mm=tuple(centre[:3])), seed=5)
    assert np.array_equal(labels, single.labels.array[:, :, 0])
    assert np.array_equal(hu, single.image.array[:, :, 0])
    assert {ANATOMY.structure(n).label for n in ("vertebrae", "aorta", "skeletal_muscle")} <= set(np.unique(labels))


CUBE = dict(shape=(90, 90, 90), spacing_mm=(4.0, 4.0, 4.0))  # 360 mm around the body


@pytest.mark.parametrize("orientation", ["coronal", "sagittal"])
def test_coronal_and_sagittal_grids_sample_the_same_voxels_as_axial(orientation):
    axial = make_phantom(PhantomGeometry(**CUBE), noise_hu_sd=0)
    other = make_phantom(PhantomGeometry(**CUBE, orientation=orientation), noise_hu_sd=0)
    assert other.labels.orientation != "LPS"
    back = other.labels.reoriented("LPS")
    assert np.allclose(back.affine_ras, axial.labels.affine_ras)
    assert np.array_equal(back.array, axial.labels.array)


def test_an_oblique_grid_puts_the_organs_in_the_same_world_places():
    axial = make_phantom(PhantomGeometry(**CUBE), noise_hu_sd=0)
    oblique = make_phantom(PhantomGeometry(**CUBE, orientation=OBLIQUE), noise_hu_sd=0)
    assert np.allclose(oblique.geometry.row_cosines, OBLIQUE[:3])
    reference, moved = centroids_ras(axial.labels), centroids_ras(oblique.labels)
    for name in ("liver", "spleen", "kidney_right", "kidney_left"):  # the bounded organs, whole in both cubes
        assert np.linalg.norm(reference[name] - moved[name]) < 2.0, name  # half a voxel
        count = [np.count_nonzero(p.labels.array == ANATOMY.structure(name).label) for p in (axial, oblique)]
        assert count[1] == pytest.approx(count[0], rel=0.05), name


@pytest.mark.parametrize(("orientation", "axcodes"), [("axial", "LPS"), ("coronal", "LIP"), ("sagittal", "PIR")])
def test_named_orientations_follow_dicom_conventions(orientation, axcodes):
    geometry = PhantomGeometry(shape=(10, 12, 14), spacing_mm=(1.5, 2.0, 3.0), orientation=orientation,
                               centre_lps_mm=(5.0, -7.0, 20.0))  # fmt: skip
    affine = geometry.affine_lps()
    assert np.allclose(geometry.normal, np.cross(geometry.row_cosines, geometry.column_cosines))
    assert np.allclose(affine[:3, 0], geometry.row_cosines * 1.5)
    assert np.allclose(affine[:3, 1], geometry.column_cosines * 2.0)
    assert np.allclose(affine[:3, 2], geometry.normal * 3.0)
    assert np.allclose(affine @ [4.5, 5.5, 6.5, 1.0], [5.0, -7.0, 20.0, 1.0])  # the grid centre
    assert np.allclose(geometry.slice_position_lps(3), (affine @ [0, 0, 3, 1.0])[:3])
    assert np.allclose(geometry.affine_ras(), LPS_TO_RAS @ affine)
    assert make_phantom(geometry, noise_hu_sd=0).image.orientation == axcodes


def test_explicit_cosines_are_normalised_and_non_orthogonal_ones_refused():
    geometry = PhantomGeometry(orientation=(2.0, 0.0, 0.0, 0.0, 0.0, -3.0))
    assert np.allclose(geometry.image_orientation_patient, (1, 0, 0, 0, 0, -1))
    with pytest.raises(ValueError, match="not orthogonal"):
        PhantomGeometry(orientation=(1.0, 0.0, 0.0, 0.5, 1.0, 0.0))
    with pytest.raises(ValueError, match="zero-length"):
        PhantomGeometry(orientation=(0.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    with pytest.raises(ValueError, match="orientation must be one of"):
        PhantomGeometry(orientation="transverse")
    with pytest.raises(ValueError, match="spacing_mm"):
        PhantomGeometry(spacing_mm=(1.0, 0.0, 1.0))


def test_with_scaled_shrinks_one_organ_by_the_cube_of_the_factor():
    geometry = PhantomGeometry(shape=(120, 90, 70), spacing_mm=(1.5, 1.5, 2.0), centre_lps_mm=(40.0, 40.0, -30.0))
    before = make_phantom(geometry, noise_hu_sd=0).labels.array
    after = make_phantom(geometry, anatomy=ANATOMY.with_scaled("kidney_left", 0.8), noise_hu_sd=0).labels.array
    kidney = ANATOMY.structure("kidney_left").label
    ratio = np.count_nonzero(after == kidney) / np.count_nonzero(before == kidney)
    assert ratio == pytest.approx(0.8**3, rel=0.03)
    assert np.all(before[after == kidney] == kidney)  # shrunk about its centre
    others = (before != kidney) & (after != kidney)
    assert np.array_equal(before[others], after[others])  # nothing else moved
    with pytest.raises(KeyError, match="no structure named 'kidney_middle'"):
        ANATOMY.with_scaled("kidney_middle", 0.8)


def test_a_tumour_added_later_paints_over_its_organ_and_joins_the_label_table():
    kidney = ANATOMY.structure("kidney_left").shape
    top = (kidney.centre_mm[0], kidney.centre_mm[1], kidney.centre_mm[2] + 30.0)
    tumour = Structure("kidney_tumor", 9, 35.0, Ellipsoid(top, (12.0, 12.0, 12.0)))
    anatomy = ANATOMY.with_structure(tumour)
    assert anatomy.label_names == {**PHANTOM_LABELS, 9: "kidney_tumor"}
    geometry = PhantomGeometry(shape=(60, 60, 60), spacing_mm=(1.0, 1.0, 1.0), centre_lps_mm=top)
    phantom = make_phantom(geometry, anatomy=anatomy, noise_hu_sd=0)
    assert np.count_nonzero(phantom.labels.array == 9) * 1.0 == pytest.approx(tumour.shape.volume_mm3(), rel=0.02)
    assert np.all(phantom.image.array[phantom.labels.array == 9] == 35)


def test_organs_are_clipped_to_the_abdominal_cavity():
    huge = ANATOMY.with_scaled("liver", 3.0)
    geometry = PhantomGeometry(shape=(100, 80, 3), spacing_mm=(4.0, 4.0, 10.0), centre_lps_mm=(0.0, 0.0, 35.0))
    phantom = make_phantom(geometry, anatomy=huge, noise_hu_sd=0)
    liver = phantom.labels.array == ANATOMY.structure("liver").label
    xyz = phantom.labels.affine_lps[:3, :3] @ np.argwhere(liver).T + phantom.labels.affine_lps[:3, 3:]
    assert liver.any() and np.all(ANATOMY.cavity.contains(*xyz))
    muscle = phantom.labels.array == ANATOMY.structure("skeletal_muscle").label
    assert muscle.sum() > 0  # the wall stays


def test_shapes_report_their_analytic_size():
    assert Ellipsoid((0, 0, 0), (1.0, 2.0, 3.0)).volume_mm3() == pytest.approx(8 * math.pi)
    assert EllipticCylinder((0, 0), (2.0, 3.0)).area_mm2() == pytest.approx(6 * math.pi)
    assert EllipticRing((0, 0), (2.0, 3.0), (1.0, 1.0)).area_mm2() == pytest.approx(5 * math.pi)
    assert EllipticCylinder((0, 0), (2.0, 3.0), (-5.0, 5.0)).scaled(0.5).z_range_mm == (-2.5, 2.5)


def test_a_projection_averages_hu_through_the_body_only():
    geometry = PhantomGeometry(shape=(100, 40, 120), spacing_mm=(4.0, 5.0, 3.0), orientation="coronal")
    mean_hu, count = project_phantom(geometry)
    assert np.all(mean_hu[count == 0] == ANATOMY.air_hu)
    inside = count > 0
    assert inside.any() and (~inside).any()
    assert mean_hu[inside].min() > -150 and mean_hu[inside].max() < 400
    # Rays through the spine average more than rays through the flank.
    centre_column = np.argmin(np.abs(np.arange(100) - 49.5))
    assert mean_hu[centre_column, 20] > mean_hu[10, 20]
