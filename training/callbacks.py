"""Callbacks the recipes use."""

from __future__ import annotations

from pathlib import Path

import lightning as L


class SaveFinalCheckpoint(L.Callback):
    """Save ``final.ckpt`` when training ends (ModelCheckpoint's ``last.ckpt`` is only written at validation, which
    need not fall on the last step). The exported model is this one: chosen by a fixed schedule, not by a score."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = Path(trainer.log_dir or trainer.default_root_dir) / "checkpoints"
        trainer.save_checkpoint(folder / "final.ckpt")
