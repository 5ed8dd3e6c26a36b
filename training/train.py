"""Train a segmentation model from a YAML config (LightningCLI); the full config is saved with each run.

    python -m training.train fit --config training/configs/smoke.yaml
    python -m training.train fit --config training/configs/abdomen_ct_organs.yaml --trainer.accelerator gpu

The model's structures, spacing, window and patch size are given once (under ``model:``) and linked to the data.
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from training.callbacks import checkpoint_folder
from training.data import SegmentationDataModule
from training.module import SegmentationModule


class SegmentationCLI(LightningCLI):
    """LightningCLI with the model's preprocessing linked to the data, and CSV + TensorBoard logs by default
    (under ``trainer.default_root_dir``/csv and /tensorboard; the run's full config is saved beside the CSV log)."""

    def add_arguments_to_parser(self, parser) -> None:
        for key in ("structures", "spacing_mm", "window_hu", "patch_size"):
            parser.link_arguments(f"model.{key}", f"data.{key}")
        parser.link_arguments("seed_everything", "data.seed")

    def before_fit(self) -> None:
        """``--ckpt_path last`` means ``default_root_dir/checkpoints/last.ckpt`` (where ResumableCheckpoint writes):
        resume from it when it exists, else start afresh, so one command both starts and continues a run."""
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        last = checkpoint_folder(self.trainer) / "last.ckpt"
        config["ckpt_path"] = str(last) if last.is_file() else None
        print(f"resuming from {last}" if last.is_file() else f"no {last} yet: starting afresh", flush=True)

    def instantiate_trainer(self, **kwargs):
        config = self._get(self.config_init, "trainer", default={})
        if config.get("logger") in (None, True):
            root = config.get("default_root_dir") or "runs"
            kwargs["logger"] = [CSVLogger(root, name="csv"), TensorBoardLogger(root, name="tensorboard")]
        return super().instantiate_trainer(**kwargs)


def main(args: list[str] | None = None, *, run: bool = True) -> SegmentationCLI:
    return SegmentationCLI(
        SegmentationModule,
        SegmentationDataModule,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


if __name__ == "__main__":
    main()
