"""The contrast-phase simulation moves each enhancing organ to the other phase's HU and leaves the rest alone."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("monai")

from training.augment import PHASE_TARGET_HU, RandContrastPhased, training_augmentation

WINDOW = (-125.0, 275.0)
STRUCTURES = ["liver", "kidney_left", "gallbladder"]


def portal_venous_patch(seed: int = 0):
    """Background fat, a liver block at ~110 HU, a kidney block at ~180 HU, a gallbladder at ~10 HU, with noise."""
    rng = np.random.default_rng(seed)
    hu = np.full((40, 40, 20), -90.0) + rng.normal(0, 10, (40, 40, 20))
    labels = np.zeros(hu.shape, dtype=np.uint8)
    for label, box, value in ((1, np.s_[2:18, 2:38, 2:18], 110.0), (2, np.s_[24:36, 4:16, 4:16], 180.0)):
        labels[box] = label
        hu[box] = value + rng.normal(0, 12, hu[box].shape)
    labels[24:36, 24:36, 4:16] = 3
    hu[24:36, 24:36, 4:16] = 10.0 + rng.normal(0, 5, (12, 12, 12))
    image = np.clip((hu - WINDOW[0]) / (WINDOW[1] - WINDOW[0]), 0, 1).astype(np.float32)
    return image[None], labels[None]


def to_hu(image):
    return image * (WINDOW[1] - WINDOW[0]) + WINDOW[0]


@pytest.mark.parametrize("phase", sorted(PHASE_TARGET_HU))
def test_organs_move_to_the_phase_and_keep_their_texture(phase):
    image, labels = portal_venous_patch()
    transform = RandContrastPhased(
        "image",
        label_key="label",
        structures=STRUCTURES,
        window_hu=WINDOW,
        prob=1.0,
        phases={phase: PHASE_TARGET_HU[phase]},
        mix_range=(1.0, 1.0),
    )
    transform.set_random_state(seed=3)
    out = transform({"image": image.copy(), "label": labels})
    before, after = to_hu(image[0]), to_hu(np.asarray(out["image"])[0])
    np.testing.assert_array_equal(out["label"], labels)
    # each organ away from its edge (the shift fades across the edge)
    for name, inner in (("liver", np.s_[4:16, 4:36, 4:16]), ("kidney_left", np.s_[26:34, 6:14, 6:14])):
        region = np.zeros(labels[0].shape, dtype=bool)
        region[inner] = True
        low, high = PHASE_TARGET_HU[phase][name]
        assert low - 3 <= np.median(after[region]) <= min(high, WINDOW[1]) + 3, name
        # texture kept: the organ's spread is that of the portal-venous organ (where nothing was clipped)
        if high < WINDOW[1]:
            assert np.std(after[region]) == pytest.approx(np.std(before[region]), rel=0.15)
    # gallbladder has no target in the arterial table: unchanged there; far background unchanged in every phase
    far = np.zeros(labels[0].shape, dtype=bool)
    far[38:, 38:, :] = True
    np.testing.assert_allclose(after[far], before[far], atol=1e-4)
    if "gallbladder" not in PHASE_TARGET_HU[phase]:
        gall = np.zeros(labels[0].shape, dtype=bool)
        gall[27:33, 27:33, 7:13] = True
        np.testing.assert_allclose(after[gall], before[gall], atol=1e-4)


def test_prob_zero_changes_nothing_and_the_recipe_never_flips():
    image, labels = portal_venous_patch()
    transform = RandContrastPhased("image", label_key="label", structures=STRUCTURES, window_hu=WINDOW, prob=0.0)
    out = transform({"image": image.copy(), "label": labels})
    np.testing.assert_array_equal(np.asarray(out["image"]), image)
    names = [type(t).__name__ for t in training_augmentation(structures=STRUCTURES, window_hu=WINDOW)]
    assert not any("Flip" in name for name in names)
    assert "RandContrastPhased" in names
