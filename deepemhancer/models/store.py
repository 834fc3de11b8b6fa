"""A model on disk is data: ``<stem>.json`` (graph and settings) beside ``<stem>.safetensors``.

The JSON holds::

    format: "deepemhancer-model", format_version: 1, name, description,
    architecture: {"type": "keras_graph", "model_config": {...}} or {"type": "unet", ...},
    normalization: "noise" (noise mean 0, std 0.1), "masked" (median / 10-95 percentile range) or
        "sharpened-halves" (two channels from the half maps, see halves_input.py),
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

if TYPE_CHECKING:  # torch is imported where weights are handled, not to read a model's JSON
    import torch

FORMAT = "deepemhancer-model"
FORMAT_VERSION = 1
HALVES_NORMALIZATION = "sharpened-halves"  # two input channels from the half maps (halves_input.py)
NORMALIZATIONS = ("noise", "masked", HALVES_NORMALIZATION)
REQUIRED_KEYS = ("name", "architecture", "normalization", "cube_size", "stride", "voxel_size")


def weights_path(json_path: Path) -> Path:
    """The safetensors file that belongs to a model JSON."""
    return Path(json_path).with_suffix(".safetensors")


def validate_metadata(metadata: dict[str, Any], where: str) -> dict[str, Any]:
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
    if int(metadata["cube_size"]) <= 0 or int(metadata["stride"]) <= 0 or float(metadata["voxel_size"]) <= 0:
        raise ModelError(f"{where} has a non-positive cube size, stride or voxel size")
    return metadata


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
    return validate_metadata(metadata, str(json_path))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_model(json_path: Path, metadata: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> Path:
    """Write the weights, then the JSON (each atomically): a JSON present means a complete model."""
    from safetensors.torch import save

    json_path = Path(json_path)
    metadata = {"format": FORMAT, "format_version": FORMAT_VERSION, **metadata}
    validate_metadata(metadata, str(json_path))
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    _atomic_write_bytes(weights_path(json_path), save(tensors))
    _atomic_write_bytes(json_path, (json.dumps(metadata, indent=1) + "\n").encode())
    return json_path


def load_network(json_path: Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Build the network a model JSON describes and load its weights, in eval mode, float32."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..nn import build_network

    metadata = read_metadata(json_path)
    network = build_network(metadata["architecture"])
    try:
        state = load_file(str(weights_path(json_path)))
    except FileNotFoundError:
        raise ModelError(f"weights {weights_path(json_path)} are missing; re-import the model") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"weights {weights_path(json_path)} are corrupt ({exc}); re-import the model") from None
    state = {k: v.float() for k, v in state.items()}
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelError(f"weights {weights_path(json_path)} do not match the graph in {json_path} ({first})") from None
    return network.to(device).eval(), metadata
