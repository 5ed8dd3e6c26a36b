"""Virtual nephrectomy: analytic shells on synthetic masks, radical never leaves more than partial, real KiTS masks."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from tests.conftest import shared_file
from tests.outcome.test_kidney_features import ELLIPSOID_ML, REAL_CASES, phantom, sphere_ml, voxel_centres
from twin_imaging.errors import InputError
from twin_imaging.io import read_nifti
from twin_imaging.outcome import resection
from twin_imaging.outcome.kidney_features import kidney_features
from twin_imaging.outcome.resection import SCENARIOS, virtual_resection

INSIDE = {"tumor_centre": (145.0, 60.0, 100.0), "tumor_radius": 10.0}  # the 15 mm ball around it stays in the kidney


def test_partial_removes_the_shell_of_the_margin_around_the_tumour():
    volume = phantom(**INSIDE)
    xyz = voxel_centres((1.0, 1.0, 1.0))
    distance = np.sqrt(sum((c - m) ** 2 for c, m in zip(xyz, INSIDE["tumor_centre"], strict=True)))
    assert np.all(volume.array[distance <= 15.5] > 0)  # the shell lies inside the kidney
    result = virtual_resection(volume, scenario="partial_nephrectomy", margin_mm=5.0)
    assert result.removed_parenchyma_ml == pytest.approx(sphere_ml(15) - sphere_ml(10), rel=0.06)
    affected = ELLIPSOID_ML - sphere_ml(10)
    assert result.remaining_affected_ml == pytest.approx(affected - result.removed_parenchyma_ml, rel=0.02)
    assert result.remaining_total_ml == pytest.approx(result.remaining_affected_ml + ELLIPSOID_ML, rel=0.02)
    total = kidney_features(volume).total_parenchyma_ml
    assert total == pytest.approx(affected + ELLIPSOID_ML, rel=0.02)
    assert result.remaining_fraction == pytest.approx(result.remaining_total_ml / total, rel=1e-9)
    assert result.scenario == "partial_nephrectomy" and result.margin_mm == 5.0


def test_a_zero_margin_removes_no_parenchyma_and_a_huge_one_removes_the_kidney():
    volume = phantom(**INSIDE)
    assert virtual_resection(volume, scenario="partial_nephrectomy", margin_mm=0.0).removed_parenchyma_ml == 0.0
    everything = virtual_resection(volume, scenario="partial_nephrectomy", margin_mm=500.0)
    radical = virtual_resection(volume, scenario="radical_nephrectomy")
    assert everything.removed_parenchyma_ml == pytest.approx(radical.removed_parenchyma_ml)


def test_radical_removes_the_whole_affected_kidney_and_nothing_else():
    volume = phantom()
    features = kidney_features(volume)
    result = virtual_resection(volume, scenario="radical_nephrectomy")
    assert result.removed_parenchyma_ml == pytest.approx(features.affected_parenchyma_ml)
    assert result.remaining_affected_ml == 0.0
    assert result.remaining_total_ml == pytest.approx(features.contralateral_parenchyma_ml)
    assert result.remaining_fraction == pytest.approx(
        features.contralateral_parenchyma_ml / features.total_parenchyma_ml
    )
    assert virtual_resection(volume, features, scenario="radical_nephrectomy") == result


def test_radical_never_leaves_more_than_partial_and_a_wider_margin_never_removes_less():
    rng = np.random.default_rng(7)
    for _ in range(6):
        centre = (145.0 + rng.uniform(-25, 25), 60.0 + rng.uniform(-20, 20), 80.0 + rng.uniform(-50, 50))
        volume = phantom(tumor_centre=centre, tumor_radius=float(rng.uniform(4, 20)), contralateral=False)
        radical = virtual_resection(volume, scenario="radical_nephrectomy")
        removed = [
            virtual_resection(volume, scenario="partial_nephrectomy", margin_mm=m).removed_parenchyma_ml
            for m in (0.0, 2.0, 5.0, 10.0)
        ]
        assert removed == sorted(removed)
        assert removed[-1] <= radical.removed_parenchyma_ml
        partial = virtual_resection(volume, scenario="partial_nephrectomy", margin_mm=float(rng.uniform(0, 15)))
        assert radical.remaining_total_ml <= partial.remaining_total_ml
        assert 0.0 <= radical.remaining_fraction <= partial.remaining_fraction <= 1.0


def test_the_distance_transform_and_the_k_d_tree_agree(monkeypatch):
    volume = phantom(tumor_centre=(160.0, 60.0, 80.0), tumor_radius=20.0, spacing=(1.0, 1.0, 2.0))
    by_transform = virtual_resection(volume, scenario="partial_nephrectomy", margin_mm=4.0)
    monkeypatch.setattr(resection, "EDT_MIN_VOXELS", 0)
    monkeypatch.setattr(resection, "EDT_VOXELS_PER_QUERY", 0)
    by_tree = virtual_resection(volume, scenario="partial_nephrectomy", margin_mm=4.0)
    assert by_tree.removed_parenchyma_ml == by_transform.removed_parenchyma_ml > 0


def test_anisotropic_spacing_gives_the_same_resection():
    fine = virtual_resection(phantom(**INSIDE), scenario="partial_nephrectomy", margin_mm=5.0)
    coarse = virtual_resection(phantom(spacing=(0.8, 0.8, 2.5), **INSIDE), scenario="partial_nephrectomy")
    assert coarse.removed_parenchyma_ml == pytest.approx(fine.removed_parenchyma_ml, rel=0.08)
    assert coarse.remaining_total_ml == pytest.approx(fine.remaining_total_ml, rel=0.02)


def test_a_solitary_kidney_keeps_nothing_after_radical():
    volume = phantom(contralateral=False)
    assert virtual_resection(volume, scenario="radical_nephrectomy").remaining_total_ml == 0.0
    partial = virtual_resection(volume, scenario="partial_nephrectomy")
    assert 0.0 < partial.remaining_fraction < 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scenario": "cryoablation"}, "unknown scenario 'cryoablation'"),
        ({"scenario": "partial_nephrectomy", "margin_mm": -1.0}, "margin_mm"),
        ({"scenario": "partial_nephrectomy", "margin_mm": math.nan}, "margin_mm"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        virtual_resection(phantom(), **kwargs)


def test_a_mask_without_tumour_is_refused():
    volume = phantom()
    with pytest.raises(InputError, match="no tumour"):
        virtual_resection(volume.with_array(np.minimum(volume.array, 1)), scenario="partial_nephrectomy")


def test_result_serialises():
    record = virtual_resection(phantom(), scenario="partial_nephrectomy").to_json()
    assert set(record) == {
        "scenario",
        "margin_mm",
        "removed_parenchyma_ml",
        "remaining_affected_ml",
        "remaining_total_ml",
        "remaining_fraction",
    }
    assert SCENARIOS == ("partial_nephrectomy", "radical_nephrectomy")


@pytest.mark.parametrize("case", REAL_CASES)
def test_real_kits_masks_resect_plausibly(shared_data, case):
    labels = read_nifti(shared_file(shared_data, f"kits23/{case}/segmentation.nii.gz"))
    features = kidney_features(labels)
    start = time.perf_counter()
    partial = virtual_resection(labels, features, scenario="partial_nephrectomy", margin_mm=5.0)
    partial_s = time.perf_counter() - start
    radical = virtual_resection(labels, features, scenario="radical_nephrectomy")
    print(f"{case}: partial resection {partial_s:.3f} s, removes {partial.removed_parenchyma_ml:.1f} mL")
    assert 0 < partial.removed_parenchyma_ml < radical.removed_parenchyma_ml
    assert radical.remaining_total_ml == pytest.approx(features.contralateral_parenchyma_ml)
    assert 0.0 <= radical.remaining_fraction < partial.remaining_fraction < 1.0
