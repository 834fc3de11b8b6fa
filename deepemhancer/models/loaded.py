"""A model loaded to run: its network with the settings its JSON states (``Model``), read from
disk by ``load_model``. ``store`` reads and writes the files; this is what ``enhance`` takes."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InputError
from .store import HALVES_NORMALIZATIONS, load_network

if TYPE_CHECKING:  # torch is loaded with the network (load_network), not to name its type
    import torch

log = logging.getLogger("deepemhancer")


@dataclass
class Model:
    """A network ready to run, with the settings its JSON states."""

    network: torch.nn.Module
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", "unnamed"))


def load_model(json_path: str | Path) -> Model:
    """Load a model JSON (and its safetensors) onto the CPU; warns once if it is an untrained demo."""
    if not isinstance(json_path, (str, os.PathLike)):
        raise InputError(f"a model is loaded from the path of its JSON, not from {type(json_path).__name__}")
    network, metadata = load_network(Path(json_path))
    model = Model(network=network, metadata=metadata, path=Path(json_path))
    if not metadata.get("trained", True):
        log.warning("model %r is an UNTRAINED network: the result only demonstrates the pipeline "
                    "and is not an enhanced map", model.name)
    return model


def takes_halves(model: Model) -> bool:
    """Whether the model takes two half maps (it measures the noise from their difference)."""
    return model.metadata["normalization"] in HALVES_NORMALIZATIONS
