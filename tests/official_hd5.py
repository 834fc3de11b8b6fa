"""Write tiny weight files in the official DeepEMhancer layout (Keras 2.2 HDF5 + DeepEMhancer extras).

A helper of the tests and of the side-by-side benchmark (``write_keras_file``, the layout itself):
the graph is a small U-Net-like network that uses every layer type of the
official models (Conv3D stride 1 and 2, Conv3DTranspose stride 2, GroupNormalization, PReLU
with shared_axes [1, 2, 3], Concatenate) including the detour up to twice the cube size and back
down that the official layers 23/24 make. The embedded code strings are text only; nothing may
ever execute them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import h5py
import numpy as np

KERAS_VERSION = "2.2.4"


def norm_code(function_name: str) -> str:
    """Source text shaped like the official `code/normFun`: a def plus the `normFun` binding."""
    return (
        "import numpy as np\n\n"
        f"def {function_name}(x, noise_stats=None):\n"
        "    '''Text only: never executed by deepemhancer.'''\n"
        "    return (x - np.mean(x)) / (np.std(x) * 10)\n\n"
        f"normFun = {function_name}\n"
    )


CUSTOM_OBJECTS_CODE = (
    "class GroupNormalization(object):\n"
    "    '''Text only: never executed by deepemhancer.'''\n\n"
    "custom_objects = {'GroupNormalization': GroupNormalization}\n"
)


def _initializer(name: str) -> dict[str, Any]:
    return {"class_name": name, "config": {}}


def _node(*sources: str) -> list:
    """Keras 2.2 `inbound_nodes`: one call, each source as [layer, node_index, tensor_index, kwargs]."""
    return [[[s, 0, 0, {}] for s in sources]]


def _conv(name: str, source: str, filters: int, stride: int, transpose: bool, use_bias: bool = True) -> dict:
    config = {
        "name": name, "trainable": True, "filters": filters, "kernel_size": [5, 5, 5],
        "strides": [stride] * 3, "padding": "same", "data_format": "channels_last",
        "dilation_rate": [1, 1, 1], "activation": "linear", "use_bias": use_bias,
        "kernel_initializer": _initializer("VarianceScaling"), "bias_initializer": _initializer("Zeros"),
        "kernel_regularizer": None, "bias_regularizer": None, "activity_regularizer": None,
        "kernel_constraint": None, "bias_constraint": None,
    }
    if transpose:
        config["output_padding"] = None
    return {"name": name, "class_name": "Conv3DTranspose" if transpose else "Conv3D",
            "config": config, "inbound_nodes": _node(source)}


def _group_norm(name: str, source: str, groups: int, scale: bool = True) -> dict:
    config = {
        "name": name, "trainable": True, "groups": groups, "axis": -1, "epsilon": 1e-5,
        "center": True, "scale": scale, "beta_initializer": _initializer("Zeros"),
        "gamma_initializer": _initializer("Ones"), "beta_regularizer": None, "gamma_regularizer": None,
        "beta_constraint": None, "gamma_constraint": None,
    }
    return {"name": name, "class_name": "GroupNormalization", "config": config, "inbound_nodes": _node(source)}


def _prelu(name: str, source: str) -> dict:
    config = {"name": name, "trainable": True, "alpha_initializer": _initializer("Zeros"),
              "alpha_regularizer": None, "alpha_constraint": None, "shared_axes": [1, 2, 3]}
    return {"name": name, "class_name": "PReLU", "config": config, "inbound_nodes": _node(source)}


def tiny_model_config(widths: tuple[int, int], groups: int, cube: int) -> dict:
    """A Keras 2.2 `model_config` (class Model) for the tiny test graph."""
    w0, w1 = widths
    layers = [
        {"name": "input_1", "class_name": "InputLayer",
         "config": {"batch_input_shape": [None, cube, cube, cube, 1], "dtype": "float32",
                    "sparse": False, "name": "input_1"}, "inbound_nodes": []},
        _conv("conv3d_1", "input_1", w0, 1, False),
        _group_norm("group_normalization_1", "conv3d_1", groups),
        _prelu("p_re_lu_1", "group_normalization_1"),
        _conv("conv3d_2", "p_re_lu_1", w1, 2, False),
        _group_norm("group_normalization_2", "conv3d_2", groups),
        _prelu("p_re_lu_2", "group_normalization_2"),
        _conv("conv3d_transpose_1", "p_re_lu_2", w1, 2, True),
        _prelu("p_re_lu_3", "conv3d_transpose_1"),
        # Decoder branch first, skip second: the order the inbound node gives must be kept.
        {"name": "concatenate_1", "class_name": "Concatenate",
         "config": {"name": "concatenate_1", "trainable": True, "axis": -1},
         "inbound_nodes": _node("p_re_lu_3", "p_re_lu_1")},
        # The detour of the official layers 23/24: up to twice the cube size, then back down.
        _conv("conv3d_transpose_2", "concatenate_1", w0, 2, True),
        _prelu("p_re_lu_4", "conv3d_transpose_2"),
        _conv("conv3d_3", "p_re_lu_4", w0, 2, False, use_bias=False),
        _group_norm("group_normalization_3", "conv3d_3", groups, scale=False),
        _prelu("p_re_lu_5", "group_normalization_3"),
        _conv("conv3d_4", "p_re_lu_5", 1, 1, False),
    ]
    return {"class_name": "Model",
            "config": {"name": "model_1", "layers": layers,
                       "input_layers": [["input_1", 0, 0]], "output_layers": [["conv3d_4", 0, 0]]}}


def _layer_weights(layer: dict, channels_in: int, rng: np.random.Generator) -> tuple[list[str], list[np.ndarray]]:
    """Random weights in Keras layout and order, scaled to keep activations of order one."""
    config, kind = layer["config"], layer["class_name"]
    if kind in ("Conv3D", "Conv3DTranspose"):
        filters = config["filters"]
        shape = (5, 5, 5, channels_in, filters) if kind == "Conv3D" else (5, 5, 5, filters, channels_in)
        names = ["kernel"]
        values = [rng.normal(0.0, 1.0 / np.sqrt(125 * channels_in), shape)]
        if config["use_bias"]:
            names.append("bias")
            values.append(rng.normal(0.0, 0.1, filters))
        return names, values
    if kind == "GroupNormalization":
        names, values = [], []
        if config["scale"]:
            names.append("gamma")
            values.append(rng.uniform(0.5, 1.5, channels_in))
        if config["center"]:
            names.append("beta")
            values.append(rng.normal(0.0, 0.2, channels_in))
        return names, values
    if kind == "PReLU":
        return ["alpha"], [rng.uniform(0.05, 0.5, (1, 1, 1, channels_in))]
    return [], []


def _channels_out(layer: dict, channels: dict[str, int]) -> int:
    kind = layer["class_name"]
    sources = [s[0] for s in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
    if kind == "InputLayer":
        return layer["config"]["batch_input_shape"][-1]
    if kind in ("Conv3D", "Conv3DTranspose"):
        return layer["config"]["filters"]
    if kind == "Concatenate":
        return sum(channels[s] for s in sources)
    return channels[sources[0]]


def tiny_weights(model_config: dict, seed: int) -> dict[str, list[np.ndarray]]:
    """Random float32 weights for every layer of the config, keyed by layer name (Keras order)."""
    rng = np.random.default_rng(seed)
    channels: dict[str, int] = {}
    weights: dict[str, list[np.ndarray]] = {}
    for layer in model_config["config"]["layers"]:
        sources = [s[0] for s in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        channels_in = channels[sources[0]] if sources else 1
        _, values = _layer_weights(layer, channels_in, rng)
        weights[layer["name"]] = [v.astype(np.float32) for v in values]
        channels[layer["name"]] = _channels_out(layer, channels)
    return weights


def _weight_names(layer: dict) -> list[str]:
    names, _ = _layer_weights(layer, 1, np.random.default_rng(0))
    return [f"{layer['name']}/{n}:0" for n in names]


def write_keras_file(path: Path, model_config: dict, layer_weights: dict[str, list[tuple[str, np.ndarray]]], *,
                     custom_objects: str, norm_source: str, config_params: tuple[int, int] | None) -> None:
    """Write ``model_config`` and the weights (per layer name, (full weight name, value) pairs) in the
    official layout: Keras 2.2's HDF5 as h5py 2 wrote it, plus DeepEMhancer's ``code/custom_objects``,
    ``code/normFun`` and, unless None, ``configParams`` (cube size, stride)."""
    text = h5py.string_dtype(encoding="utf-8")
    with h5py.File(path, "w") as f:
        # Fixed-length byte strings, as Keras 2.2 with h5py 2 wrote them: they read back as bytes.
        f.attrs["keras_version"] = np.bytes_(KERAS_VERSION)
        f.attrs["backend"] = np.bytes_("tensorflow")
        f.attrs["model_config"] = np.bytes_(json.dumps(model_config))
        group = f.create_group("model_weights")
        layers = model_config["config"]["layers"]
        group.attrs["layer_names"] = np.array([layer["name"] for layer in layers], dtype="S")
        group.attrs["backend"] = np.bytes_("tensorflow")
        group.attrs["keras_version"] = np.bytes_(KERAS_VERSION)
        for layer in layers:
            layer_group = group.create_group(layer["name"])
            pairs = layer_weights[layer["name"]]
            # Keras stores an empty float array for layers without weights.
            layer_group.attrs["weight_names"] = np.array([n for n, _ in pairs], dtype="S") if pairs else np.zeros(0)
            for name, value in pairs:
                layer_group.create_dataset(name, data=value)
        f.create_dataset("code/custom_objects", data=[custom_objects], dtype=text)
        f.create_dataset("code/normFun", data=[norm_source], dtype=text)
        if config_params is not None:
            f.create_dataset("configParams/NNET_INPUT_SIZE", data=np.array([config_params[0]], dtype=np.int64))
            f.create_dataset("configParams/NNET_INPUT_STRIDE", data=np.array([config_params[1]], dtype=np.int64))


def write_official_hd5(path: Path, *, widths: tuple[int, int] = (2, 4), groups: int = 2, seed: int = 0,
                       norm_function: str = "inputNormalization_3", cube: int = 16,
                       norm_source: str | None = None, config_params: bool = True) -> dict:
    """Write a tiny official-layout `.hd5`; return what was written.

    `norm_source` replaces the `code/normFun` text (for example code with a visible side effect,
    to prove it is never executed); `config_params=False` leaves out `configParams/`.
    Returns {"path", "model_config", "weights", "norm_function", "cube", "norm_source"}.
    """
    path = Path(path)
    model_config = tiny_model_config(widths, groups, cube)
    weights = tiny_weights(model_config, seed)
    source = norm_code(norm_function) if norm_source is None else norm_source
    layer_weights = {layer["name"]: list(zip(_weight_names(layer), weights[layer["name"]]))
                     for layer in model_config["config"]["layers"]}
    write_keras_file(path, model_config, layer_weights, custom_objects=CUSTOM_OBJECTS_CODE, norm_source=source,
                     config_params=(cube, cube // 4) if config_params else None)
    return {"path": path, "model_config": model_config, "weights": weights,
            "norm_function": norm_function, "cube": cube, "norm_source": source}
