"""A deterministic, hand-built "threshold segmenter" model package for tests: no torch, no training.

Its ONNX graph is one 1×1×1 convolution on the windowed intensity ``x = (HU - wmin) / (wmax - wmin)`` (clipped to
[0, 1] by the card's preprocessing) giving three logits: background ``0``, ``soft_tissue`` ``a (x - t1)`` and
``bone`` ``2a (x - (t1 + t2) / 2)``. The argmax is then class 0 below ``t1``, class 1 on ``[t1, t2)`` and class 2 from
``t2`` on (``s2 - s1 = a (x - t2)``), exactly what ``threshold_labels`` gives for HU values. Every layer's tests can
run the whole serving path (preprocess, sliding window, argmax, clean-up, back to the source grid) on it and know
the answer.

``onnx`` is imported inside the builder: it is a test and training dependency, not a serving one.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from twin_imaging.models.card import (
    CodedConcept,
    InferenceSpec,
    IntensitySpec,
    ModelCard,
    OnnxFile,
    PreprocessingSpec,
    RefinementStage,
    StructureSpec,
    TrainingRecord,
)
from twin_imaging.models.package import ModelPackage, write_model_package

THRESHOLD_OPSET = 17
_LOGIT_SCALE = 100.0  # ``a``: a 0.01 step in windowed intensity (6 HU in the default window) is one logit
_CREATED = datetime(2025, 1, 1, tzinfo=UTC)  # fixed, so the same arguments write the same bytes

_ANATOMICAL_STRUCTURE = CodedConcept(value="123037004", scheme="SCT", meaning="Anatomical Structure")
THRESHOLD_STRUCTURES: dict[int, tuple[str, CodedConcept, tuple[int, int, int]]] = {
    1: ("soft_tissue", CodedConcept(value="87784001", scheme="SCT", meaning="Soft tissue"), (220, 110, 90)),
    2: ("bone", CodedConcept(value="272673000", scheme="SCT", meaning="Bone"), (241, 214, 145)),
}


def threshold_labels(hu: np.ndarray, thresholds_hu: Sequence[float] = (-30.0, 130.0)) -> np.ndarray:
    """The threshold segmenter's classes for HU values: 0 below ``t1``, 1 on ``[t1, t2)``, 2 from ``t2`` (uint8)."""
    low, high = _check_thresholds(thresholds_hu)
    hu = np.asarray(hu)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[hu >= low] = 1
    labels[hu >= high] = 2
    return labels


def write_threshold_model_package(
    folder: str | os.PathLike,
    *,
    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0),
    patch_size_voxels: tuple[int, int, int] = (32, 32, 32),
    window_hu: tuple[float, float] = (-250.0, 350.0),
    thresholds_hu: tuple[float, float] = (-30.0, 130.0),
    keep_largest_component: bool | Collection[str] = False,
    attached_to: Mapping[str, Collection[str]] | None = None,
    refine_around: Collection[str] = (),
    refine_thresholds_hu: tuple[float, float] = (0.0, 200.0),
    refine_margin_mm: float = 6.0,
    model_id: str = "threshold_test",
) -> ModelPackage:
    """Write the threshold segmenter as a model package (card.json + ``{model_id}.onnx``) into ``folder``.

    ``keep_largest_component``: True for both structures, or the names of those that keep only their largest
    component. ``attached_to``: structure → the structures its components must touch (e.g. bone → soft tissue).
    ``refine_around``: make it a cascade whose refinement stage (the same network with ``refine_thresholds_hu``)
    relabels both structures in the box around these structures plus ``refine_margin_mm``.
    The thresholds must lie strictly inside the window.
    """
    low, high = _check_thresholds(thresholds_hu)
    window_min, window_max = (float(v) for v in window_hu)
    if not window_min < low < high < window_max:
        raise ValueError(f"thresholds {thresholds_hu} must lie strictly inside the window {window_hu}")
    names = {name for name, _, _ in THRESHOLD_STRUCTURES.values()}
    if isinstance(keep_largest_component, bool):
        largest = names if keep_largest_component else set()
    else:
        largest = set(keep_largest_component)
        if not largest <= names:
            raise ValueError(f"keep_largest_component names unknown structures: {sorted(largest - names)}")

    card = ModelCard(
        model_id=model_id,
        version="1.0.0",
        modality="CT",
        title="Threshold segmenter (tests only)",
        description=(
            f"A hand-built 1x1x1 convolution that labels soft tissue (HU in [{low:g}, {high:g})) and bone "
            f"(HU >= {high:g}) by thresholding the windowed intensity. Deterministic; its output is known exactly."
        ),
        intended_use="tests only",
        out_of_scope=("Any real image analysis.",),
        limitations=("Thresholds intensities; knows no anatomy.",),
        structures=tuple(
            StructureSpec(
                label=label,
                name=name,
                category=_ANATOMICAL_STRUCTURE,
                type=concept,
                color_rgb=colour,
                keep_largest_component=name in largest,
                attached_to=tuple((attached_to or {}).get(name, ())),
            )
            for label, (name, concept, colour) in THRESHOLD_STRUCTURES.items()
        ),
        preprocessing=PreprocessingSpec(
            spacing_mm=tuple(float(s) for s in spacing_mm),
            intensity=IntensitySpec(window_min_hu=window_min, window_max_hu=window_max, clip=True),
        ),
        inference=InferenceSpec(
            num_classes=3,
            patch_size_voxels=tuple(int(p) for p in patch_size_voxels),
            divisible_by=1,  # a 1x1x1 convolution takes any size
        ),
        training=TrainingRecord(
            data=(),
            recipe="twin_imaging/testing/tiny_model.py",
            network="one 1x1x1 Conv3d, 1 -> 3 channels, weights set by hand from the thresholds (not trained)",
            parameters=6,
            max_steps=0,
            seed=0,
            duration_s=0.0,
            hardware="none: hand-built, not trained",
        ),
        onnx=OnnxFile(file=f"{model_id}.onnx", sha256="0" * 64, size_bytes=0, opset=THRESHOLD_OPSET),
        created=_CREATED,
    )
    if refine_around:
        refine_low, refine_high = _check_thresholds(refine_thresholds_hu)
        if not window_min < refine_low < refine_high < window_max:
            raise ValueError(f"thresholds {refine_thresholds_hu} must lie strictly inside the window {window_hu}")
        stage = RefinementStage(
            around=tuple(refine_around),
            margin_mm=refine_margin_mm,
            structures=tuple(name for name, _, _ in THRESHOLD_STRUCTURES.values()),
            preprocessing=card.preprocessing,
            inference=card.inference,
            onnx=card.onnx.model_copy(update={"file": f"{model_id}_refinement.onnx"}),
            training=card.training,
        )
        card = card.model_copy(update={"refinement": stage})

    def parameters(thresholds: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
        return _conv_parameters(tuple((t - window_min) / (window_max - window_min) for t in thresholds))

    with tempfile.TemporaryDirectory(prefix="threshold_model_") as scratch:
        onnx_path = Path(scratch) / card.onnx.file
        _write_onnx(onnx_path, *parameters((low, high)), graph_name=model_id)
        refinement_path = None
        if card.refinement is not None:
            refinement_path = Path(scratch) / card.refinement.onnx.file
            _write_onnx(refinement_path, *parameters(_check_thresholds(refine_thresholds_hu)), graph_name=model_id)
        return write_model_package(folder, card, onnx_path, refinement_onnx_source=refinement_path)


def _check_thresholds(thresholds_hu: Sequence[float]) -> tuple[float, float]:
    low, high = (float(t) for t in thresholds_hu)
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"thresholds_hu must be two finite, increasing values, got {tuple(thresholds_hu)}")
    return low, high


def _conv_parameters(thresholds_x: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Weights (3, 1, 1, 1, 1) and biases (3,) of s0 = 0, s1 = a (x - t1), s2 = 2a (x - (t1 + t2) / 2)."""
    t1, t2 = thresholds_x
    a = _LOGIT_SCALE
    weights = np.array([0.0, a, 2.0 * a], dtype=np.float32).reshape(3, 1, 1, 1, 1)
    biases = np.array([0.0, -a * t1, -a * (t1 + t2)], dtype=np.float32)
    return weights, biases


def _write_onnx(path: Path, weights: np.ndarray, biases: np.ndarray, *, graph_name: str) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, "x", "y", "z"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3, "x", "y", "z"])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["image", "weight", "bias"], ["logits"], kernel_shape=[1, 1, 1])],
        graph_name,
        [image],
        [logits],
        initializer=[numpy_helper.from_array(weights, "weight"), numpy_helper.from_array(biases, "bias")],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", THRESHOLD_OPSET)], producer_name="twin_imaging.testing"
    )
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
