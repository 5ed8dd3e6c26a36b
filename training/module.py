"""The LightningModule for 3D organ segmentation: network by config, Dice + cross-entropy, sliding-window validation.

Validation scores whole preprocessed volumes with MONAI's ``sliding_window_inference`` and the same metric code
(``twin_imaging.evaluation.metrics``: Dice, NSD at 2 mm, HD95) that the ``evaluate`` command uses on exported
packages. ``val/mean_dice`` (over structures present in the reference) picks the best checkpoint.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss

from training.networks import build_network, count_parameters, divisible_by
from training.paths import resolve_config_path
from twin_imaging.evaluation.metrics import score_label_maps, summarize_scores


class SegmentationModule(L.LightningModule):
    """Args:
    model_id, version: the package's identity (the id is the stem of config, card and ONNX file).
    structures: the model's output structures, in label order (label = position + 1; 0 is background).
    spacing_mm, window_hu: deterministic preprocessing (RAS, this voxel size, this HU window → [0, 1]).
    patch_size: training patch and sliding-window size, in voxels; multiples of the network's factor.
    network, network_kwargs: ``unet``, ``segresnet``, ``dynunet`` or ``swinunetr`` and its MONAI arguments.
    keep_largest_component: structures whose post-processing keeps the largest connected component.
    attached_to: structure → structures its components must touch to be kept (renal masses → the kidneys).
    structure_table: SNOMED mapping CSV for the card; default: the built-in table of abdominal structures.
    init_weights: a checkpoint whose network weights start this run (e.g. the standard-split model, to be trained
        further on all cases); used only when the run starts at step 0, never on resume. Optimiser state is not taken.
    card_file: YAML file with the card's words: title, description, intended_use, recipe, out_of_scope, limitations,
        ethical_considerations, extra_runs, training_data (list of {name, licence, description, n_cases, labels}).
        Checked when training starts, read again at export (so words can be corrected without retraining) and
        copied into each checkpoint.
    """

    def __init__(
        self,
        model_id: str,
        structures: list[str],
        version: str = "0.1.0",
        modality: str = "CT",
        spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0),
        window_hu: tuple[float, float] = (-200.0, 300.0),
        patch_size: tuple[int, int, int] = (64, 64, 64),
        network: str = "unet",
        network_kwargs: dict[str, Any] | None = None,
        learning_rate: float = 2e-3,
        weight_decay: float = 1e-5,
        warmup_steps: int = 50,
        overlap: float = 0.25,
        sw_batch_size: int = 2,
        keep_largest_component: list[str] | None = None,
        attached_to: dict[str, list[str]] | None = None,
        structure_table: str | None = None,
        init_weights: str | None = None,
        card_file: str | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.card_words = read_card_words(card_file) if card_file else {}
        named = set(keep_largest_component or ()) | set(attached_to or {})
        named |= {anchor for anchors in (attached_to or {}).values() for anchor in anchors}
        if named - set(structures):  # found now, not at export after hours of training
            raise ValueError(f"post-processing names structures the model lacks: {sorted(named - set(structures))}")
        factor = divisible_by(network, network_kwargs)
        if any(p % factor for p in patch_size):
            raise ValueError(f"patch_size {patch_size} must be a multiple of {factor} for {network}")
        self.net = build_network(network, in_channels=1, out_channels=len(structures) + 1, kwargs=network_kwargs)
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)
        self.label_names = {i: name for i, name in enumerate(structures, start=1)}
        self._val_scores: list[dict] = []
        self._fit_started: float | None = None
        self.training_seconds = 0.0

    @property
    def parameter_count(self) -> int:
        return count_parameters(self.net)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net(image)

    def training_step(self, batch: dict[str, torch.Tensor], batch_index: int) -> torch.Tensor:
        logits = self.net(batch["image"])
        loss = self.loss(logits, batch["label"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch["image"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_index: int) -> None:
        hp = self.hparams
        logits = sliding_window_inference(
            batch["image"], hp.patch_size, hp.sw_batch_size, self.net, overlap=hp.overlap, mode="gaussian"
        )
        loss = self.loss(logits, batch["label"])
        self.log("val/loss", loss, batch_size=1)
        predicted = torch.argmax(logits, dim=1)[0].cpu().numpy().astype(np.uint8)
        reference = batch["label"][0, 0].cpu().numpy().astype(np.uint8)
        self._val_scores.append(score_label_maps(predicted, reference, hp.spacing_mm, label_names=self.label_names))

    def on_validation_epoch_end(self) -> None:
        if not self._val_scores:
            return
        summary = summarize_scores(self._val_scores)
        self._val_scores = []
        dices = []
        for name, values in summary.items():
            for metric in ("dice", "nsd", "hd95_mm"):
                value = values.get(metric)
                if value is not None:
                    self.log(f"val/{metric}_{name}", float(value))
            if values.get("dice") is not None:
                dices.append(values["dice"])
        self.log("val/mean_dice", float(np.mean(dices)) if dices else 0.0, prog_bar=True)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.learning_rate, weight_decay=hp.weight_decay)
        total = max(1, int(self.trainer.max_steps if self.trainer.max_steps > 0 else 1000))
        warmup = min(hp.warmup_steps, total // 2)

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / max(1, warmup)
            progress = (step - warmup) / max(1, total - warmup)
            return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # Wall-clock training time travels in the checkpoint, so the card can say how long the model took.
    def on_fit_start(self) -> None:
        self._fit_started = time.monotonic()
        if self.hparams.init_weights and self.global_step == 0:
            load_network_weights(self, self.hparams.init_weights)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        elapsed = time.monotonic() - self._fit_started if self._fit_started is not None else 0.0
        checkpoint["training_seconds"] = self.training_seconds + elapsed
        checkpoint["hardware"] = describe_hardware()
        checkpoint["global_step"] = self.global_step
        checkpoint["card_words"] = self.card_words
        checkpoint["seed"] = int(os.environ.get("PL_GLOBAL_SEED", "0"))  # set by seed_everything

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.training_seconds = float(checkpoint.get("training_seconds", 0.0))


def load_network_weights(module: SegmentationModule, checkpoint_path: str | Path) -> None:
    """Copy the network weights of another run's checkpoint into ``module``: the same network, and the same classes
    or more. Where this model appends structures to the checkpoint's (e.g. renal masses after the organs), the
    layers that produce the classes keep the checkpoint's channels for the classes both have and start the new ones
    from their fresh initialisation."""
    checkpoint = torch.load(resolve_config_path(checkpoint_path), map_location="cpu", weights_only=False)
    weights = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    theirs = list(checkpoint.get("hyper_parameters", {}).get("structures") or [])
    ours = list(module.hparams.structures)
    if theirs and theirs != ours[: len(theirs)]:
        raise ValueError(f"{checkpoint_path}: its structures {theirs} are not the first of this model's {ours}")
    own = module.net.state_dict()
    grown = []
    for name, value in weights.items():
        target = own.get(name)
        if target is not None and target.shape != value.shape and theirs and len(ours) > len(theirs):
            if target.ndim != value.ndim or any(t < v for t, v in zip(target.shape, value.shape, strict=True)):
                raise ValueError(f"{checkpoint_path}: {name} {tuple(value.shape)} cannot grow to {tuple(target.shape)}")
            merged = target.clone()
            merged[tuple(slice(0, n) for n in value.shape)] = value
            weights[name] = merged
            grown.append(name)
    try:
        module.net.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{checkpoint_path}: its network does not match this model's: {exc}") from None
    extra = f"; {len(grown)} class layer(s) grown for {ours[len(theirs) :]}" if grown else ""
    print(f"network weights from {checkpoint_path} (step {checkpoint.get('global_step', '?')}){extra}", flush=True)


CARD_WORDS = {
    "title": str,
    "description": str,
    "intended_use": str,
    "recipe": str,
    "out_of_scope": list,
    "limitations": list,
    "ethical_considerations": list,
    "training_data": list,
    "extra_runs": list,
    "published_comparison": list,
}


def read_card_words(path: str | Path) -> dict[str, Any]:
    """The card's words from a YAML file (relative paths: from the working directory, else the repository)."""
    path = resolve_config_path(path)
    words = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(words, dict):
        raise ValueError(f"{path}: the card's words must be a YAML mapping")
    check_card_words(words)
    return words


def check_card_words(card: dict[str, Any]) -> None:
    """Refuse a malformed ``model.card`` at the start of training, not at export an hour later."""
    for key, value in card.items():
        if key not in CARD_WORDS:
            raise ValueError(f"model.card.{key} is not a card field; use {sorted(CARD_WORDS)}")
        if not isinstance(value, CARD_WORDS[key]):
            raise ValueError(f"model.card.{key} must be a {CARD_WORDS[key].__name__}")
        structured = ("training_data", "published_comparison")
        if CARD_WORDS[key] is list and key not in structured and not all(isinstance(v, str) for v in value):
            raise ValueError(f"model.card.{key} must be a list of strings (quote items that contain ': ')")


def describe_hardware() -> str:
    if torch.cuda.is_available():
        return f"GPU: {torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"CPU: {os.cpu_count()} cores (torch {torch.__version__})"
