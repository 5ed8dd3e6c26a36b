"""Callbacks the recipes use.

Checkpoints go to ``trainer.default_root_dir/checkpoints`` (not into the logger's numbered version folder), so a
run stopped at the end of a session resumes from the same place with ``--ckpt_path last``.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


def checkpoint_folder(trainer: L.Trainer) -> Path:
    return Path(trainer.default_root_dir) / "checkpoints"


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose folder defaults to ``default_root_dir/checkpoints`` (stable across restarts)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.dirpath is None:
            self.dirpath = str(checkpoint_folder(trainer))
        super().setup(trainer, pl_module, stage)


class SaveFinalCheckpoint(L.Callback):
    """Save ``final.ckpt`` when training ends (ModelCheckpoint's ``last.ckpt`` is only written at validation, which
    need not fall on the last step). The exported model is this one: chosen by a fixed schedule, not by a score."""

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step < (trainer.max_steps or 0):
            return  # interrupted (e.g. the session ended): last.ckpt is the one to resume from
        trainer.save_checkpoint(checkpoint_folder(trainer) / "final.ckpt")
