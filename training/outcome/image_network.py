"""The image network family: a small MONAI 3D CNN on the affected kidney's mask crop, fused with the clinical vector.

    python -m training.outcome.image_network --data ../shared/data/kits23 --cache runs/kits_crops [--epochs N]

One network with a head per target (``TARGETS``), trained with Lightning on CPU; the loss is the sum of the binary
cross-entropies of the targets whose label is known. Scored like the logistic families (training/outcome/train.py):
out-of-fold logits per target, AUROC per repeat with a bootstrap 95 % CI of the repeat-mean logits, Brier score
after Platt scaling fitted on those out-of-fold logits. One network serves all targets, so the folds are stratified
on a combined stratum (any_complication x prolonged_stay), not on each target separately.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from monai.networks.blocks import Convolution
from sklearn.metrics import brier_score_loss, roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from torch import nn

from training.outcome.evaluation import CrossValidation, bootstrap_auroc_ci
from training.outcome.image_crops import load_crops
from training.outcome.linear import fit_platt
from training.paths import REPO_ROOT
from twin_imaging.files import write_bytes_atomic
from twin_imaging.outcome.features import FAMILY_FEATURES, MODEL_FEATURES, feature_matrix
from twin_imaging.outcome.imputation import fit_imputation
from twin_imaging.outcome.kits import load_kits_dataset
from twin_imaging.outcome.targets import TARGETS

log = logging.getLogger(__name__)

FAMILY = "image_network"
EVIDENCE_FILE = "nephrectomy_outcomes_image_network_cv.json"
SEED = 2026  # training/outcome/train.py's SEED
STRATUM_TARGETS = ("any_complication", "prolonged_stay")


@dataclass(frozen=True)
class TrainingSettings:
    epochs: int = 12
    batch_size: int = 16
    learning_rate: float = 1e-3
    weight_decay: float = 1e-2
    dropout: float = 0.3
    max_shift: int = 3  # voxels of random translation (training only)
    seed: int = SEED


class MaskClinicalNet(nn.Module):
    """Conv3d blocks 8-16-32-64 (stride 2, instance norm), global average pooling, the crop's log spacing and the
    clinical vector concatenated, one linear head per target."""

    def __init__(self, n_clinical: int, n_targets: int, *, in_channels: int = 3, dropout: float = 0.3) -> None:
        super().__init__()
        blocks, channels = [], in_channels
        for out in (8, 16, 32, 64):
            blocks.append(Convolution(3, channels, out, strides=2, kernel_size=3, norm="instance", act="prelu"))
            channels = out
        self.encoder = nn.Sequential(*blocks, nn.AdaptiveAvgPool3d(1), nn.Flatten())
        self.embed = nn.Sequential(nn.Dropout(dropout), nn.Linear(channels + 1, 16), nn.PReLU())
        self.heads = nn.Linear(16 + n_clinical, n_targets)  # row t: the head of target t

    def forward(self, crops: torch.Tensor, log_spacing: torch.Tensor, clinical: torch.Tensor) -> torch.Tensor:
        image = self.embed(torch.cat([self.encoder(crops), log_spacing[:, None]], dim=1))
        return self.heads(torch.cat([image, clinical], dim=1))


class OutcomeModule(L.LightningModule):
    def __init__(self, net: MaskClinicalNet, settings: TrainingSettings) -> None:
        super().__init__()
        self.net, self.settings = net, settings

    def training_step(self, batch, batch_index):
        crops, log_spacing, clinical, y = batch
        logits = self.net(augment_crops(crops.float(), max_shift=self.settings.max_shift), log_spacing, clinical)
        return masked_bce(logits, y)

    def configure_optimizers(self):
        s = self.settings
        return torch.optim.AdamW(self.parameters(), lr=s.learning_rate, weight_decay=s.weight_decay)


def masked_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Sum over targets of the mean BCE over the cases whose label is known (NaN = unknown)."""
    known = ~torch.isnan(y)
    losses = nn.functional.binary_cross_entropy_with_logits(logits, torch.nan_to_num(y), reduction="none")
    return ((losses * known).sum(dim=0) / known.sum(dim=0).clamp(min=1)).sum()


def augment_crops(crops: torch.Tensor, *, max_shift: int) -> torch.Tensor:
    """Random flips along y and z (anterior-posterior, superior-inferior; never x, the medial direction) and random
    translations of up to ``max_shift`` voxels, per case."""
    out = []
    for crop in crops:
        dims = [d for d in (2, 3) if torch.rand(()) < 0.5]
        if dims:
            crop = torch.flip(crop, dims)
        if max_shift:
            shifts = tuple(int(v) for v in torch.randint(-max_shift, max_shift + 1, (3,)))
            crop = torch.roll(crop, shifts, dims=(1, 2, 3))
        out.append(crop)
    return torch.stack(out)


def fit_network(
    crops: np.ndarray, log_spacing: np.ndarray, clinical: np.ndarray, y: np.ndarray, settings: TrainingSettings
) -> MaskClinicalNet:
    """Train a network on uint8/bool crops (n, 3, s, s, s), log spacings (n,), standardised clinical rows, labels
    (n, targets) with NaN for unknown."""
    L.seed_everything(settings.seed, workers=False, verbose=False)
    net = MaskClinicalNet(clinical.shape[1], y.shape[1], in_channels=crops.shape[1], dropout=settings.dropout)
    data = torch.utils.data.TensorDataset(
        torch.from_numpy(crops.astype(np.uint8)),
        torch.as_tensor(log_spacing, dtype=torch.float32),
        torch.as_tensor(clinical, dtype=torch.float32),
        torch.as_tensor(y, dtype=torch.float32),
    )
    loader = torch.utils.data.DataLoader(data, batch_size=settings.batch_size, shuffle=True, drop_last=len(data) > 32)
    trainer = L.Trainer(
        max_epochs=settings.epochs,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(OutcomeModule(net, settings), loader)
    return net.eval()


@torch.no_grad()
def predict_logits(
    net: MaskClinicalNet, crops: np.ndarray, log_spacing: np.ndarray, clinical: np.ndarray
) -> np.ndarray:
    net.eval()
    out = []
    for start in range(0, len(crops), 32):
        part = slice(start, start + 32)
        out.append(
            net(
                torch.from_numpy(crops[part].astype(np.float32)),
                torch.as_tensor(log_spacing[part], dtype=torch.float32),
                torch.as_tensor(clinical[part], dtype=torch.float32),
            ).numpy()
        )
    return np.concatenate(out).astype(np.float64)


def cross_validate_image_network(
    crops: np.ndarray,
    log_spacing: np.ndarray,
    clinical: np.ndarray,
    y: np.ndarray,
    *,
    target_names: list[str],
    stratum: np.ndarray,
    settings: TrainingSettings,
    n_splits: int = 5,
    n_repeats: int = 1,
    n_bootstrap: int = 2000,
) -> list[CrossValidation]:
    """Per target, the network's out-of-fold scores in ``CrossValidation`` form (as evaluation.cross_validate)."""
    folds = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=n_repeats, random_state=settings.seed)
    oof = np.zeros((n_repeats, *y.shape))
    for index, (train, test) in enumerate(folds.split(clinical, stratum)):
        mean, scale = clinical[train].mean(axis=0), clinical[train].std(axis=0)
        scale[scale < 1e-12] = 1.0
        start = time.perf_counter()
        net = fit_network(crops[train], log_spacing[train], (clinical[train] - mean) / scale, y[train], settings)
        oof[index // n_splits, test] = predict_logits(
            net, crops[test], log_spacing[test], (clinical[test] - mean) / scale
        )
        log.info("fold %d of %d: %.0f s", index + 1, n_splits * n_repeats, time.perf_counter() - start)
    results = []
    for t, name in enumerate(target_names):
        rows = ~np.isnan(y[:, t])
        results.append(
            score_oof(
                oof[:, rows, t],
                y[rows, t].astype(int),
                target=name,
                n_splits=n_splits,
                seed=settings.seed,
                n_bootstrap=n_bootstrap,
            )
        )
    return results


def score_oof(
    oof: np.ndarray, y: np.ndarray, *, target: str, n_splits: int, seed: int, n_bootstrap: int = 2000
) -> CrossValidation:
    """evaluation.cross_validate's scoring of out-of-fold logits (n_repeats, n)."""
    aurocs = tuple(float(roc_auc_score(y, logits)) for logits in oof)
    mean_logits = oof.mean(axis=0)
    calibration = fit_platt(mean_logits, y)
    calibrated = 1.0 / (1.0 + np.exp(-(calibration.slope * oof + calibration.intercept)))
    return CrossValidation(
        family=FAMILY,
        target=target,
        n=len(y),
        events=int(y.sum()),
        n_splits=n_splits,
        n_repeats=len(oof),
        oof_logits=oof,
        auroc_per_repeat=aurocs,
        auroc_mean=float(np.mean(aurocs)),
        auroc_ci95=bootstrap_auroc_ci(y, mean_logits, n_bootstrap=n_bootstrap, seed=seed),
        brier=float(np.mean([brier_score_loss(y, p) for p in calibrated])),
        calibration=calibration,
    )


def run_cross_validation(
    data_dir: Path,
    *,
    cache_dir: Path,
    features_cache: Path,
    settings: TrainingSettings,
    size: int = 48,
    n_repeats: int = 1,
    workers: int = 2,
    evidence_dir: Path = REPO_ROOT / "training" / "evaluations",
) -> dict:
    started = time.perf_counter()
    torch.set_num_threads(max(1, workers))
    dataset = load_kits_dataset(data_dir, workers=workers, cache_dir=features_cache)
    usable = [c for c in dataset.cases if c.clinical is not None and c.scenario is not None and c.features is not None]
    crops = load_crops(data_dir, [c.case_id for c in usable], cache_dir=cache_dir, size=size, workers=workers)
    cases = [c for c in usable if crops[c.case_id] is not None]
    log.info("%d usable cases, %d with a crop", len(usable), len(cases))
    imputation = fit_imputation([c.clinical for c in usable])  # as train.py: on all usable cases
    columns = [MODEL_FEATURES.index(name) for name in FAMILY_FEATURES["clinical_only"]]
    clinical = feature_matrix(cases, imputation=imputation)[:, columns]
    names = list(TARGETS)
    y = np.array([[np.nan if c.targets[n] is None else c.targets[n] for n in names] for c in cases], dtype=float)
    images = np.stack([crops[c.case_id].channels for c in cases])
    log_spacing = np.log(np.array([crops[c.case_id].spacing_mm for c in cases]))
    stratum = sum(2**i * np.nan_to_num(y[:, names.index(n)]).astype(int) for i, n in enumerate(STRATUM_TARGETS))
    results = cross_validate_image_network(
        images, log_spacing, clinical, y, target_names=names, stratum=stratum, settings=settings, n_repeats=n_repeats
    )
    evidence = {
        "family": FAMILY,
        "cv": {r.target: r.summary() for r in results},
        "settings": {
            **settings.__dict__,
            "crop_size": size,
            "crop": "affected kidney box, isotropic spacing fitting its longest extent, left mirrored to right",
            "folds": 5,
            "repeats": n_repeats,
            "stratified_on": list(STRATUM_TARGETS),
            "n_cases": len(cases),
            "clinical_features": list(FAMILY_FEATURES["clinical_only"]),
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    write_bytes_atomic(evidence_dir / EVIDENCE_FILE, (json.dumps(evidence, indent=2) + "\n").encode())
    return evidence


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="KiTS layout: kits23.json, case_*/segmentation.nii.gz")
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "runs" / "kits_crops", help="crop cache")
    parser.add_argument("--features-cache", type=Path, default=REPO_ROOT / "runs" / "kits_features")
    parser.add_argument("--epochs", type=int, default=TrainingSettings.epochs)
    parser.add_argument("--size", type=int, default=48, help="crop edge in voxels")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    evidence = run_cross_validation(
        args.data,
        cache_dir=args.cache,
        features_cache=args.features_cache,
        settings=TrainingSettings(epochs=args.epochs),
        size=args.size,
        n_repeats=args.repeats,
        workers=args.workers,
    )
    for name, s in evidence["cv"].items():
        low, high = s["auroc_ci95"]
        events = f"{s['events']}/{s['n']} events"
        print(f"{name} ({events}): AUROC {s['auroc']:.3f} [{low:.2f}-{high:.2f}], Brier {s['brier']:.3f}")
    print(f"{evidence['settings']['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
