"""Kidney features on synthetic masks of known geometry, and on real KiTS23 masks where they are available."""

from __future__ import annotations

import math
import re
import time

import numpy as np
import pytest

from tests.conftest import shared_file
from twin_imaging.errors import InputError
from twin_imaging.io import read_nifti
from twin_imaging.measure import max_diameter_mm
from twin_imaging.outcome.kidney_features import KITS_LABELS, kidney_features, split_kidneys
from twin_imaging.volume import Volume

FIELD_MM = (200.0, 120.0, 160.0)  # x (towards the patient's right), y, z
RIGHT = (145.0, 60.0, 80.0)  # +x is the patient's right in RAS
LEFT = (55.0, 60.0, 80.0)
SEMI_AXES = (25.0, 30.0, 55.0)
REAL_CASES = ("case_00000", "case_00002", "case_00010", "case_00030", "case_00041")


def voxel_centres(spacing: tuple[float, float, float]) -> list[np.ndarray]:
    """Broadcastable x, y, z (mm) of the voxel centres of a grid covering FIELD_MM with ``spacing``."""
    counts = [round(f / s) for f, s in zip(FIELD_MM, spacing, strict=True)]
    return [
        (np.arange(n) * s).reshape([-1 if a == axis else 1 for a in range(3)])
        for axis, (n, s) in enumerate(zip(counts, spacing, strict=True))
    ]


def ellipsoid(xyz: list[np.ndarray], centre, semi_axes) -> np.ndarray:
    return sum(((c - m) / r) ** 2 for c, m, r in zip(xyz, centre, semi_axes, strict=True)) <= 1.0


def ball(xyz: list[np.ndarray], centre, radius: float) -> np.ndarray:
    return ellipsoid(xyz, centre, (radius,) * 3)


def phantom(
    *,
    spacing=(1.0, 1.0, 1.0),
    tumor_centre=(145.0, 60.0, 110.0),
    tumor_radius=12.0,
    contralateral=True,
    notch=False,
    cuboid=False,
) -> Volume:
    """Two ellipsoid kidneys (or cuboids) with a spherical tumour on the right one; an optional medial notch (sinus)."""
    xyz = voxel_centres(spacing)
    shape = np.broadcast_shapes(*(c.shape for c in xyz))
    labels = np.zeros(shape, dtype=np.uint8)
    for centre in (RIGHT, LEFT) if contralateral else (RIGHT,):
        if cuboid:
            kidney = np.ones(shape, dtype=bool)
            for c, m, r in zip(xyz, centre, SEMI_AXES, strict=True):
                kidney = kidney & (np.abs(c - m) <= r)
        else:
            kidney = ellipsoid(xyz, centre, SEMI_AXES)
        labels[kidney] = 1
        if notch:  # a box bitten out of the medial side (towards x = 100)
            medial = np.sign(100.0 - centre[0])
            depth = medial * (xyz[0] - centre[0])
            labels[kidney & (depth >= 8) & (np.abs(xyz[1] - centre[1]) <= 8) & (np.abs(xyz[2] - centre[2]) <= 20)] = 0
    labels[ball(xyz, tumor_centre, tumor_radius)] = 2
    return Volume(array=labels, affine_ras=np.diag([*spacing, 1.0]))


def sphere_ml(radius: float) -> float:
    return 4 / 3 * math.pi * radius**3 / 1000


ELLIPSOID_ML = 4 / 3 * math.pi * math.prod(SEMI_AXES) / 1000


def test_volumes_match_the_analytic_shapes():
    features = kidney_features(phantom())
    assert features.tumor_volume_ml == pytest.approx(sphere_ml(12), rel=0.02)
    assert features.affected_parenchyma_ml == pytest.approx(ELLIPSOID_ML - sphere_ml(12), rel=0.02)
    assert features.contralateral_parenchyma_ml == pytest.approx(ELLIPSOID_ML, rel=0.02)
    assert features.total_parenchyma_ml == pytest.approx(
        features.affected_parenchyma_ml + features.contralateral_parenchyma_ml
    )
    assert features.tumor_to_kidney_ratio == pytest.approx(sphere_ml(12) / ELLIPSOID_ML, rel=0.03)
    assert features.cyst_volume_ml == 0.0
    assert features.tumor_max_diameter_mm == pytest.approx(24.0, abs=0.01)  # voxel centres on the sphere's poles
    assert features.n_tumor_components == 1
    assert features.contralateral_present
    assert features.contralateral_tumor_volume_ml == 0.0


def test_the_side_follows_ras_x_whatever_the_storage_order():
    right = phantom()
    assert kidney_features(right).affected_side == "right"  # larger RAS x: the patient's right
    assert kidney_features(right.reoriented("LPS")).affected_side == "right"
    left = phantom(tumor_centre=(55.0, 60.0, 110.0))
    assert kidney_features(left).affected_side == "left"
    mirrored = Volume(array=right.array, affine_ras=np.diag([-1.0, 1.0, 1.0, 1.0]))
    assert kidney_features(mirrored).affected_side == "left"


def test_reoriented_storage_gives_the_same_features():
    volume = phantom(notch=True)
    plain, flipped = kidney_features(volume), kidney_features(volume.reoriented("LPS"))
    for name, value in plain.to_json().items():
        if isinstance(value, float):
            assert getattr(flipped, name) == pytest.approx(value, abs=0.6, rel=0.02), name
        else:
            assert getattr(flipped, name) == value, name


def test_a_tumour_inside_the_kidney_is_endophytic_and_at_a_known_distance_from_its_centroid():
    features = kidney_features(phantom(notch=True))
    assert features.exophytic_fraction <= 0.01
    assert features.renal_exophytic_points == 3
    assert features.tumor_to_kidney_centroid_mm == pytest.approx(30.0, abs=1.5)
    assert features.hilum_from_concavity
    # the deep part of the notch spans x = 145 - 8 .. 145 - 21 mm, so the hilum lies near (130.5, 60, 80)
    assert features.tumor_to_hilum_mm == pytest.approx(math.hypot(14.5, 30.0), abs=2.5)


def test_a_tumour_half_outside_a_flat_face_is_half_exophytic():
    on_face = kidney_features(phantom(cuboid=True, tumor_centre=(170.5, 60.0, 80.0)))
    assert on_face.exophytic_fraction == pytest.approx(0.5, abs=0.05)
    mostly_out = kidney_features(phantom(cuboid=True, tumor_centre=(176.0, 60.0, 80.0)))
    assert mostly_out.exophytic_fraction > 0.75
    assert mostly_out.renal_exophytic_points == 1
    partly_out = kidney_features(phantom(cuboid=True, tumor_centre=(164.0, 60.0, 80.0)))
    assert 0.05 < partly_out.exophytic_fraction < 0.4
    assert partly_out.renal_exophytic_points == 2


def test_nearness_and_location_points():
    touching = kidney_features(phantom(notch=True, tumor_centre=(135.0, 60.0, 80.0), tumor_radius=6.0))
    assert touching.tumor_to_sinus_mm <= 4.0
    assert touching.renal_nearness_points == 3
    assert touching.renal_location_points == 3  # between the polar lines
    polar = kidney_features(phantom(notch=True, tumor_centre=(150.0, 60.0, 118.0), tumor_radius=8.0))
    assert polar.tumor_to_sinus_mm >= 7.0
    assert polar.renal_nearness_points == 1
    assert polar.renal_location_points == 1  # above the upper polar line (the notch ends at z = 100)
    assert polar.renal_radius_points == 1
    assert polar.renal_score == sum(
        getattr(polar, f"renal_{part}_points") for part in ("radius", "exophytic", "nearness", "location")
    )
    crossing = kidney_features(phantom(notch=True, tumor_centre=(155.0, 60.0, 101.0), tumor_radius=8.0))
    assert crossing.renal_location_points == 2  # across the upper polar line, mostly beyond it


def test_radius_points_follow_the_diameter():
    large = kidney_features(phantom(cuboid=True, tumor_centre=(160.0, 60.0, 80.0), tumor_radius=36.0))
    assert large.tumor_max_diameter_mm >= 70
    assert large.renal_radius_points == 3
    medium = kidney_features(phantom(cuboid=True, tumor_centre=(160.0, 60.0, 80.0), tumor_radius=25.0))
    assert medium.renal_radius_points == 2


def test_anisotropic_spacing_gives_the_same_millimetre_results():
    geometry = {"notch": True, "tumor_centre": (160.0, 60.0, 100.0), "tumor_radius": 12.0}
    fine = kidney_features(phantom(**geometry))
    coarse = kidney_features(phantom(spacing=(0.8, 0.8, 2.5), **geometry))
    for name in ("tumor_volume_ml", "affected_parenchyma_ml", "contralateral_parenchyma_ml"):
        assert getattr(coarse, name) == pytest.approx(getattr(fine, name), rel=0.03), name
    assert coarse.tumor_max_diameter_mm == pytest.approx(fine.tumor_max_diameter_mm, abs=2.5)
    assert coarse.exophytic_fraction == pytest.approx(fine.exophytic_fraction, abs=0.06)
    assert coarse.tumor_to_kidney_centroid_mm == pytest.approx(fine.tumor_to_kidney_centroid_mm, abs=2.0)
    assert coarse.tumor_to_hilum_mm == pytest.approx(fine.tumor_to_hilum_mm, abs=2.5)
    assert coarse.affected_side == fine.affected_side == "right"


def test_a_solitary_kidney_has_no_contralateral_parenchyma():
    features = kidney_features(phantom(contralateral=False))
    assert not features.contralateral_present
    assert features.contralateral_parenchyma_ml == 0.0
    assert features.total_parenchyma_ml == features.affected_parenchyma_ml
    assert features.affected_side == "right"  # right of the grid's centre


def test_kidneys_a_few_millimetres_apart_are_still_told_apart():
    volume = phantom(tumor_centre=(105.0, 60.0, 80.0), tumor_radius=20.0)  # the tumour ends 5 mm from the left kidney
    features = kidney_features(volume)
    assert features.contralateral_present
    assert features.affected_side == "right"
    assert features.contralateral_parenchyma_ml == pytest.approx(ELLIPSOID_ML, rel=0.02)


def test_cysts_and_small_fragments_stay_on_their_side():
    volume = phantom()
    xyz = voxel_centres((1.0, 1.0, 1.0))
    array = volume.array.copy()
    array[ball(xyz, (145.0, 60.0, 50.0), 6.0)] = 3  # a cyst in the affected kidney
    array[ball(xyz, (55.0, 60.0, 50.0), 5.0)] = 3  # one in the contralateral kidney
    array[ball(xyz, (145.0, 60.0, 145.0), 3.0)] = 1  # a detached fragment of the affected kidney
    features = kidney_features(volume.with_array(array))
    assert features.cyst_volume_ml == pytest.approx(sphere_ml(6), rel=0.05)
    fragment_ml = sphere_ml(3)
    baseline = kidney_features(volume)
    assert features.affected_parenchyma_ml == pytest.approx(
        baseline.affected_parenchyma_ml - sphere_ml(6) + fragment_ml, rel=0.01
    )
    assert features.contralateral_parenchyma_ml == pytest.approx(
        baseline.contralateral_parenchyma_ml - sphere_ml(5), rel=0.01
    )


def test_a_structure_of_the_other_side_reaching_into_the_affected_box_stays_on_its_side():
    volume = phantom()
    xyz = voxel_centres((1.0, 1.0, 1.0))
    rod = (xyz[0] >= 60) & (xyz[0] <= 130) & (np.abs(xyz[1] - 32) <= 2) & (np.abs(xyz[2] - 130) <= 2)
    array = volume.array.copy()
    array[rod] = 1  # centred left of the midline (x = 95 < 100), it reaches x = 130, inside the affected kidney's box
    baseline, features = kidney_features(volume), kidney_features(volume.with_array(array))
    assert features.affected_parenchyma_ml == pytest.approx(baseline.affected_parenchyma_ml)
    assert features.contralateral_parenchyma_ml == pytest.approx(
        baseline.contralateral_parenchyma_ml + np.count_nonzero(rod) / 1000
    )


def test_several_tumours_count_and_the_largest_is_described():
    volume = phantom(notch=True)
    xyz = voxel_centres((1.0, 1.0, 1.0))
    array = volume.array.copy()
    array[ball(xyz, (150.0, 60.0, 45.0), 5.0)] = 2  # a second, smaller tumour
    array[55, 60, 80] = 2  # a one-voxel speck in the contralateral kidney
    features = kidney_features(volume.with_array(array))
    assert features.n_tumor_components == 2
    assert features.tumor_volume_ml == pytest.approx(sphere_ml(12) + sphere_ml(5), rel=0.02)
    assert features.tumor_max_diameter_mm == pytest.approx(24.0, abs=0.01)
    assert features.contralateral_tumor_volume_ml == pytest.approx(0.001)


def test_max_diameter_mm_uses_the_affine():
    mask = np.zeros((5, 6, 7), dtype=bool)
    mask[1, 1, 1] = mask[3, 4, 6] = True
    assert max_diameter_mm(mask, np.diag([2.0, 1.0, 0.5, 1.0])) == pytest.approx(math.sqrt(16 + 9 + 6.25))
    assert max_diameter_mm(np.zeros((3, 3, 3), dtype=bool), np.eye(4)) == 0.0


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros((20, 20, 20), dtype=np.uint8), "no kidney"),
        (np.pad(np.full((4, 4, 4), 2, dtype=np.uint8), 8), "no kidney (label 1)"),
        (np.pad(np.full((4, 4, 4), 1, dtype=np.uint8), 8), "no tumour (label 2) in the mask"),
        (np.pad(np.array([[[1, 2, 5, 7]]], dtype=np.uint8), 8), "unexpected label values [5, 7]"),
        (np.pad(np.array([[[1, 2, 0.5]]]), 8), "whole numbers"),
        (np.pad(np.array([[[1, 2, -1]]], dtype=np.int8), 8), "non-negative"),
        (np.zeros((20, 20, 20), dtype=np.complex64), "integer dtype"),
    ],
)
def test_bad_label_maps_are_refused_with_a_clear_message(array, message):
    with pytest.raises(InputError, match=re.escape(message)):
        kidney_features(Volume(array=array, affine_ras=np.eye(4)))


def test_labels_map_renames_values_and_must_name_kidney_and_tumour():
    volume = phantom()
    swapped = np.where(volume.array == 1, 7, volume.array).astype(np.uint8)
    renamed = kidney_features(volume.with_array(swapped), labels_map={"kidney": 7, "tumor": 2})
    assert renamed.affected_parenchyma_ml == pytest.approx(kidney_features(volume).affected_parenchyma_ml)
    with pytest.raises(InputError, match="unexpected label values \\[7\\]"):
        kidney_features(volume.with_array(swapped))
    with pytest.raises(InputError, match="'tumor'"):
        split_kidneys(volume, labels_map={"kidney": 1})


def test_features_serialise_to_json_types():
    record = kidney_features(phantom()).to_json()
    assert set(record) >= {"affected_side", "renal_score", "exophytic_fraction", "contralateral_present"}
    assert all(isinstance(v, (str, int, float, bool)) for v in record.values())
    assert KITS_LABELS == {"kidney": 1, "tumor": 2, "cyst": 3}


@pytest.mark.parametrize("case", REAL_CASES)
def test_real_kits_masks_give_plausible_features(shared_data, case):
    path = shared_file(shared_data, f"kits23/{case}/segmentation.nii.gz")
    start = time.perf_counter()
    labels = read_nifti(path)
    read_s = time.perf_counter() - start
    start = time.perf_counter()
    features = kidney_features(labels)
    features_s = time.perf_counter() - start
    print(f"{case}: read {read_s:.3f} s, features {features_s:.3f} s")
    assert features.affected_side in ("left", "right")
    assert 50 <= features.affected_parenchyma_ml <= 400
    if features.contralateral_present:
        assert 50 <= features.contralateral_parenchyma_ml <= 400
    assert features.tumor_volume_ml > 0
    assert 0 <= features.exophytic_fraction <= 1
    assert 4 <= features.renal_score <= 12
    for value in features.to_json().values():
        if isinstance(value, float):
            assert math.isfinite(value)
