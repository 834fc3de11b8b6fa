"""A model on disk is data: ``<stem>.json`` (graph and settings) beside ``<stem>.safetensors``.

The JSON holds::

    format: "deepemhancer-model", format_version: 1, name, description,
    architecture: {"type": "keras_graph", "model_config": {...}} or {"type": "unet", ...},
    normalization: "noise" (noise mean 0, std 0.1), "masked" (median / 10-95 percentile range) or
        "sharpened-halves" or "wiener-halves" (two channels from the half maps, see halves_input.py),
    cube_size, stride, voxel_size (Å), trained (bool), source: {file, sha256, ...} (optional)

No code is ever read from a model file.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError
from ..files import write_atomic

if TYPE_CHECKING:  # torch is imported where weights are handled, not to read a model's JSON
    import torch

FORMAT = "deepemhancer-model"
FORMAT_VERSION = 1
HALVES_NORMALIZATION = "sharpened-halves"  # two input channels from the half maps (halves_input.py)
# The same two channels Wiener-weighted, keeping the shells beyond the FSC-0.143 resolution (halves_input.py)
WIENER_HALVES_NORMALIZATION = "wiener-halves"
HALVES_NORMALIZATIONS = (HALVES_NORMALIZATION, WIENER_HALVES_NORMALIZATION)
NORMALIZATIONS = ("noise", "masked", *HALVES_NORMALIZATIONS)
REQUIRED_KEYS = ("name", "architecture", "normalization", "cube_size", "stride", "voxel_size")
# Bounds on what a model file may ask for: each drives an allocation (official models: 64³ cubes,
# stride 16, 1 Å, about 7 million parameters).
CUBE_SIZE_RANGE = (8, 128)
MODEL_VOXEL_RANGE = (0.2, 10.0)  # Å
MAX_PARAMETERS = 100_000_000


def weights_path(json_path: Path) -> Path:
    """The safetensors file that belongs to a model JSON."""
    return Path(json_path).with_suffix(".safetensors")


def check_metadata(metadata: dict[str, Any], where: str) -> dict[str, Any]:
    """Check a model JSON's content; raise ModelError naming the file and the problem."""
    if metadata.get("format") != FORMAT:
        raise ModelError(f"{where} is not a DeepEMhancer model JSON (format field missing or wrong)")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{where} has model format version {metadata.get('format_version')!r}; "
                         f"this program reads version {FORMAT_VERSION}: upgrade deepemhancer")
    missing = [k for k in REQUIRED_KEYS if k not in metadata]
    if missing:
        raise ModelError(f"{where} lacks {', '.join(missing)}: the model file is corrupt; re-import it")
    if metadata["normalization"] not in NORMALIZATIONS:
        raise ModelError(f"{where} asks for normalization {metadata['normalization']!r}; "
                         f"known: {', '.join(NORMALIZATIONS)}")
    cube = metadata["cube_size"]
    check_cube_size(cube, where)
    _check_range(metadata["stride"], (1, cube), "stride", where, whole=True)
    _check_range(metadata["voxel_size"], MODEL_VOXEL_RANGE, "voxel size (Å)", where, whole=False)
    if not isinstance(metadata.get("trained", True), bool):
        raise ModelError(f"{where} has a 'trained' field that is not true or false; the model file is corrupt")
    return metadata


def check_cube_size(cube, where: str) -> None:
    """ModelError unless ``cube`` is a whole number within CUBE_SIZE_RANGE (shared with the .hd5 import)."""
    _check_range(cube, CUBE_SIZE_RANGE, "cube size", where, whole=True)


def _check_range(value, bounds: tuple, what: str, where: str, whole: bool) -> None:
    kinds = (int,) if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not bounds[0] <= value <= bounds[1]:
        raise ModelError(f"{where} has a {what} of {value!r}, outside {bounds[0]:g}..{bounds[1]:g}; "
                         "the model file is corrupt or not a DeepEMhancer model: re-import or re-download it")


def read_metadata(json_path: Path) -> dict[str, Any]:
    """Read and validate a model JSON."""
    json_path = Path(json_path)
    try:
        metadata = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"model file {json_path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"model file {json_path} cannot be read ({exc}); re-import or re-download it") from None
    if not isinstance(metadata, dict):
        raise ModelError(f"model file {json_path} does not hold a JSON object; re-import it")
    return check_metadata(metadata, str(json_path))


def check_writable_models_folder(folder: Path) -> None:
    """ModelError, naming the folder rather than any model file, when models cannot be written there."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe.", suffix=".tmp")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise ModelError(f"cannot write models into {folder} ({exc.strerror or exc}); make it writable or set "
                         "DEEPEMHANCER_MODELS_DIR to a writable folder") from None


def save_model(json_path: Path, metadata: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Path:
    """Write the weights, then the JSON (each atomically): a JSON present means a complete model."""
    from safetensors.torch import save

    json_path = Path(json_path)
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    check_metadata(metadata, str(json_path))
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(weights_path(json_path), save(tensors))
    write_atomic(json_path, json.dumps(metadata, indent=1) + "\n")
    return json_path


def check_architecture(architecture: Any, where: str) -> None:
    """ModelError unless the network an architecture describes can be built and has at most
    MAX_PARAMETERS; proven on the meta device, allocating nothing."""
    import torch

    from ..nn import build_network, count_parameters

    try:
        with torch.device("meta"):
            count = count_parameters(build_network(architecture))
    except ModelError:
        raise
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, ZeroDivisionError, RuntimeError) as exc:
        raise ModelError(f"{where} describes a network that cannot be built ({type(exc).__name__}: {exc}); "
                         "the model file is corrupt: re-import or re-download it") from None
    if count > MAX_PARAMETERS:
        raise ModelError(f"{where} describes a network of {count:,} parameters, more than the {MAX_PARAMETERS:,} "
                         "allowed; the model file is corrupt or not a DeepEMhancer model")


def load_network(json_path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the network a model JSON describes and load its weights, in eval mode, float32."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..nn import build_network

    metadata = read_metadata(json_path)
    check_architecture(metadata["architecture"], str(json_path))
    network = build_network(metadata["architecture"])
    try:
        state = load_file(str(weights_path(json_path)))
    except FileNotFoundError:
        raise ModelError(f"weights {weights_path(json_path)} are missing; re-import the model") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"weights {weights_path(json_path)} are corrupt ({exc}); re-import the model") from None
    try:
        state = {k: v.float() for k, v in state.items()}
        network.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"weights {weights_path(json_path)} do not match the graph in {json_path} ({first})") from None
    return network.to(device).eval(), metadata
