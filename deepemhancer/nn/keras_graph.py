"""Build a PyTorch network from a Keras 2 functional `model_config` (the graph stored in official files).

Only the layer kinds of the official DeepEMhancer models are known: InputLayer, Conv3D,
Conv3DTranspose, GroupNormalization (keras-contrib), PReLU, Concatenate. Anything else is
refused with a ModelError naming it. Modules live in `self.layers[<keras layer name>]`, so
state-dict keys are `layers.<keras name>.<weight|bias>`.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError
from .layers import KerasGroupNormalization, TFSameConv3d, TFSameConvTranspose3d, keras_prelu

ACTIVATIONS = ("linear", "relu")
CHANNEL_AXES = (-1, 4)  # channels-last axis of a 5-D Keras tensor, either spelling


@dataclass(frozen=True)
class GraphNode:
    """One Keras layer as the forward pass needs it."""

    name: str
    kind: str
    sources: tuple[str, ...]
    activation: str = "linear"


def _layer_list(model_config: dict[str, Any]) -> tuple[list[dict], str, str]:
    """The layers, the input layer name and the output layer name of a one-in, one-out Keras model."""
    if not isinstance(model_config, dict) or model_config.get("class_name") not in ("Model", "Functional"):
        raise ModelError("the model graph is not a Keras functional model (class Model); cannot build it")
    config = model_config.get("config") or {}
    layers, inputs, outputs = config.get("layers"), config.get("input_layers"), config.get("output_layers")
    if not isinstance(layers, list) or not inputs or not outputs:
        raise ModelError("the Keras model graph lacks layers, input_layers or output_layers; the file is corrupt")
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"the Keras model has {len(inputs)} inputs and {len(outputs)} outputs; exactly one each is supported")
    return layers, str(inputs[0][0]), str(outputs[0][0])


def _sources(layer: dict[str, Any]) -> tuple[str, ...]:
    """Names of the layers feeding `layer`, in inbound-node order (which sets Concatenate's order)."""
    nodes = layer.get("inbound_nodes", [])
    if not nodes:
        return ()
    if len(nodes) != 1:
        raise ModelError(f"layer {layer.get('name')} is called {len(nodes)} times (shared layer); not supported")
    sources = []
    for entry in nodes[0]:
        if not isinstance(entry, list) or len(entry) < 3 or entry[1] != 0 or entry[2] != 0:
            raise ModelError(f"layer {layer.get('name')} has an inbound node {entry!r} this program cannot read")
        sources.append(str(entry[0]))
    return tuple(sources)


def _check_conv(name: str, config: dict[str, Any]) -> str:
    """Refuse convolution settings the official models never use; return the activation."""
    if config.get("padding") != "same":
        raise ModelError(f"layer {name} uses padding {config.get('padding')!r}; only 'same' is supported")
    if config.get("data_format", "channels_last") not in ("channels_last", None):
        raise ModelError(f"layer {name} is channels-first; only channels-last Keras models are supported")
    if any(int(d) != 1 for d in config.get("dilation_rate", [1, 1, 1])) or config.get("groups", 1) != 1:
        raise ModelError(f"layer {name} uses dilation or grouped convolution; not supported")
    if config.get("output_padding") is not None:
        raise ModelError(f"layer {name} sets output_padding; not supported")
    activation = config.get("activation", "linear")
    if activation not in ACTIVATIONS:
        raise ModelError(f"layer {name} uses activation {activation!r}; supported: {', '.join(ACTIVATIONS)}")
    return activation


def _check_channel_axis(name: str, axis: Any) -> None:
    if axis not in CHANNEL_AXES:
        raise ModelError(f"layer {name} works on axis {axis!r}; only the channel axis (-1) is supported")


def _build_layer(layer: dict[str, Any], in_channels: list[int]) -> tuple[nn.Module | None, int, str]:
    """The module for one Keras layer (None when it has no weights), its output channels, activation."""
    name, kind, config = layer["name"], layer.get("class_name"), layer.get("config", {})
    if kind in ("Conv3D", "Conv3DTranspose"):
        activation = _check_conv(name, config)
        cls = TFSameConv3d if kind == "Conv3D" else TFSameConvTranspose3d
        module = cls(in_channels[0], int(config["filters"]), config["kernel_size"], config["strides"],
                     bias=bool(config.get("use_bias", True)))
        return module, int(config["filters"]), activation
    if kind == "GroupNormalization":
        _check_channel_axis(name, config.get("axis", -1))
        module = KerasGroupNormalization(in_channels[0], int(config.get("groups", 32)), float(config.get("epsilon", 1e-5)),
                                         bool(config.get("center", True)), bool(config.get("scale", True)))
        return module, in_channels[0], "linear"
    if kind == "PReLU":
        return keras_prelu(in_channels[0], config.get("shared_axes")), in_channels[0], "linear"
    if kind == "Concatenate":
        _check_channel_axis(name, config.get("axis", -1))
        return None, sum(in_channels), "linear"
    raise ModelError(f"layer {name} has Keras class {kind!r}, which this program does not know; cannot build the network")


def _execution_order(nodes: dict[str, GraphNode], output: str) -> list[str]:
    """Layers needed for `output`, each after its sources (depth-first), refusing cycles and dangling names."""
    order: list[str] = []
    state: dict[str, str] = {}
    stack: list[tuple[str, bool]] = [(output, False)]
    while stack:
        name, expanded = stack.pop()
        if expanded:
            state[name] = "done"
            order.append(name)
            continue
        if state.get(name) == "done":
            continue
        if state.get(name) == "open":
            raise ModelError(f"the Keras graph has a cycle through layer {name}; the file is corrupt")
        if name not in nodes:
            raise ModelError(f"the Keras graph refers to a missing layer {name}; the file is corrupt")
        state[name] = "open"
        stack.append((name, True))
        stack.extend((source, False) for source in reversed(nodes[name].sources) if state.get(source) != "done")
    return order


class KerasGraphNetwork(nn.Module):
    """The network a Keras `model_config` describes; maps (N, 1, D, H, W) to (N, 1, D, H, W)."""

    def __init__(self, model_config: dict[str, Any]) -> None:
        super().__init__()
        layer_configs, self.input_name, self.output_name = _layer_list(model_config)
        self.model_config = copy.deepcopy(model_config)
        self.layers = nn.ModuleDict()
        self.nodes: dict[str, GraphNode] = {}
        by_name = {}
        for layer in layer_configs:
            name = str(layer.get("name", ""))
            if not name or "." in name or name in by_name:
                raise ModelError(f"the Keras graph has an empty, dotted or repeated layer name {name!r}")
            by_name[name] = layer
            self.nodes[name] = GraphNode(name, str(layer.get("class_name")), _sources(layer))
        if self.nodes.get(self.input_name, GraphNode("", "", ())).kind != "InputLayer":
            raise ModelError(f"the Keras model input {self.input_name} is not an InputLayer")
        self.order = _execution_order(self.nodes, self.output_name)
        channels = self._build(by_name)
        if channels[self.input_name] != 1 or channels[self.output_name] != 1:
            raise ModelError(f"the Keras model maps {channels[self.input_name]} to {channels[self.output_name]} "
                             "channels; a map network must map 1 channel to 1")
        self.last_use = self._last_use()

    def _build(self, by_name: dict[str, dict]) -> dict[str, int]:
        """Create the modules in execution order; return each layer's output channel count."""
        channels: dict[str, int] = {}
        for name in self.order:
            node, layer = self.nodes[name], by_name[name]
            if node.kind == "InputLayer":
                if node.sources or name != self.input_name:
                    raise ModelError(f"input layer {name} is not the model's only input")
                shape = layer.get("config", {}).get("batch_input_shape") or [None, None, None, None, 1]
                if len(shape) != 5:
                    raise ModelError(f"input layer {name} has shape {shape}; a 3-D single-channel input is required")
                channels[name] = int(shape[-1])
                continue
            if not node.sources:
                raise ModelError(f"layer {name} has no input; the graph is corrupt")
            module, channels[name], activation = _build_layer(layer, [channels[s] for s in node.sources])
            if module is not None:
                self.layers[name] = module
            self.nodes[name] = GraphNode(name, node.kind, node.sources, activation)
        return channels

    def _last_use(self) -> dict[str, int]:
        """Step after which each intermediate result can be freed (the 128^3 detour is memory heavy)."""
        last = {}
        for step, name in enumerate(self.order):
            for source in self.nodes[name].sources:
                last[source] = step
        return last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        results: dict[str, torch.Tensor] = {}
        for step, name in enumerate(self.order):
            node = self.nodes[name]
            if node.kind == "InputLayer":
                out = x
            elif node.kind == "Concatenate":
                out = torch.cat([results[s] for s in node.sources], dim=1)
            else:
                out = self.layers[name](results[node.sources[0]])
            results[name] = F.relu(out) if node.activation == "relu" else out
            for source in node.sources:
                if self.last_use[source] == step:
                    del results[source]
        return results[self.output_name]


def _keras_arrays_to_tensors(name: str, module: nn.Module, arrays: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Convert one layer's Keras weights (weight_names order) to its module's parameters."""
    if isinstance(module, (TFSameConv3d, TFSameConvTranspose3d)):
        # Conv3D (kd,kh,kw,Cin,Cout) and Conv3DTranspose (kd,kh,kw,Cout,Cin): the same transpose.
        targets = ["weight"] + (["bias"] if module.bias is not None else [])
        convert = [lambda a: a.transpose(4, 3, 0, 1, 2), lambda a: a]
    elif isinstance(module, KerasGroupNormalization):
        targets = [t for t in ("weight", "bias") if getattr(module, t) is not None]  # gamma, then beta
        convert = [lambda a: a, lambda a: a]
    elif isinstance(module, nn.PReLU):
        targets = ["weight"]
        convert = [lambda a: a.reshape(-1)]  # alpha (1, 1, 1, C) -> (C,)
    else:
        raise ModelError(f"layer {name}: no weight conversion for {type(module).__name__}")
    if len(arrays) != len(targets):
        raise ModelError(f"layer {name} has {len(arrays)} weight arrays in the file; the graph needs {len(targets)}")
    tensors = {}
    for target, fn, array in zip(targets, convert, arrays):
        value = np.ascontiguousarray(fn(np.asarray(array)), dtype=np.float32)
        expected = tuple(getattr(module, target).shape)
        if value.shape != expected:
            raise ModelError(f"layer {name}: weight {target} has shape {np.shape(array)} in the file, "
                             f"which does not fit {expected}; the file does not match its graph")
        tensors[f"layers.{name}.{target}"] = torch.from_numpy(value)
    return tensors


def keras_weights_to_state_dict(network_or_config: KerasGraphNetwork | dict[str, Any],
                                weights: dict[str, list[np.ndarray]]) -> dict[str, torch.Tensor]:
    """Per-layer Keras weight arrays (in weight_names order) -> the network's state dict (float32)."""
    if isinstance(network_or_config, KerasGraphNetwork):
        network = network_or_config
    else:
        with torch.device("meta"):  # only the shapes are needed: allocate nothing
            network = KerasGraphNetwork(network_or_config)
    stray = sorted(name for name, arrays in weights.items() if len(arrays) and name not in network.layers)
    if stray:
        raise ModelError(f"the file has weights for {', '.join(stray)}, which the graph does not use")
    state: dict[str, torch.Tensor] = {}
    for name, module in network.layers.items():
        if name not in weights:
            raise ModelError(f"the file has no weights for layer {name}; it is incomplete")
        state.update(_keras_arrays_to_tensors(name, module, list(weights[name])))
    return state
