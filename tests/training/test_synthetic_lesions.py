"""Synthetic renal lesions: shapes keep their volume on the model grid, an insertion labels a lesion grown from inside
a kidney into fat with tumour-like or cyst-like values, never over another organ or unlabelled soft tissue, pushes
the tissue aside where asked, and leaves the rest of the case alone."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tests.conftest import shared_file
from training.data import phantom_case, preprocessing_spec
from training.synthetic_lesions import (
    BANK_SPACING_MM,
    InsertionSpec,
    LesionShape,
    ShapeBank,
    insert_lesion,
    shape_on_grid,
)

STRUCTURES = ["liver", "spleen", "kidney_right", "kidney_left", "aorta", "renal_tumor", "renal_cyst"]
WINDOW = (-125.0, 275.0)
SPEC = InsertionSpec(window_hu=WINDOW, spacing_mm=(3.0, 3.0, 3.0), kidney_labels=(3, 4), tumor_label=6, cyst_label=7)


def _ball(radius_mm: float) -> np.ndarray:
    n = int(np.ceil(radius_mm / BANK_SPACING_MM))
    grid = np.indices((2 * n + 1,) * 3) - n
    return (grid**2).sum(0) * BANK_SPACING_MM**2 <= radius_mm**2


def _bank() -> ShapeBank:
    return ShapeBank([LesionShape("tumor", _ball(20.0), "t"), LesionShape("cyst", _ball(12.0), "c")])


def test_a_shape_keeps_its_volume_on_a_coarser_rotated_grid():
    shape = LesionShape("tumor", _ball(20.0), "t")
    on_grid = shape_on_grid(shape, (3.0, 3.0, 3.0), np.random.default_rng(0))
    assert on_grid.sum() * 27 / 1000 == pytest.approx(shape.volume_ml, rel=0.12)
    bigger = shape_on_grid(shape, (3.0, 3.0, 3.0), np.random.default_rng(0), scale=1.25)
    assert bigger.sum() / on_grid.sum() == pytest.approx(1.25**3, rel=0.15)


def test_the_bank_round_trips(tmp_path):
    bank = _bank()
    bank.save(tmp_path / "bank")
    again = ShapeBank.load(tmp_path / "bank")
    assert [(s.kind, s.case_id) for s in again.shapes] == [(s.kind, s.case_id) for s in bank.shapes]
    assert all(np.array_equal(a.mask, b.mask) for a, b in zip(again.shapes, bank.shapes, strict=True))


@pytest.mark.parametrize("kind", ["tumor", "cyst"])
def test_an_inserted_lesion_sits_on_a_kidney_and_looks_its_kind(kind):
    case = phantom_case(0, seed=1, spec=preprocessing_spec((3.0, 3.0, 3.0), WINDOW), structures=STRUCTURES)
    image, labels = case.image[0], case.labels[0]
    spec = InsertionSpec(**{**SPEC.__dict__, "cyst_probability": 1.0 if kind == "cyst" else 0.0})
    out_image, out_labels, info = insert_lesion(image, labels, _bank(), spec, np.random.default_rng(3))
    assert info["kind"] == kind
    lesion = out_labels == (7 if kind == "cyst" else 6)
    assert lesion.sum() == info["voxels"] > 50
    assert set(np.unique(labels[lesion])) <= {0, info["kidney_label"]}  # kidney and fat only, no other organ
    unchanged = out_labels == labels
    assert np.array_equal(unchanged, ~lesion)
    hu = out_image[lesion] * (WINDOW[1] - WINDOW[0]) + WINDOW[0]
    if kind == "cyst":
        assert -20 < np.median(hu) < 40  # near water
    else:
        assert 25 < np.median(hu) < 150 and hu.std() > 5  # enhancing less than the kidney, heterogeneous
    kidney_hu = image[labels == info["kidney_label"]] * (WINDOW[1] - WINDOW[0]) + WINDOW[0]
    assert np.median(hu) < np.median(kidney_hu) - 20
    near = ndimage.binary_dilation(lesion, structure=np.ones((3, 3, 3)), iterations=2)  # the partial-volume edge
    assert np.array_equal(out_image[~near], image[~near])  # the rest of the case is untouched


def test_a_lesion_grows_from_inside_a_kidney_into_fat_but_never_into_unlabelled_soft_tissue():
    case = phantom_case(0, seed=1, spec=preprocessing_spec((3.0, 3.0, 3.0), WINDOW), structures=STRUCTURES)
    image, labels = case.image[0], case.labels[0]
    kidneys = np.isin(labels, [3, 4])
    spec = InsertionSpec(**{**SPEC.__dict__, "cyst_probability": 0.0})
    soft = image.copy()
    soft[labels == 0] = (50.0 - WINDOW[0]) / (WINDOW[1] - WINDOW[0])  # muscle and bowel everywhere around
    inside_share = []
    for seed in range(8):
        _, out_labels, _ = insert_lesion(soft, labels, _bank(), spec, np.random.default_rng(seed))
        lesion = out_labels == 6
        assert lesion.any() and kidneys[lesion].all()  # no unlabelled soft tissue taken
        out = insert_lesion(image, labels, _bank(), spec, np.random.default_rng(seed))  # the phantom's fat (-60 HU)
        lesion = out[1] == 6
        assert ndimage.label(lesion)[1] == 1  # one piece, grown from the kidney
        inside_share.append(kidneys[lesion].mean())
    assert max(inside_share) > 0.5 and min(inside_share) < 1.0  # mostly endophytic ones and exophytic ones


def test_a_mass_effect_pushes_the_kidney_outward_around_the_lesion_and_nothing_beyond_its_reach():
    case = phantom_case(0, seed=1, spec=preprocessing_spec((3.0, 3.0, 3.0), WINDOW), structures=STRUCTURES)
    image, labels = case.image[0], case.labels[0]
    spread = {}
    for strength in (0.0, 0.4):
        spec = InsertionSpec(**{**SPEC.__dict__, "cyst_probability": 0.0, "mass_effect": (strength, strength)})
        out_image, out_labels, info = insert_lesion(image, labels, _bank(), spec, np.random.default_rng(4))
        lesion = out_labels == 6
        moved = (out_labels != labels) & ~lesion
        assert moved.any() == (strength > 0)  # without a push, only the lesion's own voxels change
        centre = np.argwhere(lesion).mean(axis=0)
        spread[strength] = np.isin(out_labels, [info["kidney_label"], 6]).sum()  # kidney and mass together
        radius_voxels = (info["voxels"] * 3 / (4 * np.pi)) ** (1 / 3)  # 3 mm isotropic
        distance = np.sqrt(((np.indices(lesion.shape) - centre.reshape(3, 1, 1, 1)) ** 2).sum(axis=0))
        far = distance > 2.5 * radius_voxels + 6
        assert np.array_equal(out_labels[far], labels[far]) and np.array_equal(out_image[far], image[far])
    assert spread[0.4] > 1.05 * spread[0.0]  # the kidney bulges over the mass: it and the mass take more room


def test_a_pushed_neighbourhood_keeps_its_noise_and_a_lesion_has_no_holes():
    case = phantom_case(0, seed=1, spec=preprocessing_spec((3.0, 3.0, 3.0), WINDOW), structures=STRUCTURES)
    image, labels = case.image[0], case.labels[0]
    spec = InsertionSpec(**{**SPEC.__dict__, "cyst_probability": 0.0, "mass_effect": (0.4, 0.4)})
    checked = 0
    for seed in range(4):
        out_image, out_labels, info = insert_lesion(image, labels, _bank(), spec, np.random.default_rng(seed))
        lesion = out_labels == 6
        assert np.array_equal(ndimage.binary_fill_holes(lesion), lesion)
        kidney = info["kidney_label"]
        ring = (out_labels == kidney) & ~ndimage.binary_dilation(lesion, iterations=2)
        ring &= ndimage.binary_dilation(lesion, iterations=6)  # the kidney tissue the push moved
        if ring.sum() < 50:
            continue
        detail = out_image - ndimage.uniform_filter(out_image, size=3)
        before = image - ndimage.uniform_filter(image, size=3)
        assert detail[ring].std() > 0.8 * before[labels == kidney].std()  # not smoothed into a calm halo
        checked += 1
    assert checked


def test_the_insertion_refuses_settings_that_fold_tissue_or_are_no_probability():
    with pytest.raises(ValueError, match="mass_effect"):
        InsertionSpec(**{**SPEC.__dict__, "mass_effect": (0.5, 1.2)})
    with pytest.raises(ValueError, match="cyst_probability"):
        InsertionSpec(**{**SPEC.__dict__, "cyst_probability": 1.5})


def test_no_kidney_no_lesion():
    image = np.zeros((20, 20, 20), np.float32)
    labels = np.zeros((20, 20, 20), np.uint8)
    assert insert_lesion(image, labels, _bank(), SPEC, np.random.default_rng(0)) is None


def test_kits_masks_give_tumour_and_cyst_shapes(shared_data):
    from training.prepare_kits_shapes import case_shapes

    found = case_shapes(str(shared_file(shared_data, "kits23/case_00000/segmentation.nii.gz")))
    tumours = [s for s in found if s.kind == "tumor"]
    assert tumours and 5.0 < max(s.volume_ml for s in tumours) < 20.0  # case 0's tumour: about 8.7 mL


def test_the_synthetic_test_set_is_a_datalist_the_evaluator_reads(tmp_path):
    import json

    from training.synthetic_lesion_set import main
    from twin_imaging.datalist import read_datalist
    from twin_imaging.io.nifti import read_nifti, write_nifti
    from twin_imaging.testing import PhantomGeometry, make_phantom

    phantom = make_phantom(PhantomGeometry(shape=(96, 80, 40), spacing_mm=(3.0, 3.0, 4.0)))
    (tmp_path / "src").mkdir()
    write_nifti(phantom.image, tmp_path / "src" / "img.nii.gz")
    names = phantom.labels.label_names
    write_nifti(phantom.labels, tmp_path / "src" / "lab.nii.gz")
    source = {
        "labels": {"0": "background", **{str(v): n for v, n in names.items()}},
        "training": [{"case_id": "p1", "image": "img.nii.gz", "label": "lab.nii.gz", "fold": 1}],
    }
    (tmp_path / "src" / "dataset.json").write_text(json.dumps(source))
    _bank().save(tmp_path / "bank")
    out = tmp_path / "set"
    args = ["--datalist", str(tmp_path / "src" / "dataset.json"), "--bank", str(tmp_path / "bank")]
    assert main([*args, "--out", str(out), "--variants", "2"]) == 0
    datalist = read_datalist(out / "dataset.json")
    cases = list(datalist.cases())
    assert len(cases) == 2 and datalist.label_names[14] == "renal_tumor" and datalist.label_names[15] == "renal_cyst"
    for case in cases:
        labels = read_nifti(case.label)
        assert np.isin(labels.array, [14, 15]).any()
        assert labels.shape == phantom.labels.shape
