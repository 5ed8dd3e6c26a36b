"""ONNX Runtime sessions: provider choice, loading with clear errors, and one checked call per batch.

The serving path runs networks here and nowhere else; it never imports torch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from twin_imaging.errors import ModelError
from twin_imaging.settings import get_settings

logger = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
# Preferred order for "auto": the fastest accelerator first, CPU always last.
_AUTO_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def choose_providers(requested: str | Sequence[str] = "auto") -> list[str]:
    """ONNX Runtime provider names to use, in order of preference.

    ``"auto"`` takes TensorRT and CUDA where this ONNX Runtime build has them, then CPU. Otherwise ``requested`` is a
    comma list (or a sequence) of provider names, matched case-insensitively and kept in order; an unknown or
    unavailable name raises ModelError.
    """
    available = ort.get_available_providers()
    parts = requested.split(",") if isinstance(requested, str) else [str(n) for n in requested]
    names = [n.strip() for n in parts if n.strip()]
    if len(names) == 1 and names[0].lower() == "auto":
        return [p for p in _AUTO_ORDER if p in available] + [CPU_PROVIDER]
    if not names:
        raise ModelError(f"no ONNX Runtime provider requested; available: {', '.join(available)}")
    known = {p.lower(): p for p in ort.get_all_providers()}
    chosen: list[str] = []
    for name in names:
        canonical = known.get(name.lower())
        if canonical is None:
            raise ModelError(f"unknown ONNX Runtime provider {name!r}; available: {', '.join(available)}")
        if canonical not in available:
            raise ModelError(
                f"ONNX Runtime provider {canonical} is not available in this installation; "
                f"available: {', '.join(available)}"
            )
        if canonical not in chosen:
            chosen.append(canonical)
    return chosen


def create_session(
    onnx_path: str | os.PathLike,
    *,
    providers: str | Sequence[str] | None = None,
    intra_op_threads: int | None = None,
) -> ort.InferenceSession:
    """An inference session on ``onnx_path`` with all graph optimizations on.

    ``providers`` and ``intra_op_threads`` default to the settings ``onnx_providers`` and ``onnx_threads``.
    A missing file or one that is not a valid ONNX model raises ModelError.
    """
    path = Path(onnx_path)
    settings = get_settings()
    wanted = choose_providers(settings.onnx_providers if providers is None else providers)
    threads = settings.onnx_threads if intra_op_threads is None else intra_op_threads
    if not path.is_file():
        raise ModelError(f"ONNX model not found: {path}")
    if threads is not None and threads < 1:
        raise ValueError(f"intra_op_threads must be at least 1, got {threads}")

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
    except Exception as exc:  # ONNX Runtime raises its own exception types (InvalidProtobuf, Fail, ...)
        raise ModelError(f"{path.name} is not a valid ONNX model: {exc}") from None

    used = session.get_providers()
    logger.info("ONNX model %s runs on %s (intra-op threads: %s)", path.name, ", ".join(used), threads or "default")
    missing = [p for p in wanted if p not in used]
    if missing:
        logger.warning("ONNX model %s: requested provider(s) %s could not be used", path.name, ", ".join(missing))
    return session


def run_session(session: ort.InferenceSession, batch: np.ndarray, *, input_name: str, output_name: str) -> np.ndarray:
    """Run ``session`` on one float32 ``batch`` and return the float32 output ``output_name``."""
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = [o.name for o in session.get_outputs()]
    if input_name not in inputs:
        raise ModelError(f"the model has no input {input_name!r}; its inputs are {', '.join(inputs)}")
    if output_name not in outputs:
        raise ModelError(f"the model has no output {output_name!r}; its outputs are {', '.join(outputs)}")
    spec = inputs[input_name]
    if spec.type != "tensor(float)":
        raise ModelError(f"model input {input_name!r} is {spec.type}; only float32 inputs are supported")
    if not isinstance(batch, np.ndarray) or batch.dtype != np.float32:
        kind = batch.dtype if isinstance(batch, np.ndarray) else type(batch).__name__
        raise ModelError(f"input {input_name!r} must be a float32 array, got {kind}")
    if batch.ndim != len(spec.shape):
        raise ModelError(
            f"model input {input_name!r} has rank {len(spec.shape)} (shape {_format_shape(spec.shape)}); "
            f"got an array of shape {batch.shape}"
        )
    for axis, (want, got) in enumerate(zip(spec.shape, batch.shape, strict=True)):
        if isinstance(want, int) and want > 0 and want != got:
            raise ModelError(
                f"model input {input_name!r} needs size {want} on axis {axis} (shape {_format_shape(spec.shape)}); "
                f"got an array of shape {batch.shape}"
            )
    try:
        (result,) = session.run([output_name], {input_name: np.ascontiguousarray(batch)})
    except Exception as exc:  # ONNX Runtime's own exception types
        raise ModelError(f"the model failed on a batch of shape {batch.shape}: {exc}") from None
    return np.asarray(result, dtype=np.float32)


def _format_shape(shape: Sequence[object]) -> str:
    return "(" + ", ".join(str(d) if d is not None else "?" for d in shape) + ")"
