"""Model registry: folders, listing, name/file/folder resolution and the .hd5 conversion cache."""
from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import pytest
import torch

from deepemhancer.errors import ModelError
from deepemhancer.models import keras_import, registry
from deepemhancer.models.store import read_metadata, save_model
from official_hd5 import write_official_hd5

MASK_NORM = "inputNormalizationWithMask_2"
PACKAGE_BUNDLED_DIR = registry.bundled_dir  # before the fixture below replaces it


def make_model(folder: Path, name: str, **extra) -> Path:
    """A tiny valid model JSON + safetensors (never loaded here, only listed and resolved)."""
    metadata = {"name": name, "description": f"test model {name}", "architecture": {"type": "unet", "width": 2},
                "normalization": "noise", "cube_size": 16, "stride": 4, "voxel_size": 1.0, "trained": False,
                **extra}
    return save_model(folder / f"{name}.json", metadata, {"weight": torch.zeros(2)})


def official(folder: Path, name: str, seed: int = 0) -> Path:
    """A tiny official-layout deepEMhancer_<name>.hd5."""
    folder.mkdir(parents=True, exist_ok=True)
    norm = MASK_NORM if name == "masked" else "inputNormalization_3"
    path = folder / f"deepEMhancer_{name}.hd5"
    write_official_hd5(path, seed=seed, norm_function=norm)
    return path


@pytest.fixture(autouse=True)
def places(tmp_path, monkeypatch):
    """An empty home (the original's download folder) and an empty bundle for every test."""
    home, bundled = tmp_path / "home", tmp_path / "bundled"
    home.mkdir()
    bundled.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setattr(registry, "bundled_dir", lambda: bundled)
    return {"home": home, "bundled": bundled, "installed": registry.models_dir(),
            "original": home / ".local" / "share" / "deepEMhancerModels" / "production_checkpoints"}


@pytest.fixture
def conversions(monkeypatch):
    """Count the calls of import_hd5 (the registry converts through it)."""
    calls: list[Path] = []
    real = keras_import.import_hd5

    def counting(path, *args, **kwargs):
        calls.append(Path(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(keras_import, "import_hd5", counting)
    return calls


def test_models_dir_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("DEEPEMHANCER_MODELS_DIR", str(tmp_path / "here"))
    assert registry.models_dir() == tmp_path / "here"


def test_models_dir_xdg_then_home(monkeypatch, tmp_path, places):
    monkeypatch.delenv("DEEPEMHANCER_MODELS_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert registry.models_dir() == tmp_path / "xdg" / "deepemhancer" / "models"
    monkeypatch.delenv("XDG_DATA_HOME")
    assert registry.models_dir() == places["home"] / ".local" / "share" / "deepemhancer" / "models"


def test_bundled_dir_is_in_the_package():
    assert PACKAGE_BUNDLED_DIR() == Path(registry.__file__).resolve().parent / "bundled"


def test_list_models_installed_first_then_bundled(places):
    make_model(places["installed"], "mine")
    make_model(places["installed"], "tightTarget", trained=True)
    (places["installed"] / "junk.json").write_text("{not json")
    make_model(places["installed"] / "converted" / "abc", "hidden")  # the cache is not listed
    make_model(places["bundled"], "zeta", normalization="masked")
    make_model(places["bundled"], "alpha")
    infos = registry.list_models()
    assert [(i.name, i.origin) for i in infos] == [
        ("tightTarget", "installed"), ("mine", "installed"), ("alpha", "bundled"), ("zeta", "bundled")]
    zeta = infos[-1]
    assert zeta.json_path == places["bundled"] / "zeta.json"
    assert (zeta.normalization, zeta.trained, zeta.description) == ("masked", False, "test model zeta")
    assert infos[0].trained is True


def test_resolve_by_name_installed_before_bundled(places):
    make_model(places["bundled"], "shared")
    make_model(places["bundled"], "onlybundled")
    installed = make_model(places["installed"], "shared")
    assert registry.resolve_model("shared") == installed
    assert registry.resolve_model("onlybundled") == places["bundled"] / "onlybundled.json"


def test_default_is_bundled_default_until_tighttarget_installed(places):
    make_model(places["bundled"], "first")
    chosen = make_model(places["bundled"], "second", default=True)
    assert registry.resolve_model() == chosen
    tight = make_model(places["installed"], "tightTarget")
    assert registry.resolve_model() == tight


def test_default_without_any_model_says_how_to_get_one():
    with pytest.raises(ModelError, match="models download") as err:
        registry.resolve_model()
    assert "\n" not in str(err.value)


def test_default_uses_tighttarget_from_the_original_download_folder(places, conversions):
    make_model(places["bundled"], "ours", default=True)
    hd5 = official(places["original"], "tightTarget")
    path = registry.resolve_model()
    assert conversions == [hd5]
    assert path.parent.parent == places["installed"] / "converted"
    assert read_metadata(path)["normalization"] == "noise"
    assert "tightTarget" in registry.available_names()


def test_resolve_json_path_and_bad_paths(tmp_path):
    model = make_model(tmp_path / "elsewhere", "custom")
    assert registry.resolve_model(model_path=model) == model
    assert registry.resolve_model(model_path=str(model), masked=True) == model  # an explicit file is used as is
    with pytest.raises(ModelError, match="does not exist"):
        registry.resolve_model(model_path=tmp_path / "missing.json")
    with pytest.raises(ModelError, match="not both"):
        registry.resolve_model("highRes", model_path=model)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match="neither"):
        registry.resolve_model(model_path=tmp_path / "notes.txt")


def test_hd5_file_is_converted_once_and_again_when_it_changes(tmp_path, places, conversions, monkeypatch):
    hd5 = official(tmp_path / "download", "highRes", seed=1)
    first = registry.resolve_model(model_path=hd5)
    assert conversions == [hd5]
    assert first.parent.parent == places["installed"] / "converted"
    assert first.with_suffix(".safetensors").is_file()

    hashes: list[Path] = []
    real_sha = keras_import.file_sha256
    monkeypatch.setattr(keras_import, "file_sha256", lambda p: hashes.append(p) or real_sha(p))
    assert registry.resolve_model(model_path=hd5) == first
    assert conversions == [hd5] and hashes == []  # neither reconverted nor rehashed

    write_official_hd5(hd5, seed=2)  # same name, new content
    os.utime(hd5, ns=(1, 1))  # a different mtime even on coarse-clock file systems
    second = registry.resolve_model(model_path=hd5)
    assert second != first and len(conversions) == 2 and hashes
    index = json.loads((places["installed"] / "converted" / "index.json").read_text())
    assert index[str(hd5.resolve())]["sha256"].startswith(second.parent.name)


def test_folder_with_several_models_chooses_by_name(tmp_path):
    folder = tmp_path / "deepEMhancer_v016"
    for seed, name in enumerate(("tightTarget", "highRes", "masked")):
        official(folder / "production_checkpoints", name, seed=seed)
    make_model(folder, "custom")
    assert read_metadata(registry.resolve_model(model_path=folder))["name"] == "tightTarget"
    assert read_metadata(registry.resolve_model("highRes", model_path=folder))["name"] == "highRes"
    masked = registry.resolve_model(model_path=folder, masked=True)
    assert read_metadata(masked)["normalization"] == "masked"
    assert registry.resolve_model("custom", model_path=folder) == folder / "custom.json"
    with pytest.raises(ModelError, match="custom, highRes, masked, tightTarget"):
        registry.resolve_model("wideTarget", model_path=folder)


def test_folder_without_models(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no deepEMhancer_"):
        registry.resolve_model(model_path=tmp_path / "empty")


def test_masked_forces_the_masked_model(places):
    masked = make_model(places["installed"], "masked", normalization="masked")
    make_model(places["installed"], "tightTarget")
    assert registry.resolve_model(masked=True) == masked
    assert registry.resolve_model("masked", masked=True) == masked
    with pytest.raises(ModelError, match="binary mask"):
        registry.resolve_model("highRes", masked=True)


def test_unknown_name_lists_the_available_ones(places):
    make_model(places["installed"], "mine")
    make_model(places["bundled"], "ours")
    official(places["original"], "wideTarget")
    with pytest.raises(ModelError) as err:
        registry.resolve_model("tightTarget")
    message = str(err.value)
    assert "\n" not in message
    assert "mine, ours, wideTarget" in message
    assert "deepemhancer models download" in message and "--deepLearningModelPath" in message


@pytest.mark.parametrize("content", ["garbage", "hdf5 without a model"])
def test_corrupt_hd5_is_a_one_line_model_error(tmp_path, content):
    bad = tmp_path / "deepEMhancer_tightTarget.hd5"
    if content == "garbage":
        bad.write_bytes(b"this is not an HDF5 file" * 10)
    else:
        with h5py.File(bad, "w") as handle:
            handle.create_dataset("x", data=[1.0])
    with pytest.raises(ModelError) as err:
        registry.resolve_model(model_path=bad)
    assert "\n" not in str(err.value)
    assert str(bad) in str(err.value)


def test_import_models_from_a_scipion_bundle(tmp_path, places):
    bundle = tmp_path / "xmipp" / "deepEMhancer_v016"
    for name in ("tightTarget", "masked"):
        official(bundle / "production_checkpoints", name)
    paths = registry.import_models(bundle)
    assert sorted(p.name for p in paths) == ["masked.json", "tightTarget.json"]
    assert all(p.parent == places["installed"] for p in paths)
    assert [(i.name, i.origin) for i in registry.list_models()] == [
        ("tightTarget", "installed"), ("masked", "installed")]
    assert registry.resolve_model() == places["installed"] / "tightTarget.json"
    assert read_metadata(registry.resolve_model(masked=True))["normalization"] == "masked"


def test_import_models_single_file_and_errors(tmp_path, places):
    hd5 = official(tmp_path, "wideTarget")
    assert registry.import_models(hd5) == [places["installed"] / "wideTarget.json"]
    with pytest.raises(ModelError, match="not an .hd5"):
        registry.import_models(places["installed"] / "wideTarget.json")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no deepEMhancer_"):
        registry.import_models(tmp_path / "empty")
    with pytest.raises(ModelError, match="does not exist"):
        registry.import_models(tmp_path / "nowhere")
