"""Where models live and how a name, a file or a folder becomes one model JSON.

Three places hold models, searched in this order when a name is given:

1. ``models_dir()``: official models imported with ``deepemhancer models import/download`` and
   the user's own models (``<name>.json`` + ``<name>.safetensors``);
2. the original program's download folder (``~/.local/share/deepEMhancerModels``), whose
   ``deepEMhancer_<name>.hd5`` files are converted on first use;
3. the models bundled with the package.

Official ``.hd5`` files met outside ``models_dir()`` are converted once into a cache,
``models_dir()/converted/<sha256 prefix>/``, keyed by the file's content.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ..files import write_atomic
from .store import HALVES_NORMALIZATIONS, check_writable_models_folder, read_metadata

log = logging.getLogger("deepemhancer")

OFFICIAL_NAMES = ("tightTarget", "wideTarget", "highRes", "masked")
DEFAULT_NAME = "tightTarget"
MASKED_NAME = "masked"
HD5_PREFIX = "deepEMhancer_"
HD5_SUFFIXES = (".hd5", ".h5", ".hdf5")
SUBFOLDER = "production_checkpoints"
HOW_TO_GET = ("get the official ones with `deepemhancer models download`, "
              "or point --deepLearningModelPath to a folder of deepEMhancer_*.hd5 files")


@dataclass(frozen=True)
class ModelInfo:
    """One model that can be chosen by name."""

    name: str
    json_path: Path
    origin: str  # "installed" or "bundled"
    description: str
    normalization: str
    trained: bool


def models_dir() -> Path:
    """The user's model folder: $DEEPEMHANCER_MODELS_DIR, else the XDG data folder."""
    override = os.environ.get("DEEPEMHANCER_MODELS_DIR")
    if override:
        return Path(override).expanduser()
    data_home = os.environ.get("XDG_DATA_HOME")
    base = Path(data_home).expanduser() if data_home else Path.home() / ".local" / "share"
    return base / "deepemhancer" / "models"


def bundled_dir() -> Path:
    """The models shipped inside the package."""
    return Path(__file__).resolve().parent / "bundled"


def original_models_dir() -> Path:
    """The original program's download folder (its .hd5 files sit in production_checkpoints/)."""
    return Path.home() / ".local" / "share" / "deepEMhancerModels"


def _sort_key(info: ModelInfo) -> tuple[int, int, str]:
    # Official names in their usual order, then the rest alphabetically.
    rank = OFFICIAL_NAMES.index(info.name) if info.name in OFFICIAL_NAMES else len(OFFICIAL_NAMES)
    return (info.origin != "installed", rank, info.name.lower())


def _infos_in(folder: Path, origin: str) -> list[ModelInfo]:
    """Valid model JSONs directly in a folder; unreadable ones are left out of the listing."""
    infos = []
    for json_path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            metadata = read_metadata(json_path)
        except ModelError:
            continue
        infos.append(ModelInfo(name=json_path.stem, json_path=json_path, origin=origin,
                               description=str(metadata.get("description", "")),
                               normalization=metadata["normalization"],
                               trained=bool(metadata.get("trained", True))))
    return infos


def list_models() -> list[ModelInfo]:
    """Installed models (official first), then bundled ones."""
    installed = sorted(_infos_in(models_dir(), "installed"), key=_sort_key)
    bundled = sorted(_infos_in(bundled_dir(), "bundled"), key=_sort_key)
    return installed + bundled


def _is_hd5(path: Path) -> bool:
    return path.suffix.lower() in HD5_SUFFIXES


def official_hd5_files(folder: Path) -> dict[str, Path]:
    """``deepEMhancer_<name>.hd5`` files in a folder or its production_checkpoints/, by name."""
    found: dict[str, Path] = {}
    for where in (folder / SUBFOLDER, folder):  # the folder itself wins
        if where.is_dir():
            for path in sorted(where.glob(HD5_PREFIX + "*")):
                if _is_hd5(path) and path.is_file():
                    found[path.stem[len(HD5_PREFIX):]] = path
    return found


def _keras_import():
    """Imported on use: it pulls in torch, which listing and resolving models do not need."""
    from . import keras_import

    return keras_import


def cached_sha256(path: Path) -> str:
    """A file's sha256, remembered by (path, size, mtime) so 195 MiB files are hashed once."""
    path = Path(path).resolve()
    index_path = models_dir() / "converted" / "index.json"
    try:
        index = json.loads(index_path.read_text())
        if not isinstance(index, dict):
            index = {}
    except (OSError, ValueError):
        index = {}  # a missing or damaged index only costs a rehash
    stat = path.stat()
    entry = index.get(str(path))
    if isinstance(entry, dict) and entry.get("size") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
        return str(entry["sha256"])
    sha = _keras_import().file_sha256(path)
    index[str(path)] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": sha}
    try:
        index_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(index_path, json.dumps(index, indent=1))
    except OSError:
        pass  # a read-only model folder only costs a rehash next time
    return sha


def _convert(hd5: Path, dest_dir: Path) -> Path:
    """Convert an official .hd5 into dest_dir; any failure becomes one ModelError line."""
    check_writable_models_folder(dest_dir)  # so that a read-only folder is not blamed on the file
    try:
        return _keras_import().import_hd5(hd5, dest_dir)
    except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise ModelError(f"{hd5} cannot be converted ({type(exc).__name__}: {exc}); "
                         f"it is not an intact official DeepEMhancer .hd5 file: download it again") from None


def converted_model(hd5: Path) -> Path:
    """The model JSON converted from an official .hd5, converting it on first use only."""
    hd5 = Path(hd5)
    try:
        cache = models_dir() / "converted" / cached_sha256(hd5)[:16]
    except OSError as exc:
        raise ModelError(f"model file {hd5} cannot be read ({exc.strerror or exc})") from None
    for json_path in sorted(cache.glob("*.json")):
        try:
            read_metadata(json_path)
            return json_path
        except ModelError:
            json_path.unlink()  # a damaged cache entry: convert again
    return _convert(hd5, cache)


def _model_file(path: Path) -> Path:
    """A .json model as it is; an official .hd5 through the conversion cache."""
    if path.suffix.lower() == ".json":
        read_metadata(path)
        return path
    if _is_hd5(path):
        return converted_model(path)
    raise ModelError(f"{path} is neither a model .json nor an official .hd5 file")


def _folder_models(folder: Path) -> dict[str, Path]:
    """Models in a user-given folder by name: our JSONs first, then official .hd5 files."""
    found: dict[str, Path] = dict(official_hd5_files(folder))
    found.update({p.stem: p for p in sorted(folder.glob("*.json")) if p.is_file()})
    return found


def _from_folder(folder: Path, name: str | None) -> Path:
    """The original's --deepLearningModelPath folder: pick a model by name."""
    found = _folder_models(folder)
    if not found:
        raise ModelError(f"{folder} holds no deepEMhancer_*.hd5 files (also looked in {SUBFOLDER}/) "
                         f"and no model .json files; {HOW_TO_GET}")
    if name is None:
        if DEFAULT_NAME in found:
            name = DEFAULT_NAME
        elif len(found) == 1:
            name = next(iter(found))
        else:
            raise ModelError(f"{folder} holds several models and no {DEFAULT_NAME}; "
                             f"choose one of: {', '.join(sorted(found))}")
    if name not in found:
        raise ModelError(f"model {name!r} is not in {folder}; it holds: {', '.join(sorted(found))}")
    return _model_file(found[name])


def _default_bundled(normalizations: tuple[str, ...] = ("noise",)) -> Path | None:
    """The bundled model with one of these normalisations whose metadata says "default": true, else the
    first such."""
    infos = sorted((i for i in _infos_in(bundled_dir(), "bundled") if i.normalization in normalizations),
                   key=_sort_key)
    for info in infos:
        if read_metadata(info.json_path).get("default") is True:
            return info.json_path
    return infos[0].json_path if infos else None


def available_names() -> list[str]:
    """Every name resolve_model accepts without a model path, in listing order."""
    names = [info.name for info in list_models()]
    names += [n for n in official_hd5_files(original_models_dir()) if n not in names]
    return list(dict.fromkeys(names))


def _official_installed(name: str) -> bool:
    """Whether an official model of this name is imported or in the original's download folder."""
    return (models_dir() / f"{name}.json").is_file() or name in official_hd5_files(original_models_dir())


def _by_name(name: str) -> Path | None:
    """Look a name up in models_dir(), then the original's download folder, then the bundle."""
    installed = models_dir() / f"{name}.json"
    if installed.is_file():
        return _model_file(installed)
    original = official_hd5_files(original_models_dir()).get(name)
    if original is not None:
        return converted_model(original)
    bundled = bundled_dir() / f"{name}.json"
    return _model_file(bundled) if bundled.is_file() else None


def resolve_model(name: str | None = None, model_path: str | Path | None = None,
                  masked: bool = False, halves: bool = False) -> Path:
    """The model JSON to use for a model name and/or a model path (file or folder).

    ``masked`` (a binary mask was given) forces the official masked model, as the original's
    ``-m`` does; a model *file* given explicitly is used as it is, as in the original. Without a
    name: the official tightTarget when installed, else the bundled default, which is the half-map
    model when ``halves`` (two half maps were given and the run can use them), else the single-map one.
    """
    if masked:
        if name not in (None, MASKED_NAME):
            raise ModelError(f"a binary mask selects the {MASKED_NAME!r} model; "
                             f"do not also ask for model {name!r} (drop -p)")
        name = MASKED_NAME
    if model_path is not None:
        path = Path(model_path).expanduser()
        if path.is_dir():
            return _from_folder(path, name)
        if not path.is_file():
            raise ModelError(f"model path {path} does not exist")
        if name is not None and not masked:
            raise ModelError(f"{path} is one model file: give either it or a model name ({name!r}), not both")
        return _model_file(path)
    if name is None and _official_installed(DEFAULT_NAME):
        try:
            return _by_name(DEFAULT_NAME)
        except ModelError as error:
            # A damaged official file must not stop every default run: say how to repair it, go on.
            log.warning("%s; using the bundled model meanwhile (`deepemhancer models download` replaces a "
                        "damaged official file)", error)
    if name is None:
        default = (_default_bundled(HALVES_NORMALIZATIONS) if halves else None) or _default_bundled()
        if default is None:
            raise ModelError(f"no model is installed; {HOW_TO_GET}")
        return default
    found = _by_name(name)
    if found is None and masked:
        found = _default_bundled(("masked",))
    if found is None:
        listed = ", ".join(available_names()) or "none"
        raise ModelError(f"unknown model {name!r} (available: {listed}); {HOW_TO_GET}")
    return found


def _import_one(hd5: Path) -> Path:
    """Convert one official file into models_dir(), unless the same file is already there."""
    installed = models_dir() / f"{_keras_import().model_name(hd5)}.json"
    try:
        if read_metadata(installed).get("source", {}).get("sha256") == cached_sha256(hd5):
            return installed
    except (ModelError, OSError):
        pass  # not installed yet, damaged, or unreadable: convert (which reports a bad source)
    return _convert(hd5, models_dir())


def import_models(source: Path) -> list[Path]:
    """Import one official .hd5, or every deepEMhancer_*.hd5 in a folder, into models_dir()."""
    source = Path(source).expanduser()
    if source.is_file():
        if not _is_hd5(source):
            raise ModelError(f"{source} is not an .hd5 file; give a deepEMhancer_<name>.hd5 file or its folder")
        files = [source]
    elif source.is_dir():
        files = list(official_hd5_files(source).values())
        if not files:
            raise ModelError(f"{source} holds no deepEMhancer_*.hd5 files (also looked in {SUBFOLDER}/); "
                             f"give the folder that holds them, e.g. Scipion's deepEMhancer_v016")
    else:
        raise ModelError(f"{source} does not exist; give a deepEMhancer_<name>.hd5 file or its folder")
    return [_import_one(path) for path in files]
