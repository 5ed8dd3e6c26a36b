"""Segment a volume with a model package: preprocess per the card, sliding-window ONNX, scores back to the source
grid and argmax there, clean-up. Torch-free: this is the serving path.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from twin_imaging.inference.input_gate import check_input_suitability
from twin_imaging.inference.postprocess import keep_attached_components, keep_largest_components
from twin_imaging.inference.sessions import CPU_PROVIDER, choose_providers, create_session, run_session
from twin_imaging.inference.sliding_window import sliding_window_predict
from twin_imaging.models.package import ModelPackage
from twin_imaging.settings import get_settings
from twin_imaging.transforms import preprocess_image
from twin_imaging.transforms.logits_to_source import argmax_on_source_grid
from twin_imaging.volume import Volume


@dataclass(frozen=True)
class SegmentationResult:
    labels: Volume  # uint8 on the input volume's grid, with label_names
    model_id: str
    model_version: str
    onnx_sha256: str
    providers: tuple[str, ...]
    timings_s: dict[str, float] = field(default_factory=dict)


class Segmenter:
    """A model package and its ONNX Runtime session, built once and used for many volumes."""

    def __init__(
        self,
        package: ModelPackage,
        *,
        providers: str | list[str] | None = None,
        intra_op_threads: int | None = None,
        concurrent_windows: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        """``intra_op_threads``, ``concurrent_windows`` and ``batch_size`` default to the settings (``onnx_threads``,
        ``onnx_concurrent_windows``) or, where those are unset, to what measured fastest: on a CPU, two windows at
        once of one window each, the cores shared between them; on a GPU, one run at a time of two windows."""
        settings = get_settings()
        self.package = package
        self.card = package.card
        on_cpu = choose_providers(settings.onnx_providers if providers is None else providers)[0] == CPU_PROVIDER
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.concurrent_windows = (
            concurrent_windows or settings.onnx_concurrent_windows or (min(2, cores) if on_cpu else 1)
        )
        threads = (
            intra_op_threads or settings.onnx_threads or (max(1, cores // self.concurrent_windows) if on_cpu else None)
        )
        self.session = create_session(package.onnx_path, providers=providers, intra_op_threads=threads)
        if not on_cpu and self.session.get_providers()[0] == CPU_PROVIDER:  # a GPU asked for, none usable
            on_cpu = True  # its threads are ONNX Runtime's default (every core): one window at a time
            self.concurrent_windows = concurrent_windows or settings.onnx_concurrent_windows or 1
        self.batch_size = batch_size or (1 if on_cpu else 2)

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self.session.get_providers())

    def predict_logits(self, image: np.ndarray, *, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """(C, X, Y, Z) preprocessed image → (K, X, Y, Z) blended logits."""
        spec = self.card.inference

        def predict_batch(batch: np.ndarray) -> np.ndarray:
            return run_session(self.session, batch, input_name=spec.input_name, output_name=spec.output_name)

        return sliding_window_predict(
            image,
            predict_batch,
            patch_size=spec.patch_size_voxels,
            overlap=spec.overlap,
            batch_size=self.batch_size,
            sigma_scale=spec.sigma_scale,
            progress=progress,
            concurrency=self.concurrent_windows,
        )

    def segment(self, volume: Volume, *, progress: Callable[[int, int], None] | None = None) -> SegmentationResult:
        """Raises ``UnsuitableInputError`` (before any large allocation) where the volume does not suit the model."""
        check_input_suitability(volume, self.card)
        timings: dict[str, float] = {}
        start = time.perf_counter()
        prepared = preprocess_image(volume, self.card.preprocessing)
        timings["preprocess"] = time.perf_counter() - start

        start = time.perf_counter()
        logits = self.predict_logits(prepared.array, progress=progress)
        timings["network"] = time.perf_counter() - start

        # Scores, not labels, go back to the source grid (nnU-Net's way): no 3 mm stair steps on a 0.7 mm CT.
        start = time.perf_counter()
        on_source = argmax_on_source_grid(logits, prepared)
        del logits
        timings["resample_back"] = time.perf_counter() - start

        start = time.perf_counter()
        largest = [s.label for s in self.card.structures if s.keep_largest_component]
        on_source = keep_largest_components(on_source, largest, in_place=True)  # a map of our own
        labels_by_name = {s.name: s.label for s in self.card.structures}
        attachments = {
            s.label: [labels_by_name[a] for a in s.attached_to] for s in self.card.structures if s.attached_to
        }
        if attachments:  # after the largest components: a kidney's stray fragment anchors nothing
            on_source = keep_attached_components(on_source, attachments, in_place=True)
        timings["postprocess"] = time.perf_counter() - start

        return SegmentationResult(
            labels=volume.with_array(on_source, label_names=self.card.label_names()),
            model_id=self.card.model_id,
            model_version=self.card.version,
            onnx_sha256=self.card.onnx.sha256,
            providers=self.providers,
            timings_s=timings,
        )


def segment_volume(
    volume: Volume,
    package: ModelPackage,
    *,
    progress: Callable[[int, int], None] | None = None,
    **options,
) -> SegmentationResult:
    """One-off segmentation (``options`` go to ``Segmenter``); build a ``Segmenter`` once to segment many volumes."""
    return Segmenter(package, **options).segment(volume, progress=progress)
