"""Read the official DeepEMhancer weight files (Keras 2 HDF5, `.hd5`) and convert them to our format.

Only h5py and numpy are used. The files embed Python source (`code/custom_objects`,
`code/normFun`) that the original program executes; here it is only read as text, to learn the
name of the input normalisation, which then selects our own implementation.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ..errors import ModelError
from .store import MAX_PARAMETERS, NORMALIZATIONS, check_architecture, check_cube_size, save_model

# The original's normalisation functions, by name, and the normalisation of ours that matches.
KNOWN_NORM_FUNCTIONS = {
    "inputNormalization_3": "noise",  # noise mean 0, std 0.1
    "inputNormalizationWithMask_2": "masked",  # dilate 3, threshold 0.01, median / 10-95 % range
}
DEFAULT_CUBE_SIZE = 64
DEFAULT_STRIDE = 16
_BINDING = re.compile(r"^\s*normFun\s*=\s*([A-Za-z_]\w*)\s*$", re.MULTILINE)
_IMPORT_AS = re.compile(r"\bimport\s+([A-Za-z_]\w*)\s+as\s+normFun\b")
_DEF = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)


@dataclass(frozen=True)
class OfficialModel:
    """What an official `.hd5` holds, as plain data."""

    model_config: dict[str, Any]
    weights: dict[str, list[np.ndarray]]
    normalization: str
    norm_function: str
    cube_size: int
    stride: int
    keras_version: str
    sha256: str


def _text(value: Any) -> str:
    """HDF5 strings come back as bytes, numpy bytes or str depending on how and when they were written."""
    if isinstance(value, np.ndarray) and value.shape in ((), (1,)):
        value = value.reshape(-1)[0] if value.shape else value[()]
    return value.decode("utf8") if isinstance(value, (bytes, np.bytes_)) else str(value)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def norm_function_name(source: str) -> str:
    """The name of the function `code/normFun` binds to `normFun`, read from the text (never run).

    The binding (`normFun = NAME` or `import NAME as normFun`) wins; otherwise the one top-level
    `def NAME(` that is a known normalisation, or the only top-level def.
    """
    bound = _BINDING.findall(source) + _IMPORT_AS.findall(source)
    if bound:
        return bound[-1]
    defs = _DEF.findall(source)
    known = [name for name in defs if name in KNOWN_NORM_FUNCTIONS]
    if len(set(known)) == 1:
        return known[0]
    if len(defs) == 1:
        return defs[0]
    raise ModelError("the model's embedded normalisation code names no single function "
                     f"(found {', '.join(defs) or 'none'}); pass the normalisation explicitly")


def _normalization(path: Path, source: str | None, override: str | None) -> tuple[str, str]:
    """(our normalisation, the original function name) for a file; `override` wins when given."""
    name = norm_function_name(source) if source is not None else "unknown"
    if override is not None:
        if override not in NORMALIZATIONS:
            raise ModelError(f"normalisation {override!r} is unknown; choose one of {', '.join(NORMALIZATIONS)}")
        return override, name
    if source is None:
        raise ModelError(f"{path} has no code/normFun, so its input normalisation is unknown: it is not one of "
                         "the official DeepEMhancer models; use the official files")
    if name not in KNOWN_NORM_FUNCTIONS:
        raise ModelError(f"{path}: normalisation function {name} is unknown (known: "
                         f"{', '.join(KNOWN_NORM_FUNCTIONS)}): it is not one of the official DeepEMhancer models; "
                         "use the official files")
    return KNOWN_NORM_FUNCTIONS[name], name


def _read_weights(path: Path, group: h5py.Group) -> dict[str, list[np.ndarray]]:
    """Per-layer weight arrays in `weight_names` order, for every layer `layer_names` lists; sizes are
    checked from the dataset headers before anything is read (compressed data can expand a lot)."""
    if "layer_names" not in group.attrs:
        raise ModelError(f"{path} has no model_weights layer_names; it is not a complete Keras model file")
    datasets: dict[str, list[h5py.Dataset]] = {}
    for layer_name in (_text(n) for n in group.attrs["layer_names"]):
        layer = group.get(layer_name)
        if not isinstance(layer, h5py.Group):
            raise ModelError(f"{path} lists layer {layer_name} but holds no weights for it; the file is corrupt")
        found = [layer.get(_text(n)) for n in layer.attrs.get("weight_names", [])]
        if not all(isinstance(d, h5py.Dataset) and d.dtype.kind == "f" for d in found):
            raise ModelError(f"{path} misses a weight of layer {layer_name}; the file is corrupt")
        datasets[layer_name] = found
    total = sum(d.size for found in datasets.values() for d in found)
    if total > MAX_PARAMETERS:
        raise ModelError(f"{path} holds {total:,} weights, more than the {MAX_PARAMETERS:,} allowed; "
                         "it is not an official DeepEMhancer model")
    return {name: [np.asarray(d) for d in found] for name, found in datasets.items()}


def _config_param(path: Path, f: h5py.File, name: str, default: int) -> int:
    key = f"configParams/{name}"
    if key not in f:
        return default
    values = np.asarray(f[key]).reshape(-1)
    if values.size != 1 or values.dtype.kind not in "iu":
        raise ModelError(f"{path} has a {name} that is not one whole number; the file is corrupt")
    return int(values[0])


def read_official_hd5(path: Path, normalization: str | None = None) -> OfficialModel:
    """Read an official DeepEMhancer `.hd5` with h5py; the embedded code is read as text only."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError:
        raise ModelError(f"{path} is not an HDF5 file; it is not an official DeepEMhancer model (re-download it)") from None
    with f:
        if "model_config" not in f.attrs:
            raise ModelError(f"{path} has no model_config; it is not a Keras model file")
        try:
            model_config = json.loads(_text(f.attrs["model_config"]))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ModelError(f"{path} has an unreadable model_config; the file is corrupt") from None
        if "model_weights" not in f:
            raise ModelError(f"{path} has no model_weights; it holds no trained weights")
        weights = _read_weights(path, f["model_weights"])
        source = _text(f["code/normFun"][()]) if "code/normFun" in f else None
        norm, norm_name = _normalization(path, source, normalization)
        cube = _config_param(path, f, "NNET_INPUT_SIZE", DEFAULT_CUBE_SIZE)
        stride = _config_param(path, f, "NNET_INPUT_STRIDE", DEFAULT_STRIDE)
        check_cube_size(cube, str(path))
        if not 1 <= stride <= cube:
            raise ModelError(f"{path} has a stride of {stride}, outside 1..{cube}; the file is corrupt")
        keras_version = _text(f.attrs.get("keras_version", "unknown"))
    return OfficialModel(model_config, weights, norm, norm_name, cube, stride, keras_version, file_sha256(path))


def model_name(path: Path) -> str:
    """`deepEMhancer_<name>.hd5` -> `<name>`; any other file -> its stem."""
    stem = Path(path).stem
    return stem[len("deepEMhancer_"):] if stem.startswith("deepEMhancer_") and len(stem) > 13 else stem


def _metadata(path: Path, name: str, official: OfficialModel) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"official DeepEMhancer model {name}, converted from {path.name}",
        "architecture": {"type": "keras_graph", "model_config": official.model_config},
        "normalization": official.normalization,
        "cube_size": official.cube_size,
        "stride": official.stride,
        "voxel_size": 1.0,
        "trained": True,
        "source": {"file": path.name, "sha256": official.sha256, "keras_version": official.keras_version,
                   "norm_function": official.norm_function},
    }


def _checked_state_dict(official: OfficialModel) -> dict[str, torch.Tensor]:
    """Convert the weights and prove they load strictly into the network built from the graph."""
    from ..nn import build_network
    from ..nn.keras_graph import keras_weights_to_state_dict

    check_architecture({"type": "keras_graph", "model_config": official.model_config}, "the model's graph")
    with torch.device("meta"):  # shapes and names are all a strict load checks: allocate nothing
        network = build_network({"type": "keras_graph", "model_config": official.model_config})
    state = keras_weights_to_state_dict(network, official.weights)
    try:
        network.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise ModelError(f"converted weights do not fit the graph ({str(exc).strip().splitlines()[0]})") from None
    return state


def import_hd5(path: Path, dest_dir: Path, name: str | None = None, normalization: str | None = None) -> Path:
    """Convert an official `.hd5` to `<dest_dir>/<name>.json` + `.safetensors`; return the JSON path."""
    path = Path(path)
    official = read_official_hd5(path, normalization)
    name = name or model_name(path)
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ModelError(f"model name {name!r} cannot be a file name; choose another")
    state = _checked_state_dict(official)
    return save_model(Path(dest_dir) / f"{name}.json", _metadata(path, name, official), state)
