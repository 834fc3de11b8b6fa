"""Networks: the official Keras graphs rebuilt in PyTorch, and our own U-Net.

Every network maps (N, 1, D, H, W) float to (N, 1, D, H, W); D is array axis 0 of the map.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import ModelError
from .keras_graph import KerasGraphNetwork
from .unet import UNet

__all__ = ["KerasGraphNetwork", "UNet", "build_network", "count_parameters"]


def build_network(architecture: dict[str, Any]) -> nn.Module:
    """The network an architecture dict describes: {"type": "keras_graph", "model_config": ...} or {"type": "unet", ...}."""
    if not isinstance(architecture, dict):
        raise ModelError("the model's architecture is not a JSON object; re-import the model")
    kind = architecture.get("type")
    if kind == "keras_graph":
        if "model_config" not in architecture:
            raise ModelError("the keras_graph architecture has no model_config; re-import the model")
        return KerasGraphNetwork(architecture["model_config"])
    if kind == "unet":
        return UNet.from_architecture(architecture)
    raise ModelError(f"unknown network type {kind!r} (known: keras_graph, unet); upgrade deepemhancer or re-import")


def count_parameters(module: nn.Module) -> int:
    """Number of trainable and frozen parameter values."""
    return sum(p.numel() for p in module.parameters())
