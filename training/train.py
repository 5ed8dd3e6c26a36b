"""Train a segmentation model from a YAML config (LightningCLI); the full config is saved with each run.

    python -m training.train fit --config training/configs/smoke.yaml
    python -m training.train fit --config training/configs/abdomen_ct_organs.yaml --trainer.accelerator gpu

The model's structures, spacing, window and patch size are given once (under ``model:``) and linked to the data.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
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
        precision = str(config.get("precision"))
        if precision.startswith("bf16") and _on_cpu(config.get("accelerator")) and not cpu_has_native_bf16():
            # without AVX512-BF16 or AMX, bf16 on the CPU runs on one thread, far slower: 30 steps of the renal
            # recipe took over 10 min in bf16 against about 1 min in fp32 on a 2-core AMD EPYC with AVX2 only
            kwargs["precision"] = "32-true"
            self._get(self.config, "trainer")["precision"] = "32-true"  # the run's saved config.yaml says so too
            print(f"this CPU has no native bf16 (AVX512-BF16 or AMX): training in 32-true, not {precision}", flush=True)
        if config.get("logger") in (None, True):
            root = config.get("default_root_dir") or "runs"
            kwargs["logger"] = [CSVLogger(root, name="csv"), TensorBoardLogger(root, name="tensorboard")]
        return super().instantiate_trainer(**kwargs)


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 natively (the avx512_bf16 or amx_bf16 flag); assumed so off Linux."""
    if not sys.platform.startswith("linux") or not cpuinfo.is_file():
        return True
    flags = set(cpuinfo.read_text(errors="replace").split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def _on_cpu(accelerator: object) -> bool:
    name = str(accelerator or "auto")
    return name == "cpu" or (name == "auto" and not torch.cuda.is_available())


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
