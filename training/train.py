"""Train a segmentation model from a YAML config (LightningCLI); the full config is saved with each run.

    python -m training.train fit --config training/configs/smoke.yaml
    python -m training.train fit --config training/configs/abdomen_ct_organs.yaml --trainer.accelerator gpu

The model's structures, spacing, window and patch size are given once (under ``model:``) and linked to the data.
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from training.data import SegmentationDataModule
from training.module import SegmentationModule


class SegmentationCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        for key in ("structures", "spacing_mm", "window_hu", "patch_size"):
            parser.link_arguments(f"model.{key}", f"data.{key}")
        parser.link_arguments("seed_everything", "data.seed")


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
