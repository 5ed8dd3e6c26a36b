"""Every network the configs can name builds, runs at the sizes it declares, and gives one channel per class."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from training.networks import NETWORKS, build_network, count_parameters, divisible_by  # noqa: E402

SMALL = {
    "unet": {"channels": (4, 8, 16), "strides": (2, 2), "num_res_units": 1},
    "segresnet": {"init_filters": 8},
    "dynunet": {"kernel_size": (3, 3, 3), "strides": (1, 2, 2), "filters": (8, 16, 32)},
    "swinunetr": {"feature_size": 12, "depths": (1, 1, 1, 1)},
}


@pytest.mark.parametrize("name", NETWORKS)
def test_each_network_builds_and_keeps_the_spatial_size(name):
    torch.manual_seed(0)
    network = build_network(name, in_channels=1, out_channels=4, kwargs=SMALL[name]).eval()
    factor = divisible_by(name, SMALL[name])
    size = (factor, factor, 2 * factor)
    with torch.no_grad():
        out = network(torch.zeros((1, 1, *size)))
    assert out.shape == (1, 4, *size)
    assert count_parameters(network) > 0


def test_divisible_by_follows_the_strides():
    assert divisible_by("unet", {"strides": (2, 2, 2, 2)}) == 16
    assert divisible_by("unet", {"strides": (2, 2)}) == 4
    assert divisible_by("dynunet", {"strides": (1, 2, 2, 2)}) == 8
    assert divisible_by("segresnet", {"blocks_down": (1, 2, 2, 4)}) == 8


def test_an_unknown_network_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="unet, segresnet, dynunet, swinunetr"):
        build_network("resnet", in_channels=1, out_channels=2)
