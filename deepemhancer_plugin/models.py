"""Which models a Scipion user can choose, and where each one is found.

The engine's registry knows the user's model folder, the original program's download folder and
the bundled models. Scipion adds two places: the official weights converted by
``scipion3 installb deepemhancerWeights`` (shared by every user of the installation), and the
official ``.hd5`` files of Scipion's xmipp bundle (``<xmipp>/models/deepEMhancer_v016``), which the
engine converts on first use. Names are looked up in that order.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import pwem

from .constants import OFFICIAL_WEIGHTS_VAR, XMIPP_MODEL_BUNDLES


@dataclass(frozen=True)
class ModelChoice:
    """A model the Enhance protocol can use, by name."""

    name: str
    origin: str
    normalization: str  # "noise" or "masked"
    description: str
    trained: bool = True


def _plugin():
    from . import Plugin
    return Plugin


def xmipp_models_root() -> Path | None:
    """xmipp's model folder: the xmipp plugin's own when importable, else $XMIPP_HOME/models."""
    home = None
    if importlib.util.find_spec("xmipp3") is not None:
        home = importlib.import_module("xmipp3").Plugin.getHome()  # its getModel() looks in <home>/models
    home = home or pwem.Config.XMIPP_HOME
    return Path(home) / "models" if home else None


def official_weights_folder() -> Path | None:
    """A folder holding the official deepEMhancer_*.hd5 files: the configured one, else xmipp's bundle."""
    from deepemhancer.models.registry import official_hd5_files

    candidates = []
    configured = _plugin().getVar(OFFICIAL_WEIGHTS_VAR) or os.environ.get(OFFICIAL_WEIGHTS_VAR, "")
    if configured:
        candidates.append(Path(configured).expanduser())
    root = xmipp_models_root()
    if root is not None:
        candidates += [root / bundle for bundle in XMIPP_MODEL_BUNDLES]
    return next((folder for folder in candidates if official_hd5_files(folder)), None)


def _extra_folders() -> list[tuple[Path, str]]:
    """Scipion's model folders beyond the engine's registry, in lookup order."""
    folders = [(Path(_plugin().getWeightsModelsDir()), "Scipion weights package")]
    official = official_weights_folder()
    if official is not None:
        folders.append((official, f"official weights in {official}"))
    return folders


def _official_normalization(name: str) -> str:
    from deepemhancer.models.registry import MASKED_NAME

    return "masked" if name == MASKED_NAME else "noise"


def _folder_choices(folder: Path, origin: str) -> list[ModelChoice]:
    """Model JSONs and official .hd5 files directly in a folder (or its production_checkpoints/)."""
    from deepemhancer.errors import ModelError
    from deepemhancer.models.registry import official_hd5_files
    from deepemhancer.models.store import read_metadata

    choices = [ModelChoice(name, origin, _official_normalization(name), "official DeepEMhancer model")
               for name in official_hd5_files(folder)]
    for json_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            metadata = read_metadata(json_path)
        except ModelError:
            continue  # not a model, or a damaged one: the engine says why when it is chosen
        choices.append(ModelChoice(json_path.stem, origin, metadata["normalization"],
                                   str(metadata.get("description", "")), bool(metadata.get("trained", True))))
    return choices


def model_choices() -> list[ModelChoice]:
    """Every model name the Enhance protocol accepts, first place first."""
    from deepemhancer.models import registry

    found: dict[str, ModelChoice] = {}
    for info in registry.list_models():
        found.setdefault(info.name, ModelChoice(info.name, info.origin, info.normalization, info.description,
                                                info.trained))
    for name in registry.official_hd5_files(registry.original_models_dir()):
        found.setdefault(name, ModelChoice(name, "original program's download folder",
                                           _official_normalization(name), "official DeepEMhancer model"))
    for folder, origin in _extra_folders():
        for choice in _folder_choices(folder, origin):
            found.setdefault(choice.name, choice)
    return list(found.values())


OFFICIAL_DEFAULT = "tightTarget"


def default_model_name(halves: bool = False) -> str:
    """tightTarget when installed anywhere the plugin looks, else the engine's bundled default: its
    half-map model when ``halves`` (the run has two half maps), else its single-map one."""
    from deepemhancer.models import registry

    if find_choice(OFFICIAL_DEFAULT) is not None:
        return OFFICIAL_DEFAULT
    return Path(registry.resolve_model(halves=halves)).stem


def accepted_normalizations(masked: bool, halves: bool) -> tuple[str, ...]:
    """The model normalisations a run can use: the masked one with a binary mask; else the
    noise one, and the half-map one when the run has two half maps."""
    from deepemhancer.models.store import HALVES_NORMALIZATIONS

    if masked:
        return ("masked",)
    return ("noise", *HALVES_NORMALIZATIONS) if halves else ("noise",)


def offered_choices(masked: bool, halves: bool) -> list[ModelChoice]:
    """The models a user is offered for a run: trained ones that fit its input (untrained
    demonstration models are for tests)."""
    wanted = accepted_normalizations(masked, halves)
    return [choice for choice in model_choices() if choice.trained and choice.normalization in wanted]


def find_choice(name: str) -> ModelChoice | None:
    return next((choice for choice in model_choices() if choice.name == name), None)


def resolve_model(name: str) -> Path:
    """The model JSON for a name (official .hd5 files are converted on first use)."""
    from deepemhancer.errors import ModelError
    from deepemhancer.models import registry

    if name in registry.available_names():
        return registry.resolve_model(name=name)
    for folder, _ in _extra_folders():
        if any(choice.name == name for choice in _folder_choices(folder, "")):
            return registry.resolve_model(name=name, model_path=folder)
    raise ModelError(unknown_model_message(name))


def unknown_model_message(name: str) -> str:
    names = ", ".join(choice.name for choice in model_choices()) or "none"
    return (f"model {name!r} is not installed (available: {names}); install the official models with "
            f"'scipion3 installb deepemhancerWeights' (or 'deepemhancer models download'), or choose "
            f"another model with the wizard")
