"""Intensity windowing: the linear map, with and without clipping, and agreement with MONAI's ScaleIntensityRange."""

from __future__ import annotations

import numpy as np
import pytest

from twin_imaging.models.card import IntensitySpec
from twin_imaging.transforms import scale_intensity

HU = np.array([-1024, -1000, -200, -175, 50, 299, 300, 301, 2000, 3071], dtype=np.int16)


def _linear(hu: np.ndarray, spec: IntensitySpec) -> np.ndarray:
    fraction = (hu.astype(np.float64) - spec.window_min_hu) / (spec.window_max_hu - spec.window_min_hu)
    return spec.output_min + fraction * (spec.output_max - spec.output_min)


@pytest.mark.parametrize(
    "spec",
    [
        IntensitySpec(window_min_hu=-200, window_max_hu=300),
        IntensitySpec(window_min_hu=-1000, window_max_hu=1000, output_min=-1.0, output_max=1.0),
        IntensitySpec(window_min_hu=-175, window_max_hu=250, output_min=0.0, output_max=255.0),
    ],
)
def test_clipped_window_maps_linearly_then_clips(spec):
    out = scale_intensity(HU, spec)

    assert out.dtype == np.float32 and out.shape == HU.shape
    expected = np.clip(_linear(HU, spec), spec.output_min, spec.output_max)
    np.testing.assert_allclose(out, expected, rtol=1e-6, atol=1e-6 * (spec.output_max - spec.output_min))
    assert out[spec.window_min_hu == HU] == pytest.approx(spec.output_min)
    assert out.min() == spec.output_min and out.max() == spec.output_max


def test_unclipped_window_extrapolates():
    spec = IntensitySpec(window_min_hu=-200, window_max_hu=300, clip=False)
    out = scale_intensity(HU, spec)

    np.testing.assert_allclose(out, _linear(HU, spec), rtol=1e-6)
    assert out[HU == -1000][0] == pytest.approx(-1.6) and out[HU == 2000][0] == pytest.approx(4.4)


def test_input_is_left_alone_unless_written_in_place():
    spec = IntensitySpec(window_min_hu=-200, window_max_hu=300)
    image = HU.astype(np.float32)
    copy = image.copy()

    out = scale_intensity(image, spec)
    np.testing.assert_array_equal(image, copy)
    same = scale_intensity(image, spec, out=image)
    assert same is image
    np.testing.assert_array_equal(image, out)
    with pytest.raises(ValueError, match="float32"):
        scale_intensity(HU, spec, out=np.empty(HU.shape, np.float64))


@pytest.mark.parametrize("clip", [True, False])
def test_agrees_with_monai_scale_intensity_range(clip):
    torch = pytest.importorskip("torch")
    transforms = pytest.importorskip("monai.transforms")
    spec = IntensitySpec(window_min_hu=-160.5, window_max_hu=240.25, output_min=-1.0, output_max=2.0, clip=clip)
    hu = np.random.default_rng(3).normal(40.0, 400.0, size=(1, 20, 30, 10)).astype(np.float32)

    reference = transforms.ScaleIntensityRange(
        spec.window_min_hu, spec.window_max_hu, spec.output_min, spec.output_max, clip=spec.clip
    )(torch.as_tensor(hu))

    np.testing.assert_allclose(scale_intensity(hu, spec), np.asarray(reference), rtol=0, atol=1e-6)
