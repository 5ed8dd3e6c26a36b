import numpy as np
import pytest

from twin_imaging.volume import LPS_TO_RAS, SeriesInfo, SourceImage, Volume


def oblique_affine() -> np.ndarray:
    angle = np.radians(20)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]) @ np.diag(
        [-1.0, 1.0, 1.0]
    )
    affine = np.eye(4)
    affine[:3, :3] = rotation @ np.diag([0.8, 0.9, 2.5])
    affine[:3, 3] = [10.0, -20.0, 30.0]
    return affine


def test_spacing_and_orientation_come_from_the_affine():
    volume = Volume(np.zeros((4, 5, 6), np.int16), np.diag([-0.5, -0.7, 2.0, 1.0]))
    assert volume.spacing_mm == pytest.approx((0.5, 0.7, 2.0))
    assert volume.orientation == "LPS"
    assert np.allclose(volume.affine_lps, LPS_TO_RAS @ volume.affine_ras)


@pytest.mark.parametrize("target", ["RAS", "LPS", "PIL", "SAR"])
def test_reoriented_keeps_every_voxel_at_its_world_position(target):
    rng = np.random.default_rng(1)
    volume = Volume(rng.integers(-1000, 1000, (5, 6, 7)).astype(np.int16), oblique_affine())
    turned = volume.reoriented(target)
    assert turned.orientation == target
    # Each voxel value must sit at the same world point before and after.
    ijk = np.argwhere(np.ones(volume.shape, bool))
    world = volume.index_to_ras(ijk)
    back = np.rint(np.linalg.solve(turned.affine_ras[:3, :3], (world - turned.affine_ras[:3, 3]).T).T).astype(int)
    assert np.array_equal(turned.array[tuple(back.T)], volume.array[tuple(ijk.T)])


def test_reoriented_drops_slice_sources_only_when_the_slice_axis_changes():
    sources = tuple(SourceImage("1.2", f"1.2.{k}") for k in range(3))
    volume = Volume(np.zeros((2, 2, 3)), np.diag([-1.0, -1.0, 1.0, 1.0]), sources=sources)
    assert volume.reoriented("RAS").sources == sources  # i and j flip, k stays
    assert volume.reoriented("LPI").sources == ()


def test_a_crop_keeps_every_voxel_at_its_world_position_and_its_slices_sources():
    rng = np.random.default_rng(2)
    sources = tuple(SourceImage("1.2", f"1.2.{k}") for k in range(7))
    info = SeriesInfo(modality="CT")
    volume = Volume(rng.integers(-1000, 1000, (5, 6, 7)).astype(np.int16), oblique_affine(), info=info, sources=sources)
    crop = volume.cropped((slice(1, 4), slice(2, None), slice(3, 6)))
    assert crop.shape == (3, 4, 3) and crop.info == info
    assert crop.sources == sources[3:6]
    ijk = np.argwhere(np.ones(crop.shape, bool))
    assert np.allclose(crop.index_to_ras(ijk), volume.index_to_ras(ijk + np.array([1, 2, 3])))
    assert np.array_equal(crop.array, volume.array[1:4, 2:, 3:6])
    with pytest.raises(ValueError, match="step 1"):
        volume.cropped((slice(0, 4, 2), slice(None), slice(None)))


def test_invalid_volumes_are_refused():
    with pytest.raises(ValueError, match="3D"):
        Volume(np.zeros((2, 2)), np.eye(4))
    with pytest.raises(ValueError, match="singular"):
        Volume(np.zeros((2, 2, 2)), np.diag([1.0, 0.0, 1.0, 1.0]))
    with pytest.raises(ValueError, match="source images"):
        Volume(np.zeros((2, 2, 2)), np.eye(4), sources=(SourceImage("1", "2"),))


def test_patient_identifiers_stay_out_of_repr():
    info = SeriesInfo(modality="CT", patient_id="SECRET-ID", patient_name="Doe^Jane", accession_number="ACC9")
    text = repr(Volume(np.zeros((1, 1, 1)), np.eye(4), info=info))
    assert "CT" in text
    assert "SECRET-ID" not in text and "Doe^Jane" not in text and "ACC9" not in text
