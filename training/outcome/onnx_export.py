"""The outcome ensemble as one ONNX graph (built by hand: it is a few linear maps, and serving needs only ONNX
Runtime): features (N, F) → standardised → per target and bootstrap member a calibrated logistic model.

Outputs: ``probabilities`` (N, T, 1 + B): column 0 the model fitted on all data, then B bootstrap refits (their
spread is the prediction interval); ``contributions`` (N, T, F): each feature's share of the point model's logit,
relative to the training mean.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from training.outcome.linear import LinearModel

OPSET = 17


def export_outcome_onnx(models: list[list[LinearModel]], path: Path) -> Path:
    """``models[t][0]`` is target t's point model, ``models[t][1:]`` its bootstrap refits; all share one scaler."""
    point = models[0][0]
    n_features = len(point.feature_names)
    n_targets, n_members = len(models), len(models[0])
    for per_target in models:
        for model in per_target:
            if not (np.allclose(model.mean, point.mean) and np.allclose(model.scale, point.scale)):
                raise ValueError("every model of the ensemble must share the same standardisation")
    weights = np.stack([np.stack([m.weights for m in per_target], axis=1) for per_target in models], axis=1)
    weights = weights.reshape(n_features, n_targets * n_members).astype(np.float32)  # (F, T*B)
    bias = np.array([[m.bias for m in per_target] for per_target in models], dtype=np.float32).reshape(-1)
    point_weights = np.stack([per_target[0].weights for per_target in models]).astype(np.float32)  # (T, F)

    initializers = [
        numpy_helper.from_array(point.mean.astype(np.float32), "mean"),
        numpy_helper.from_array(point.scale.astype(np.float32), "scale"),
        numpy_helper.from_array(weights, "weights"),
        numpy_helper.from_array(bias, "bias"),
        numpy_helper.from_array(point_weights, "point_weights"),
        numpy_helper.from_array(np.array([-1, n_targets, n_members], dtype=np.int64), "logit_shape"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"),
    ]
    nodes = [
        helper.make_node("Sub", ["features", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "scale"], ["standardised"]),
        helper.make_node("MatMul", ["standardised", "weights"], ["product"]),
        helper.make_node("Add", ["product", "bias"], ["flat_logits"]),
        helper.make_node("Reshape", ["flat_logits", "logit_shape"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["probabilities"]),
        helper.make_node("Unsqueeze", ["standardised", "axis_1"], ["standardised_3d"]),
        helper.make_node("Mul", ["standardised_3d", "point_weights"], ["contributions"]),
    ]
    graph = helper.make_graph(
        nodes,
        "nephrectomy_outcomes",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", n_features])],
        [
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", n_targets, n_members]),
            helper.make_tensor_value_info("contributions", TensorProto.FLOAT, ["batch", n_targets, n_features]),
        ],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="twin-imaging")
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
