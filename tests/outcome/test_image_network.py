"""The image network learns a tumour-size signal on synthetic crops; crops of a real KiTS mask have the right form."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from tests.conftest import shared_file
from training.outcome.image_crops import CHANNELS, crop_affected_kidney
from training.outcome.image_network import (
    TrainingSettings,
    cross_validate_image_network,
    fit_network,
    masked_bce,
    predict_logits,
)
from twin_imaging.io import read_nifti

SIZE = 24  # four stride-2 blocks leave 2³ for instance norm


def synthetic_crops(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Kidney ellipsoids with a tumour ball whose radius is large where the label is 1."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(SIZE),) * 3, indexing="ij")).astype(float)
    crops = np.zeros((n, 3, SIZE, SIZE, SIZE), dtype=bool)
    y = rng.integers(0, 2, n)
    for i in range(n):
        centre = SIZE / 2 + rng.uniform(-2, 2, 3)
        kidney = (((grid - centre[:, None, None, None]) / np.array([6, 4.5, 9])[:, None, None, None]) ** 2).sum(0) <= 1
        radius = rng.uniform(4.5, 6.5) if y[i] else rng.uniform(1.5, 3.3)
        spot = centre + rng.uniform(-3, 3, 3)
        tumor = ((grid - spot[:, None, None, None]) ** 2).sum(0) <= radius**2
        crops[i, 0], crops[i, 1] = kidney & ~tumor, tumor
    return crops, y


def test_network_learns_above_chance_on_held_out_synthetic_cases():
    torch.set_num_threads(1)
    crops, y = synthetic_crops(64, seed=1)
    test_crops, test_y = synthetic_crops(48, seed=2)
    labels = np.stack([y, np.full(len(y), np.nan)], axis=1)  # second target unknown everywhere: masked
    clinical = np.random.default_rng(3).normal(size=(len(y), 2))  # uninformative
    settings = TrainingSettings(epochs=6, batch_size=16, learning_rate=3e-3, dropout=0.0, max_shift=1)
    net = fit_network(crops, np.zeros(len(y)), clinical, labels, settings)
    logits = predict_logits(net, test_crops, np.zeros(len(test_y)), np.zeros((len(test_y), 2)))
    assert logits.shape == (len(test_y), 2)
    auroc = roc_auc_score(test_y, logits[:, 0])
    print(f"held-out synthetic AUROC {auroc:.3f}")
    assert auroc > 0.8


def test_masked_bce_ignores_unknown_labels():
    logits = torch.tensor([[2.0, 5.0], [-1.0, -3.0]])
    y = torch.tensor([[1.0, float("nan")], [0.0, float("nan")]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y[:, 0])
    assert torch.isclose(masked_bce(logits, y), expected)


def test_cross_validation_reports_every_target_on_its_known_cases():
    crops, y = synthetic_crops(40, seed=4)
    other = np.where(np.arange(40) % 2 == 0, np.nan, y[::-1])
    labels = np.stack([y, other], axis=1).astype(float)
    results = cross_validate_image_network(
        crops,
        np.zeros(40),
        np.zeros((40, 1)),
        labels,
        target_names=["a", "b"],
        stratum=y,
        settings=TrainingSettings(epochs=1),
        n_bootstrap=50,
    )
    assert [r.target for r in results] == ["a", "b"]
    assert results[0].n == 40 and results[1].n == 20
    assert results[0].oof_logits.shape == (1, 40)
    assert 0.0 <= results[0].auroc_mean <= 1.0 and results[0].brier < 0.5


def test_real_kits_mask_gives_three_channel_crop(shared_data):
    labels = read_nifti(shared_file(shared_data, "kits23/case_00000/segmentation.nii.gz"))
    crop = crop_affected_kidney(labels, size=32)
    assert crop.channels.shape == (len(CHANNELS), 32, 32, 32) and crop.channels.dtype == bool
    assert crop.affected_side in ("left", "right")
    kidney, tumor, _ = crop.channels.sum(axis=(1, 2, 3))
    assert kidney > 1000 and tumor > 0
    assert not (crop.channels[0] & crop.channels[1]).any()
    assert 1.0 < crop.spacing_mm < 10.0  # a kidney box of 3 to 30 cm
