"""The training data path: label mapping, deterministic preprocessing shared with serving, balanced patches."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("monai")

from training.data import PatchDataset, case_weights, phantom_case, prepare_case, preprocessing_spec
from twin_imaging.datalist import label_lookup
from twin_imaging.testing import PHANTOM_LABELS, PhantomGeometry, make_phantom
from twin_imaging.transforms import preprocess_image

STRUCTURES = ["liver", "spleen", "kidney_right", "kidney_left", "aorta"]
RENAL_STRUCTURES = [*STRUCTURES, "renal_tumor", "renal_cyst"]  # tumour 6, cyst 7
SPEC = preprocessing_spec((4.0, 4.0, 4.0), (-200.0, 300.0))


def test_a_prepared_case_is_exactly_what_serving_preprocessing_gives():
    phantom = make_phantom(PhantomGeometry(shape=(96, 80, 30), spacing_mm=(2.0, 2.0, 5.0)), seed=1)
    lookup = label_lookup(PHANTOM_LABELS, STRUCTURES)
    case = prepare_case("p", phantom.image, phantom.labels, lookup, SPEC, "phantom")
    served = preprocess_image(phantom.image, SPEC)
    assert np.array_equal(case.image, served.array)
    assert case.labels.shape == case.image.shape and case.labels.dtype == np.uint8
    # mapped by name: vertebrae, muscle and fat are not model structures and become background
    assert set(np.unique(case.labels)) <= set(range(len(STRUCTURES) + 1))
    assert {1, 2, 3, 4, 5} <= set(np.unique(case.labels))


def test_labels_on_another_grid_are_resampled_onto_the_image():
    phantom = make_phantom(PhantomGeometry(shape=(96, 80, 30), spacing_mm=(2.0, 2.0, 5.0)), seed=1)
    coarse = make_phantom(PhantomGeometry(shape=(48, 40, 15), spacing_mm=(4.0, 4.0, 10.0)), seed=1)
    lookup = label_lookup(PHANTOM_LABELS, STRUCTURES)
    on_grid = prepare_case("a", phantom.image, phantom.labels, lookup, SPEC, "phantom")
    off_grid = prepare_case("b", phantom.image, coarse.labels, lookup, SPEC, "phantom")
    liver_a, liver_b = on_grid.labels == 1, off_grid.labels == 1
    dice = 2 * (liver_a & liver_b).sum() / (liver_a.sum() + liver_b.sum())
    assert dice > 0.9


def test_phantom_cases_vary_but_are_reproducible():
    a = phantom_case(0, seed=5, spec=SPEC, structures=STRUCTURES)
    b = phantom_case(0, seed=5, spec=SPEC, structures=STRUCTURES)
    c = phantom_case(1, seed=5, spec=SPEC, structures=STRUCTURES)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert a.image.shape != c.image.shape or not np.array_equal(a.labels, c.labels)


def test_phantoms_can_grow_renal_tumours_and_cysts_at_the_kidneys():
    renal = RENAL_STRUCTURES
    tumour, cyst = renal.index("renal_tumor") + 1, renal.index("renal_cyst") + 1
    kidneys = {renal.index("kidney_right") + 1, renal.index("kidney_left") + 1}
    cases = [phantom_case(i, seed=3, spec=SPEC, structures=renal, renal_masses=True) for i in range(12)]
    with_tumour = [c for c in cases if (c.labels == tumour).any()]
    with_cyst = [c for c in cases if (c.labels == cyst).any()]
    assert 2 <= len(with_tumour) <= 10 and 1 <= len(with_cyst) <= 9
    for case, value in [(c, tumour) for c in with_tumour] + [(c, cyst) for c in with_cyst]:
        mass = case.labels[0] == value
        # on a kidney: the mass touches kidney voxels (it is painted over part of one)
        near = np.zeros_like(mass)
        for axis in range(3):
            near |= np.roll(mass, 1, axis) | np.roll(mass, -1, axis)
        assert np.isin(case.labels[0][near & ~mass], list(kidneys)).any()


def test_phantom_renal_masses_never_take_another_organs_voxels():
    renal = RENAL_STRUCTURES
    masses, kidneys = [renal.index("renal_tumor") + 1, renal.index("renal_cyst") + 1], [3, 4]
    taken, drawn = [], 0
    # (seed, index) pairs whose first mass, drawn without the check, lay partly over the liver; and a few others
    for seed, index in [(3, 27), (4, 34), (3, 0), (3, 1), (3, 2), (3, 3), (4, 5), (4, 6)]:
        case = phantom_case(index, seed=seed, spec=SPEC, structures=renal, renal_masses=True)
        plain = phantom_case(index, seed=seed, spec=SPEC, structures=renal)  # the same abdomen without masses
        under = plain.labels[np.isin(case.labels, masses)]
        drawn += under.size > 0
        taken += [int(v) for v in np.unique(under) if v not in (0, *kidneys)]
    assert drawn >= 3
    assert not taken  # liver 1, spleen 2, aorta 5: a mass over them would teach that organ as a mass


def test_phantom_renal_masses_are_optional_and_need_their_structures():
    renal = RENAL_STRUCTURES
    tumour, cyst = renal.index("renal_tumor") + 1, renal.index("renal_cyst") + 1
    cases = [phantom_case(i, seed=3, spec=SPEC, structures=renal, renal_masses=True) for i in range(12)]
    # without renal_masses, or where they were not drawn, the phantom is the one it always was
    assert not np.isin(phantom_case(0, seed=3, spec=SPEC, structures=renal).labels, [tumour, cyst]).any()
    with pytest.raises(ValueError, match="renal_tumor and renal_cyst"):
        phantom_case(0, seed=3, spec=SPEC, structures=STRUCTURES, renal_masses=True)
    index = next(i for i, c in enumerate(cases) if not np.isin(c.labels, [tumour, cyst]).any())
    assert np.array_equal(cases[index].image, phantom_case(index, seed=3, spec=SPEC, structures=STRUCTURES).image)


def test_patches_have_the_patch_size_and_every_class_is_sampled():
    cases = [phantom_case(i, seed=0, spec=SPEC, structures=STRUCTURES) for i in range(2)]
    dataset = PatchDataset(
        cases,
        patch_size=(32, 32, 16),
        structures=STRUCTURES,
        window_hu=(-200.0, 300.0),
        samples_per_epoch=60,
        augment=True,
    )
    dataset.transform.set_random_state(seed=0)
    centre_classes = []
    for index in range(len(dataset)):
        sample = dataset[index]
        assert sample["image"].shape == (1, 32, 32, 16) and sample["label"].shape == (1, 32, 32, 16)
        centre_classes.append(int(sample["label"][0, 16, 16, 8]))
    counts = np.bincount(centre_classes, minlength=6)
    # class-balanced crops: every structure, the small aorta included, is at the centre of some patches
    assert (counts[1:] > 0).all(), counts


def test_case_weights_give_phantoms_their_share():
    cases = [phantom_case(0, seed=0, spec=SPEC, structures=STRUCTURES)] * 3
    real = [type(cases[0])("r", cases[0].image, cases[0].labels, "real data")]
    weights = case_weights(cases + real, 0.3)
    assert np.isclose(weights[:3].sum(), 0.3) and np.isclose(weights[3], 0.7)
    assert np.allclose(case_weights(cases + real, None), 0.25)


def test_lesion_variants_are_added_beside_the_originals(tmp_path):
    from tests.training.test_synthetic_lesions import _bank
    from training.data import SegmentationDataModule

    _bank().save(tmp_path / "bank")
    structures = RENAL_STRUCTURES
    data = SegmentationDataModule(
        phantom_train_cases=2,
        phantom_val_cases=1,
        lesion_bank=str(tmp_path / "bank"),
        lesion_variants=2,
        lesion_val_variants=1,
        structures=structures,
        spacing_mm=(3.0, 3.0, 3.0),
        window_hu=(-125.0, 275.0),
    )
    data.setup("fit")
    synthetic = [c for c in data.train_cases if "+synthetic_" in c.source]
    assert len(data.train_cases) == 2 + 4 and len(synthetic) == 4
    assert all(np.isin(c.labels, [6, 7]).any() for c in synthetic)
    assert not any(np.isin(c.labels, [6, 7]).any() for c in data.train_cases if c not in synthetic)
    assert len(data.val_cases) == 2
    with pytest.raises(ValueError, match="renal_cyst"):
        SegmentationDataModule(
            phantom_train_cases=1,
            lesion_bank=str(tmp_path / "bank"),
            lesion_variants=1,
            structures=structures[:-1],
        ).setup("fit")


def test_class_weights_centre_more_patches_on_a_rare_class():
    case = phantom_case(0, seed=2, spec=SPEC, structures=STRUCTURES)

    def spleen_centred(weights) -> float:
        dataset = PatchDataset(
            [case],
            patch_size=(16, 16, 16),
            structures=STRUCTURES,
            window_hu=(-200.0, 300.0),
            samples_per_epoch=120,
            augment=False,
            class_weights=weights,
        )
        dataset.transform.set_random_state(seed=0)
        spleen = STRUCTURES.index("spleen") + 1
        return float(np.mean([(dataset[i]["label"][0, 8, 8, 8] == spleen).item() for i in range(120)]))

    assert spleen_centred({"spleen": 8.0}) > 2 * spleen_centred(None)


def _fresh_lesion_data(tmp_path, **overrides):
    """A phantom data module of a renal-mass model (48 x 48 x 32 patches, no augmentation), with a small shape bank
    saved under ``tmp_path`` unless ``lesion_bank`` is overridden."""
    from tests.training.test_synthetic_lesions import _bank
    from training.data import SegmentationDataModule

    if "lesion_bank" not in overrides:
        _bank().save(tmp_path / "bank")
        overrides["lesion_bank"] = str(tmp_path / "bank")
    settings = dict(
        phantom_train_cases=2,
        structures=RENAL_STRUCTURES,
        spacing_mm=(3.0, 3.0, 3.0),
        window_hu=(-125.0, 275.0),
        patch_size=(48, 48, 32),
        augment=False,
    )
    return SegmentationDataModule(**{**settings, **overrides})


def test_fresh_lesions_put_a_new_lesion_in_every_chosen_patch(tmp_path):
    data = _fresh_lesion_data(tmp_path, fresh_lesion_fraction=1.0, samples_per_epoch=6)
    data.setup("fit")
    assert not any(np.isin(c.labels, [6, 7]).any() for c in data.train_cases)  # the cases themselves stay clean
    dataset = data.train_dataloader().dataset
    patches = [dataset[i] for i in range(6)]
    assert all(p["image"].shape == (1, 48, 48, 32) == p["label"].shape for p in patches)
    lesion_voxels = [int(np.isin(p["label"].numpy(), [6, 7]).sum()) for p in patches]
    assert all(n > 0 for n in lesion_voxels)
    assert len(set(lesion_voxels)) > 1  # drawn afresh: not the same lesion again
    kidney_next_to_lesion = [np.isin(p["label"].numpy(), [3, 4]).any() for p in patches]
    assert sum(kidney_next_to_lesion) >= 5  # grown from a kidney (a large lesion may hide a small one)


def test_the_share_of_cysts_among_the_lesions_is_a_setting(tmp_path):
    for share, kept, never in ((1.0, 7, 6), (0.0, 6, 7)):  # tumour 6, cyst 7
        data = _fresh_lesion_data(
            tmp_path, fresh_lesion_fraction=1.0, lesion_cyst_probability=share, samples_per_epoch=4
        )
        data.setup("fit")
        dataset = data.train_dataloader().dataset
        labels = [dataset[i]["label"].numpy() for i in range(4)]
        assert all((a == kept).any() and not (a == never).any() for a in labels), share


def test_fresh_lesions_leave_the_other_patches_alone(tmp_path):
    data = _fresh_lesion_data(tmp_path, fresh_lesion_fraction=0.25, samples_per_epoch=40)
    data.setup("fit")
    dataset = data.train_dataloader().dataset
    with_lesion = sum(bool(np.isin(dataset[i]["label"].numpy(), [6, 7]).any()) for i in range(40))
    assert 3 <= with_lesion <= 20  # about a quarter
    with pytest.raises(ValueError, match="lesion_bank"):
        plain = _fresh_lesion_data(tmp_path, lesion_bank=None, fresh_lesion_fraction=0.5)
        plain.setup("fit")
        plain.train_dataloader()


def test_crop_around_keeps_the_centre_inside_and_pads_small_arrays():
    from training.data import crop_around

    array = np.arange(10 * 12 * 6).reshape(1, 10, 12, 6)
    patch = crop_around(array, (9, 0, 3), (4, 4, 4))
    assert patch.shape == (1, 4, 4, 4)
    assert array[0, 9, 0, 3] in patch and array[0, 5, 0, 3] not in patch  # clamped at the edges, the centre kept
    small = crop_around(array, (5, 6, 3), (14, 12, 8))
    assert small.shape == (1, 14, 12, 8)
    assert (small[0, :2] == 0).all() and (small[0, -2:] == 0).all()  # padded around it, as SpatialPadd does
    assert np.array_equal(small[0, 2:12, :, 1:7], array[0])
