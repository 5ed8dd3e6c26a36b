"""ONNX Runtime sessions: provider choice, clear errors on bad model files, and checked runs."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort
import pytest

from twin_imaging.errors import ModelError
from twin_imaging.inference import choose_providers, create_session, run_session

CPU = "CPUExecutionProvider"


@pytest.fixture(scope="module")
def double_model(tmp_path_factory) -> str:
    """A tiny ONNX model: logits = 2 * image + 1, image (batch, 1, x, y, z) float32."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, "x", "y", "z"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, "x", "y", "z"])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["image", "two"], ["doubled"]),
            helper.make_node("Add", ["doubled", "one"], ["logits"]),
        ],
        "double",
        [image],
        [logits],
        initializer=[two, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("models") / "double.onnx"
    onnx.save(model, path)
    return str(path)


def test_auto_ends_with_cpu_and_uses_only_available_providers():
    chosen = choose_providers("auto")
    assert chosen[-1] == CPU
    assert set(chosen) <= set(ort.get_available_providers())
    assert chosen.count(CPU) == 1


def test_auto_prefers_tensorrt_then_cuda(monkeypatch):
    available = ["AzureExecutionProvider", "CUDAExecutionProvider", CPU, "TensorrtExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    assert choose_providers("auto") == ["TensorrtExecutionProvider", "CUDAExecutionProvider", CPU]
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    assert choose_providers() == [CPU]


def test_explicit_providers_keep_order(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU, "CUDAExecutionProvider"])
    assert choose_providers(" cpuexecutionprovider , CUDAExecutionProvider") == [CPU, "CUDAExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider", CPU, CPU]) == ["CUDAExecutionProvider", CPU]


def test_unknown_provider_is_named():
    with pytest.raises(ModelError, match="NoSuchExecutionProvider") as caught:
        choose_providers("NoSuchExecutionProvider,CPUExecutionProvider")
    assert CPU in str(caught.value)  # lists what is available
    with pytest.raises(ModelError, match="no ONNX Runtime provider"):
        choose_providers(" , ")


def test_unavailable_provider_is_named(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: [CPU])
    with pytest.raises(ModelError, match=r"CUDAExecutionProvider.*not available.*CPUExecutionProvider"):
        choose_providers("CUDAExecutionProvider")


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match=r"absent\.onnx"):
        create_session(tmp_path / "absent.onnx")
    with pytest.raises(ModelError, match="not found"):
        create_session(tmp_path)  # a folder is not a model file


def test_garbage_model_file(tmp_path):
    path = tmp_path / "garbage.onnx"
    path.write_bytes(b"\x08\x07this is not a protobuf" + bytes(range(256)) * 4)
    with pytest.raises(ModelError, match=r"garbage\.onnx is not a valid ONNX model"):
        create_session(path)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match=r"empty\.onnx"):
        create_session(empty)


def test_create_session_logs_providers_and_uses_settings(double_model, monkeypatch, caplog):
    monkeypatch.setenv("TWIN_IMAGING_ONNX_PROVIDERS", "CPUExecutionProvider")
    monkeypatch.setenv("TWIN_IMAGING_ONNX_THREADS", "1")
    with caplog.at_level(logging.INFO, logger="twin_imaging.inference.sessions"):
        session = create_session(double_model)
    assert session.get_providers() == [CPU]
    assert session.get_session_options().intra_op_num_threads == 1
    assert session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert any("double.onnx" in r.getMessage() and CPU in r.getMessage() for r in caplog.records)

    session = create_session(double_model, intra_op_threads=2)  # an argument wins over the settings
    assert session.get_session_options().intra_op_num_threads == 2


def test_bad_provider_setting_is_a_model_error(double_model, monkeypatch):
    monkeypatch.setenv("TWIN_IMAGING_ONNX_PROVIDERS", "MadeUpExecutionProvider")
    with pytest.raises(ModelError, match="MadeUpExecutionProvider"):
        create_session(double_model)


def test_run_session(double_model):
    session = create_session(double_model, providers=[CPU])
    batch = np.random.default_rng(0).normal(size=(2, 1, 5, 6, 7)).astype(np.float32)
    result = run_session(session, batch, input_name="image", output_name="logits")
    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, 2 * batch + 1)


def test_run_session_checks_its_input(double_model):
    session = create_session(double_model, providers=[CPU])
    good = np.zeros((1, 1, 4, 4, 4), dtype=np.float32)
    with pytest.raises(ModelError, match=r"float32.*float64"):
        run_session(session, good.astype(np.float64), input_name="image", output_name="logits")
    with pytest.raises(ModelError, match="rank 5"):
        run_session(session, good[0], input_name="image", output_name="logits")
    with pytest.raises(ModelError, match="size 1 on axis 1"):
        run_session(session, np.zeros((1, 3, 4, 4, 4), np.float32), input_name="image", output_name="logits")
    with pytest.raises(ModelError, match=r"no input 'ct'.*image"):
        run_session(session, good, input_name="ct", output_name="logits")
    with pytest.raises(ModelError, match=r"no output 'probabilities'.*logits"):
        run_session(session, good, input_name="image", output_name="probabilities")
