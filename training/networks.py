"""Segmentation networks by name, from MONAI: ``unet``, ``segresnet``, ``dynunet``, ``swinunetr``.

A config names the network and passes its keyword arguments; channels in and out come from the model's structures.
``divisible_by`` says which spatial sizes each network accepts (patches and exported ONNX inputs must be multiples).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from monai.networks import nets
from torch import nn

NETWORKS = ("unet", "segresnet", "dynunet", "swinunetr")


def build_network(
    name: str, *, in_channels: int, out_channels: int, kwargs: Mapping[str, Any] | None = None
) -> nn.Module:
    kwargs = dict(kwargs or {})
    if name == "unet":
        kwargs.setdefault("channels", (16, 32, 64, 128, 256))
        kwargs.setdefault("strides", (2, 2, 2, 2))
        kwargs.setdefault("num_res_units", 2)
        return nets.UNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kwargs)
    if name == "segresnet":
        kwargs.setdefault("init_filters", 16)
        return nets.SegResNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kwargs)
    if name == "dynunet":
        kwargs.setdefault("kernel_size", (3, 3, 3, 3, 3))
        kwargs.setdefault("strides", (1, 2, 2, 2, 2))
        kwargs.setdefault("upsample_kernel_size", kwargs["strides"][1:])
        return nets.DynUNet(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kwargs)
    if name == "swinunetr":
        kwargs.setdefault("feature_size", 24)
        return nets.SwinUNETR(spatial_dims=3, in_channels=in_channels, out_channels=out_channels, **kwargs)
    raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")


def divisible_by(name: str, kwargs: Mapping[str, Any] | None = None) -> int:
    """The factor every spatial input size must be a multiple of."""
    kwargs = dict(kwargs or {})
    if name == "unet":
        factor = 1
        for stride in kwargs.get("strides", (2, 2, 2, 2)):
            factor *= stride
        return factor
    if name == "segresnet":
        return 2 ** (len(kwargs.get("blocks_down", (1, 2, 2, 4))) - 1)
    if name == "dynunet":
        factor = 1
        for stride in kwargs.get("strides", (1, 2, 2, 2, 2)):
            factor *= stride if isinstance(stride, int) else max(stride)
        return factor
    if name == "swinunetr":
        return 32
    raise ValueError(f"unknown network {name!r}; choose one of {', '.join(NETWORKS)}")


def count_parameters(network: nn.Module) -> int:
    return sum(p.numel() for p in network.parameters())
