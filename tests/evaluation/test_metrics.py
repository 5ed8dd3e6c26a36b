import dataclasses
import json
import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from scipy import ndimage

from twin_imaging.evaluation.metrics import (
    StructureScore,
    dice_coefficient,
    hausdorff_distance_95_mm,
    normalized_surface_dice,
    score_label_maps,
    score_structure,
    summarize_scores,
    surface_distances_mm,
)

SPACINGS = [(1.0, 1.0, 1.0), (0.8, 0.8, 2.0), (0.7, 1.3, 3.0), (2.0, 0.5, 0.6)]


def ellipsoid(shape, spacing, centre, semi_axes_mm, *, noise=0.0, seed=0) -> np.ndarray:
    """Voxels whose centre lies in an axis-aligned ellipsoid (centre in voxels), its radius roughened by noise."""
    grid = np.indices(shape, dtype=float)
    r = sum(((g - c) * s / a) ** 2 for g, c, s, a in zip(grid, centre, spacing, semi_axes_mm, strict=True))
    if noise:
        field = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 1.5)
        r = r + noise * field / np.abs(field).max()
    return r <= 1.0


def sphere(shape, centre, radius_vox) -> np.ndarray:
    return ellipsoid(shape, (1.0, 1.0, 1.0), centre, (radius_vox,) * 3)


def assert_same_score(a: StructureScore, b: StructureScore) -> None:
    np.testing.assert_equal(dataclasses.astuple(a), dataclasses.astuple(b))


# --- hand-checkable cases ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("spacing", SPACINGS)
def test_identical_masks_score_perfectly(spacing):
    mask = ellipsoid((20, 18, 12), spacing, (10, 9, 6), (6.0, 5.0, 9.0), noise=0.3)
    score = score_structure(mask, mask.copy(), spacing)
    assert (score.dice, score.nsd, score.hd95_mm) == (1.0, 1.0, 0.0)
    assert score.reference_voxels == score.predicted_voxels == np.count_nonzero(mask)
    assert score.reference_present


@pytest.mark.parametrize(("axis", "gap_voxels"), [(0, 8), (1, 3), (2, 5)])
def test_facing_plates_are_their_gap_apart(axis, gap_voxels):
    """Two one-voxel-thick plates facing each other: every surface voxel is gap * spacing from the other plate."""
    spacing = (0.5, 0.7, 2.0)
    shape = (16, 16, 16)
    first, second = np.zeros(shape, bool), np.zeros(shape, bool)
    box = [slice(3, 9)] * 3
    box[axis] = slice(2, 3)
    first[tuple(box)] = True
    box[axis] = slice(2 + gap_voxels, 3 + gap_voxels)
    second[tuple(box)] = True
    expected_mm = gap_voxels * spacing[axis]

    pred_to_ref, ref_to_pred = surface_distances_mm(first, second, spacing)
    assert pred_to_ref.size == ref_to_pred.size == 36
    np.testing.assert_allclose(pred_to_ref, expected_mm)
    np.testing.assert_allclose(ref_to_pred, expected_mm)
    assert hausdorff_distance_95_mm(first, second, spacing) == pytest.approx(expected_mm)
    assert dice_coefficient(first, second) == 0.0
    assert normalized_surface_dice(first, second, spacing, tolerance_mm=expected_mm) == 1.0
    assert normalized_surface_dice(first, second, spacing, tolerance_mm=expected_mm * 0.99) == 0.0


def test_hd95_is_the_larger_directed_percentile():
    """A 3x3x3 cube against a lone voxel at its centre: the cube's 26 surface voxels are 1, sqrt 2 or sqrt 3 away
    (6, 12, 8 of them), the lone voxel 1 away; MONAI takes the 95th percentile per direction, then the larger."""
    cube = np.zeros((7, 7, 7), bool)
    cube[2:5, 2:5, 2:5] = True
    centre = np.zeros_like(cube)
    centre[3, 3, 3] = True
    cube_to_centre = np.sort([1.0] * 6 + [math.sqrt(2)] * 12 + [math.sqrt(3)] * 8)
    expected = max(np.percentile(cube_to_centre, 95), 1.0)
    assert expected == pytest.approx(math.sqrt(3))
    assert hausdorff_distance_95_mm(cube, centre, (1, 1, 1)) == pytest.approx(expected)
    assert hausdorff_distance_95_mm(centre, cube, (1, 1, 1)) == pytest.approx(expected)


def test_sphere_shifted_one_slice_is_within_one_slice_spacing():
    spacing = (3.0, 3.0, 3.0)
    shape = (20, 20, 20)
    reference = sphere(shape, (9.5, 9.5, 9.5), 5.5)
    predicted = np.roll(reference, 1, axis=2)
    assert normalized_surface_dice(predicted, reference, spacing, tolerance_mm=3.0) == 1.0

    # At 3 mm spacing a surface voxel is either on the other surface (0 mm) or at least 3 mm from it, so at 2 mm
    # the NSD is the share of surface voxels the two surfaces have in common.
    pred_surface = predicted & ~ndimage.binary_erosion(predicted)
    ref_surface = reference & ~ndimage.binary_erosion(reference)
    shared = np.count_nonzero(pred_surface & ref_surface)
    expected = 2 * shared / (np.count_nonzero(pred_surface) + np.count_nonzero(ref_surface))
    nsd = normalized_surface_dice(predicted, reference, spacing, tolerance_mm=2.0)
    assert nsd == pytest.approx(expected)
    assert nsd < 1.0


def test_distance_of_exactly_the_tolerance_counts_as_within():
    """3 voxels of 0.8 mm is 2.4000000000000004 in floating point; it must still be within 2.4 mm."""
    reference = sphere((16, 16, 24), (7.5, 7.5, 10), 4.5)
    predicted = np.roll(reference, 3, axis=2)
    assert normalized_surface_dice(predicted, reference, (0.8, 0.8, 0.8), tolerance_mm=2.4) == 1.0
    assert normalized_surface_dice(predicted, reference, (0.8, 0.8, 0.8), tolerance_mm=2.39) < 1.0


def test_both_empty_scores_nan():
    empty = np.zeros((5, 6, 7), bool)
    score = score_structure(empty, empty, (1, 1, 1))
    assert math.isnan(score.dice) and math.isnan(score.nsd) and math.isnan(score.hd95_mm)
    assert (score.reference_voxels, score.predicted_voxels, score.reference_present) == (0, 0, False)
    assert all(d.size == 0 for d in surface_distances_mm(empty, empty, (1, 1, 1)))


@pytest.mark.parametrize("empty_side", ["predicted", "reference"])
def test_one_empty_scores_zero_and_infinite_distance(empty_side):
    mask = sphere((12, 12, 12), (6, 6, 6), 3)
    empty = np.zeros_like(mask)
    predicted, reference = (empty, mask) if empty_side == "predicted" else (mask, empty)
    score = score_structure(predicted, reference, (0.8, 0.8, 2.0))
    assert (score.dice, score.nsd, score.hd95_mm) == (0.0, 0.0, math.inf)
    assert score.reference_present == (empty_side == "predicted")
    assert dice_coefficient(predicted, reference) == 0.0
    assert normalized_surface_dice(predicted, reference, (0.8, 0.8, 2.0)) == 0.0
    assert hausdorff_distance_95_mm(predicted, reference, (0.8, 0.8, 2.0)) == math.inf


def test_bad_inputs_are_refused():
    mask = np.ones((3, 3, 3), bool)
    with pytest.raises(ValueError, match="shape"):
        score_structure(mask, np.ones((3, 3, 4), bool), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing_mm"):
        score_structure(mask, mask, (1, 1))
    with pytest.raises(ValueError, match="spacing_mm"):
        score_structure(mask, mask, (1, 0, 1))
    with pytest.raises(ValueError, match="tolerance_mm"):
        score_structure(mask, mask, (1, 1, 1), tolerance_mm=-1)
    with pytest.raises(ValueError, match="integers"):
        score_label_maps(mask.astype(float), mask.astype(float), (1, 1, 1), label_names={1: "a"})


# --- agreement with MONAI ---------------------------------------------------------------------------------------


def noisy_pair(seed: int, spacing, *, touch_border: bool) -> tuple[np.ndarray, np.ndarray]:
    shape = (34, 30, 22)
    extent_mm = np.multiply(shape, spacing)
    rng = np.random.default_rng(seed)
    centre = np.multiply(shape, (0.1, 0.5, 0.5) if touch_border else (0.5, 0.5, 0.5))
    semi_mm = extent_mm * rng.uniform(0.2, 0.35, size=3)
    reference = ellipsoid(shape, spacing, centre, semi_mm, noise=0.3, seed=seed)
    moved = centre + rng.uniform(-3, 3, size=3)
    predicted = ellipsoid(shape, spacing, moved, semi_mm * rng.uniform(0.75, 1.25, size=3), noise=0.6, seed=seed + 99)
    predicted |= ellipsoid(shape, spacing, rng.uniform(0, shape), semi_mm / 3)  # a false-positive blob
    predicted[tuple(rng.integers(0, shape, size=(3, 3)).T)] = True  # and a few stray voxels
    return predicted, reference


@pytest.mark.parametrize("spacing", SPACINGS)
@pytest.mark.parametrize(("seed", "touch_border"), [(1, False), (2, True)])
def test_agrees_with_monai(spacing, seed, touch_border):
    pytest.importorskip("monai")
    import torch
    from monai.metrics import compute_dice, compute_hausdorff_distance, compute_surface_dice

    predicted, reference = noisy_pair(seed, spacing, touch_border=touch_border)
    y_pred = torch.from_numpy(predicted[None, None].astype(np.float32))
    y = torch.from_numpy(reference[None, None].astype(np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dice = compute_dice(y_pred, y, include_background=True).item()
        nsd = compute_surface_dice(
            y_pred, y, class_thresholds=[2.0], include_background=True, spacing=list(spacing), use_subvoxels=False
        ).item()
        hd95 = compute_hausdorff_distance(
            y_pred, y, include_background=True, percentile=95, spacing=list(spacing)
        ).item()

    score = score_structure(predicted, reference, spacing, tolerance_mm=2.0)
    assert 0.3 < score.nsd < 0.99 and score.hd95_mm > 2.0  # the case is not trivial
    assert score.dice == pytest.approx(dice, rel=1e-4)
    assert score.nsd == pytest.approx(nsd, rel=1e-4)
    assert score.hd95_mm == pytest.approx(hd95, rel=1e-4)


# --- label maps and summaries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_labels", [2, 6])  # few labels: one mask per label; many: one find_objects pass per map
@pytest.mark.parametrize("dtype", [np.uint8, np.int16])
def test_label_maps_score_each_named_label(n_labels, dtype):
    spacing = (0.8, 0.8, 2.0)
    shape = (40, 36, 16)
    reference, predicted = np.zeros(shape, dtype), np.zeros(shape, dtype)
    for label in range(1, 7):
        centre = (6 + 5 * label, 18, 8)
        reference[sphere(shape, centre, 2.5)] = label
        predicted[sphere(shape, (centre[0] + label % 2, *centre[1:]), 2.5)] = label
    predicted[predicted == 3] = 0  # missed
    reference[reference == 4] = 0  # false positive only
    label_names = {label: f"structure_{label}" for label in [3, 4, 1, 2, 5, 6][:n_labels]} | {9: "absent"}

    scores = score_label_maps(predicted, reference, spacing, label_names=label_names, tolerance_mm=1.5)
    assert list(scores) == list(label_names.values())
    for label, name in label_names.items():
        expected = score_structure(predicted == label, reference == label, spacing, tolerance_mm=1.5)
        assert_same_score(scores[name], expected)
    assert scores["structure_3"].hd95_mm == math.inf and scores["structure_3"].reference_present
    assert scores["structure_4"].dice == 0.0 and not scores["structure_4"].reference_present
    assert math.isnan(scores["absent"].dice)


def test_label_maps_can_score_background():
    labels = np.zeros((8, 8, 8), np.int16)
    labels[2:6, 2:6, 2:6] = 1
    scores = score_label_maps(labels, labels, (1, 1, 1), label_names={0: "background", 1: "cube"})
    assert scores["background"].dice == scores["cube"].dice == 1.0
    assert scores["background"].reference_voxels == 8**3 - 4**3


def _score(dice, nsd, hd95, present=True) -> StructureScore:
    return StructureScore(
        dice, nsd, hd95, reference_voxels=int(present) * 10, predicted_voxels=5, reference_present=present
    )


def test_summary_averages_cases_holding_the_structure_and_is_json():
    nan = math.nan
    per_case = [
        {"liver": _score(0.9, 0.8, 4.0), "spleen": _score(0.5, 0.4, math.inf)},
        {"liver": _score(0.7, 0.6, 2.0), "spleen": _score(0.0, 0.0, 30.0, present=False)},
        {"liver": _score(0.0, 0.0, math.inf), "spleen": _score(nan, nan, nan, present=False)},
        {"liver": _score(nan, nan, nan, present=False), "kidney": _score(0.0, 0.0, math.inf, present=False)},
    ]
    summary = summarize_scores(per_case)
    json.dumps(summary, allow_nan=False)
    assert summary["liver"] == {
        "dice": pytest.approx((0.9 + 0.7 + 0.0) / 3),
        "nsd": pytest.approx((0.8 + 0.6 + 0.0) / 3),
        "hd95_mm": pytest.approx(3.0),
        "n_hd95_infinite": 1,
        "n_cases": 3,
    }
    assert summary["spleen"] == {"dice": 0.5, "nsd": 0.4, "hd95_mm": None, "n_hd95_infinite": 1, "n_cases": 1}
    assert summary["kidney"] == {"dice": None, "nsd": None, "hd95_mm": None, "n_hd95_infinite": 0, "n_cases": 0}


def test_summary_of_real_scores_is_json():
    predicted, reference = noisy_pair(3, (0.8, 0.8, 2.0), touch_border=False)
    labels_pred, labels_ref = predicted.astype(np.uint8), reference.astype(np.uint8)
    names = {1: "organ", 2: "never_there"}
    per_case = [score_label_maps(labels_pred, labels_ref, (0.8, 0.8, 2.0), label_names=names) for _ in range(2)]
    summary = summarize_scores(per_case)
    json.dumps(summary, allow_nan=False)
    assert summary["organ"]["n_cases"] == 2 and summary["never_there"]["n_cases"] == 0


# --- cropping ---------------------------------------------------------------------------------------------------


def uncropped_distances(predicted, reference, spacing):
    """Surface distances computed on the whole array, MONAI's way (erosion XOR mask, EDT over the full grid)."""
    pred_surface = predicted ^ ndimage.binary_erosion(predicted)
    ref_surface = reference ^ ndimage.binary_erosion(reference)
    return (
        ndimage.distance_transform_edt(~ref_surface, sampling=spacing)[pred_surface],
        ndimage.distance_transform_edt(~pred_surface, sampling=spacing)[ref_surface],
    )


@pytest.mark.parametrize("placement", ["middle", "corner", "border_slab", "far_apart"])
def test_cropping_does_not_change_distances(placement):
    spacing = (0.7, 1.3, 3.0)
    shape = (30, 28, 20)
    if placement == "middle":
        predicted, reference = noisy_pair(4, spacing, touch_border=False)
        predicted, reference = np.pad(predicted, 4), np.pad(reference, 4)  # room around the union box
    elif placement == "corner":
        reference = sphere(shape, (0, 0, 0), 6)
        predicted = sphere(shape, (1, 2, 0), 5)
    elif placement == "border_slab":  # touches opposite faces of the array on one axis
        reference = np.zeros(shape, bool)
        reference[:, 10:14, 5:9] = True
        predicted = np.roll(reference, 2, axis=1)
    else:
        reference = sphere(shape, (4, 4, 4), 3)
        predicted = sphere(shape, (25, 22, 15), 3)

    expected = uncropped_distances(predicted, reference, spacing)
    got = surface_distances_mm(predicted, reference, spacing)
    for got_one, expected_one in zip(got, expected, strict=True):
        np.testing.assert_allclose(got_one, expected_one, rtol=1e-12)
    score = score_structure(predicted, reference, spacing, tolerance_mm=2.0)
    within = sum(np.count_nonzero(d <= 2.0 + 1e-6) for d in expected) / sum(d.size for d in expected)
    assert score.nsd == pytest.approx(within)
    assert score.hd95_mm == pytest.approx(max(np.percentile(d, 95) for d in expected))


def test_module_does_not_import_torch():
    code = "import sys, twin_imaging.evaluation.metrics; sys.exit('torch' in sys.modules or 'monai' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
