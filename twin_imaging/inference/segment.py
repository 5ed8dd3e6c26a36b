"""Segment a volume with a model package: preprocess per the card, sliding-window ONNX, scores back to the source
grid and argmax there, clean-up. A cascade package then runs its refinement network on a crop around the structures
the card names (the kidneys) and writes its labels there. Torch-free: this is the serving path.
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
from twin_imaging.label_boxes import label_boxes, union_box
from twin_imaging.models.card import SEPARATE_CROPS_APART_MM, InferenceSpec
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
    # structure → mL of its components dropped for touching none of their anchors (card ``attached_to``)
    unattached_dropped_ml: dict[str, float] = field(default_factory=dict)


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
        self.refinement_session = (
            None
            if package.refinement_onnx_path is None
            else create_session(package.refinement_onnx_path, providers=providers, intra_op_threads=threads)
        )
        if not on_cpu and self.session.get_providers()[0] == CPU_PROVIDER:  # a GPU asked for, none usable
            on_cpu = True  # its threads are ONNX Runtime's default (every core): one window at a time
            self.concurrent_windows = concurrent_windows or settings.onnx_concurrent_windows or 1
        self.batch_size = batch_size or (1 if on_cpu else 2)
        # the card's post-processing, derived once: label values to keep whole, and mass → anchors to touch
        self._largest = [s.label for s in self.card.structures if s.keep_largest_component]
        self._attachments = {
            s.label: [self.card.structure(a).label for a in s.attached_to]
            for s in self.card.structures
            if s.attached_to
        }

    @property
    def providers(self) -> tuple[str, ...]:
        return tuple(self.session.get_providers())

    def predict_logits(self, image: np.ndarray, *, progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """(C, X, Y, Z) preprocessed image → (K, X, Y, Z) blended logits."""
        return self._predict(self.session, self.card.inference, image, progress=progress)

    def _predict(self, session, spec: InferenceSpec, image: np.ndarray, *, progress=None) -> np.ndarray:
        def predict_batch(batch: np.ndarray) -> np.ndarray:
            return run_session(session, batch, input_name=spec.input_name, output_name=spec.output_name)

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
        on_source = keep_largest_components(on_source, self._largest, in_place=True)  # a map of our own
        timings["postprocess"] = time.perf_counter() - start

        if self.refinement_session is not None:
            start = time.perf_counter()
            refined = self._refine(volume, on_source)
            if refined:  # its structures' stray pieces go as the first network's do
                again = [s.label for s in self.card.structures if s.keep_largest_component and s.name in refined]
                on_source = keep_largest_components(on_source, again, in_place=True)
            timings["refine"] = time.perf_counter() - start

        start = time.perf_counter()
        dropped_voxels: dict[int, int] = {}
        if self._attachments:  # after the largest components: a kidney's stray fragment anchors nothing
            keep_attached_components(on_source, self._attachments, in_place=True, dropped_voxels=dropped_voxels)
        timings["postprocess"] += time.perf_counter() - start
        voxel_ml = float(np.prod(volume.spacing_mm)) / 1000.0
        names = self.card.label_names()

        return SegmentationResult(
            labels=volume.with_array(on_source, label_names=self.card.label_names()),
            model_id=self.card.model_id,
            model_version=self.card.version,
            onnx_sha256=self.card.weights_sha256,
            providers=self.providers,
            timings_s=timings,
            unattached_dropped_ml={names[value]: count * voxel_ml for value, count in sorted(dropped_voxels.items())},
        )

    def _refine(self, volume: Volume, labels: np.ndarray) -> tuple[str, ...]:
        """Run the refinement network on the box around its ``around`` structures (plus the margin; two boxes where
        they lie far apart, ``_boxes_around``) and write its labels into ``labels`` there, in place. Returns the
        structures it rewrote; none where the first network found none of the ``around`` structures (nothing to look
        at more closely)."""
        stage = self.card.refinement
        values = [self.card.structure(name).label for name in stage.around]
        boxes = _boxes_around(labels, values, volume.spacing_mm, stage.margin_mm)
        for box in boxes:
            self._refine_box(volume, labels, box)
        return stage.structures if boxes else ()

    def _refine_box(self, volume: Volume, labels: np.ndarray, box: tuple[slice, slice, slice]) -> None:
        stage = self.card.refinement
        crop = volume.cropped(box)
        prepared = preprocess_image(crop, stage.preprocessing)
        logits = self._predict(self.refinement_session, stage.inference, prepared.array)
        crop_labels = argmax_on_source_grid(logits, prepared)
        del logits
        card_values = np.zeros(stage.inference.num_classes, dtype=labels.dtype)  # refinement label → card label
        card_values[1 : len(stage.structures) + 1] = [self.card.structure(n).label for n in stage.structures]
        region = labels[box]  # a view: written in place
        rewritten = card_values[crop_labels]
        region[np.isin(region, card_values[1:]) | (rewritten != 0)] = 0
        region += rewritten


def _boxes_around(
    labels: np.ndarray, values: list[int], spacing_mm: tuple[float, float, float], margin_mm: float
) -> list[tuple[slice, ...]]:
    """The index boxes around the voxels with one of ``values``: each structure's box grown by ``margin_mm`` and kept
    inside the map, boxes within ``SEPARATE_CROPS_APART_MM`` of each other merged into one; empty where none is
    found."""
    boxes = label_boxes(labels)
    found = [boxes[v - 1] for v in values if 0 < v <= len(boxes) and boxes[v - 1] is not None]
    margins = [int(np.ceil(margin_mm / spacing)) for spacing in spacing_mm]
    apart = [SEPARATE_CROPS_APART_MM / spacing for spacing in spacing_mm]
    crops: list[tuple[slice, ...]] = []
    for box in found:
        crop = tuple(
            slice(max(b.start - m, 0), min(b.stop + m, size))
            for b, m, size in zip(box, margins, labels.shape, strict=True)
        )
        near = [other for other in crops if _near(crop, other, apart)]
        while near:  # a merged crop may reach crops that were apart from its parts
            for other in near:
                crops.remove(other)
                crop = union_box([crop, other])
            near = [other for other in crops if _near(crop, other, apart)]
        crops.append(crop)
    return sorted(crops, key=lambda crop: tuple(s.start for s in crop))


def _near(a: tuple[slice, ...], b: tuple[slice, ...], apart_voxels: list[float]) -> bool:
    """Whether two boxes are no more than ``apart_voxels`` apart along every axis (overlapping counts as near)."""
    gaps = [max(x.start - y.stop, y.start - x.stop) for x, y in zip(a, b, strict=True)]
    return all(gap <= limit for gap, limit in zip(gaps, apart_voxels, strict=True))


def segment_volume(
    volume: Volume,
    package: ModelPackage,
    *,
    progress: Callable[[int, int], None] | None = None,
    **options,
) -> SegmentationResult:
    """One-off segmentation (``options`` go to ``Segmenter``); build a ``Segmenter`` once to segment many volumes."""
    return Segmenter(package, **options).segment(volume, progress=progress)
