"""Sliding-window prediction: blending, progress, and agreement with MONAI's ``sliding_window_inference``.

torch and MONAI (the ``[train]`` extra) are imported only by the tests that compare against them, which skip where
they are not installed.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest

from twin_imaging.errors import ModelError
from twin_imaging.inference import (
    create_session,
    gaussian_importance_map,
    run_session,
    sliding_window_predict,
    window_starts,
)

PATCH = (32, 32, 32)


def _channel_mixer(seed: int, in_channels: int, out_channels: int):
    """A fixed random 1×1×1 convolution with bias: shift-invariant, so blending must give it back exactly."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(out_channels, in_channels)).astype(np.float32)
    bias = rng.normal(size=out_channels).astype(np.float32)

    def predict(batch: np.ndarray) -> np.ndarray:
        mixed = np.einsum("kc,bc...->bk...", weight, batch)
        return mixed + bias.reshape(1, -1, *([1] * (batch.ndim - 2)))

    return predict


def _position_dependent(patch: tuple[int, ...]):
    """A predictor whose output depends on where a voxel sits in its window, so window placement and weights matter."""
    rng = np.random.default_rng(7)
    ramp = rng.uniform(0.5, 2.0, size=patch).astype(np.float32)
    offset = rng.normal(size=patch).astype(np.float32)

    def predict(batch: np.ndarray) -> np.ndarray:
        first = batch[:, :1]
        return np.concatenate([first * ramp, np.sin(first) + offset, first**2 - ramp], axis=1).astype(np.float32)

    return predict


@pytest.mark.parametrize(
    ("shape", "overlap", "batch_size"),
    [
        ((2, 70, 57, 41), 0.25, 4),
        ((2, 70, 57, 41), 0.5, 1),
        ((1, 32, 33, 64), 0.6, 3),
        ((2, 20, 57, 9), 0.25, 2),  # smaller than the patch along two axes: padded, then cropped back
    ],
)
def test_shift_invariant_predictor_comes_back_unchanged(shape, overlap, batch_size):
    image = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    predict = _channel_mixer(2, shape[0], 3)
    result = sliding_window_predict(image, predict, patch_size=PATCH, overlap=overlap, batch_size=batch_size)
    expected = predict(image[None])[0]
    assert result.shape == (3, *shape[1:])
    assert result.dtype == np.float32
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)


def test_progress_counts_windows_and_batches_stay_small():
    image = np.random.default_rng(3).normal(size=(1, 70, 57, 41)).astype(np.float32)
    total = len(window_starts(image.shape[1:], PATCH, 0.5))
    calls: list[tuple[int, int]] = []
    batch_sizes: list[int] = []

    def predict(batch: np.ndarray) -> np.ndarray:
        batch_sizes.append(batch.shape[0])
        return batch

    sliding_window_predict(
        image, predict, patch_size=PATCH, overlap=0.5, batch_size=5, progress=lambda d, t: calls.append((d, t))
    )
    done = [d for d, _ in calls]
    assert total > 5
    assert all(t == total for _, t in calls)
    assert done == sorted(set(done)) and done[-1] == total
    assert done == list(np.cumsum(batch_sizes))
    assert max(batch_sizes) == 5 and sum(batch_sizes) == total


@pytest.mark.parametrize("concurrency", [2, 3])
def test_concurrent_windows_give_the_serial_result_bit_for_bit(concurrency):
    """Windows predicted by several threads at once, each a little late: the blending still runs in window order."""
    import threading
    import time

    image = np.random.default_rng(4).normal(size=(1, 70, 57, 41)).astype(np.float32)
    predict = _position_dependent(PATCH)
    serial = sliding_window_predict(image, predict, patch_size=PATCH, overlap=0.5, batch_size=1)
    threads: set[int] = set()
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def slow(batch: np.ndarray) -> np.ndarray:
        with lock:
            threads.add(threading.get_ident())
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        time.sleep(0.01 * (1 + int(batch[0, 0, 0, 0, 0] > 0)))  # uneven: later windows may finish first
        with lock:
            in_flight[0] -= 1
        return predict(batch)

    done: list[int] = []
    pooled = sliding_window_predict(
        image,
        slow,
        patch_size=PATCH,
        overlap=0.5,
        batch_size=1,
        concurrency=concurrency,
        progress=lambda d, t: done.append(d),
    )
    np.testing.assert_array_equal(pooled, serial)
    assert len(threads) > 1 and most[0] == concurrency  # really concurrent, and never more than asked
    assert done == sorted(done)


def test_one_window_at_a_time_runs_on_the_calling_thread():
    """Its thread-local state (torch.no_grad, a context variable) holds for the predictor."""
    import threading

    image = np.zeros((1, 40, 40, 40), dtype=np.float32)
    seen: set[int] = set()

    def predict(batch: np.ndarray) -> np.ndarray:
        seen.add(threading.get_ident())
        return batch

    sliding_window_predict(image, predict, patch_size=PATCH, overlap=0.5, batch_size=1)
    assert seen == {threading.get_ident()}


def test_a_failing_window_fails_the_prediction_with_its_error():
    image = np.zeros((1, 70, 57, 41), dtype=np.float32)
    calls = [0]

    def failing(batch: np.ndarray) -> np.ndarray:
        calls[0] += 1
        if calls[0] == 3:
            raise ModelError("the network failed on window 3")
        return batch

    with pytest.raises(ModelError, match="window 3"):
        sliding_window_predict(image, failing, patch_size=PATCH, overlap=0.5, batch_size=1, concurrency=2)
    total = len(window_starts(image.shape[1:], PATCH, 0.5))
    assert calls[0] < total  # the windows queued behind the failure were dropped


def test_window_starts_cover_the_image_in_order():
    starts = window_starts((70, 57, 41), PATCH, 0.25)
    assert starts == sorted(starts)  # the last axis moves fastest
    for axis, size in enumerate((70, 57, 41)):
        axis_starts = sorted({s[axis] for s in starts})
        assert axis_starts[0] == 0 and axis_starts[-1] == size - 32
        assert all(b - a <= 24 for a, b in itertools.pairwise(axis_starts))
    assert window_starts((32, 10, 64), PATCH, 0.5) == [(0, 0, 0), (0, 0, 16), (0, 0, 32)]


def test_gaussian_importance_map_shape_and_floor():
    weights = gaussian_importance_map((96, 96, 96))
    assert weights.shape == (96, 96, 96) and weights.dtype == np.float32
    assert weights.min() == np.float32(1e-3)  # the corners are floored
    assert weights[47, 47, 47] == weights.max()
    np.testing.assert_array_equal(weights, weights[::-1, ::-1, ::-1])


def test_bad_arguments():
    image = np.zeros((1, 40, 40, 40), np.float32)
    with pytest.raises(ValueError, match="overlap"):
        sliding_window_predict(image, lambda b: b, patch_size=PATCH, overlap=1.0)
    with pytest.raises(ValueError, match="channels"):
        sliding_window_predict(image[0], lambda b: b, patch_size=PATCH)
    with pytest.raises(ValueError, match="batch_size"):
        sliding_window_predict(image, lambda b: b, patch_size=PATCH, batch_size=0)
    with pytest.raises(ModelError, match="returned shape"):
        sliding_window_predict(image, lambda b: b[:, :, :16], patch_size=PATCH)


# ---- agreement with MONAI -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monai():
    pytest.importorskip("torch")
    return pytest.importorskip("monai")


@pytest.mark.parametrize(
    ("image_size", "patch", "overlap"),
    [
        ((70, 57, 41), (32, 32, 32), 0.25),
        ((70, 57, 41), (32, 32, 32), 0.5),
        ((256, 256, 128), (96, 96, 96), 0.25),
        ((32, 33, 100), (32, 32, 32), 0.9),
        ((5, 7, 9), (3, 4, 5), 0.0),
        ((64, 20, 50), (32, 32, 32), 0.25),  # smaller than the patch along one axis
        ((100, 61, 47), (32, 24, 20), 0.3),  # a step that int() rounds down
    ],
)
def test_window_starts_match_monai(monai, image_size, patch, overlap):
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    padded = tuple(max(s, p) for s, p in zip(image_size, patch, strict=True))  # MONAI pads before placing windows
    interval = _get_scan_interval(padded, patch, 3, (overlap,) * 3)
    expected = [tuple(s.start for s in window) for window in dense_patch_slices(padded, patch, interval)]
    assert window_starts(image_size, patch, overlap) == expected


@pytest.mark.parametrize("patch", [(32, 32, 32), (96, 96, 96), (17, 40, 5), (1, 2, 3), (128, 64, 33)])
@pytest.mark.parametrize("sigma_scale", [0.125, 0.3])
def test_gaussian_importance_map_matches_monai(monai, patch, sigma_scale):
    from monai.data.utils import compute_importance_map

    expected = compute_importance_map(patch, mode="gaussian", sigma_scale=sigma_scale).numpy()
    # torch's float32 exp may round a last bit differently
    np.testing.assert_allclose(gaussian_importance_map(patch, sigma_scale), expected, rtol=1e-6, atol=0)


@pytest.mark.parametrize(
    ("shape", "overlap", "batch_size"),
    [
        ((1, 70, 57, 41), 0.25, 1),
        ((1, 70, 57, 41), 0.5, 3),
        ((2, 70, 19, 41), 0.25, 3),  # an odd shortfall: the extra padded voxel goes after
        ((1, 17, 20, 9), 0.5, 2),
    ],
)
def test_blending_matches_monai(monai, shape, overlap, batch_size):
    import torch
    from monai.inferers import sliding_window_inference

    image = np.random.default_rng(4).normal(size=shape).astype(np.float32)
    predict = _position_dependent(PATCH)
    ours = sliding_window_predict(image, predict, patch_size=PATCH, overlap=overlap, batch_size=batch_size)
    theirs = sliding_window_inference(
        torch.from_numpy(image[None]),
        PATCH,
        batch_size,
        lambda batch: torch.from_numpy(predict(batch.numpy())),
        overlap=overlap,
        mode="gaussian",
        sigma_scale=0.125,
        padding_mode="constant",
        cval=0.0,
    )
    np.testing.assert_allclose(ours, theirs[0].numpy(), rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def unet(monai, tmp_path_factory):
    """A small MONAI UNet with fixed weights, and the same network exported to ONNX."""
    import torch
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    network = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(8, 16, 32), strides=(2, 2)).eval()
    path = tmp_path_factory.mktemp("onnx") / "unet.onnx"
    spatial = {0: "batch", 2: "x", 3: "y", 4: "z"}
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer warnings
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (torch.zeros(1, 1, *PATCH),),
            str(path),
            dynamo=False,
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": spatial, "logits": spatial},
            opset_version=17,
        )
    return network, path


@pytest.mark.parametrize(
    ("shape", "overlap", "batch_size"),
    [
        ((70, 57, 41), 0.25, 1),
        ((70, 57, 41), 0.25, 3),
        ((70, 57, 41), 0.5, 1),
        ((70, 57, 41), 0.5, 3),
        ((70, 19, 41), 0.25, 3),  # smaller than the patch along one axis (by an odd count)
    ],
)
def test_onnx_unet_matches_monai_with_torch(unet, shape, overlap, batch_size):
    import torch
    from monai.inferers import sliding_window_inference

    network, onnx_path = unet
    session = create_session(onnx_path, providers="CPUExecutionProvider")
    image = np.random.default_rng(5).normal(size=(1, *shape)).astype(np.float32)

    ours = sliding_window_predict(
        image,
        lambda batch: run_session(session, batch, input_name="image", output_name="logits"),
        patch_size=PATCH,
        overlap=overlap,
        batch_size=batch_size,
    )
    with torch.no_grad():
        theirs = sliding_window_inference(
            torch.from_numpy(image[None]), PATCH, batch_size, network, overlap=overlap, mode="gaussian"
        )[0].numpy()
    assert ours.shape == theirs.shape == (3, *shape)
    assert np.abs(theirs).max() > 0.01  # the network's output is not trivially zero
    assert np.abs(ours - theirs).max() <= 1e-4
