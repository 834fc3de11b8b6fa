"""Official .hd5 files: reading, refusing, never executing, converting, and parity after conversion."""
from __future__ import annotations

import hashlib
import json

import h5py
import numpy as np
import pytest
import torch

from deepemhancer.errors import ModelError
from deepemhancer.models.keras_import import import_hd5, model_name, norm_function_name, read_official_hd5
from deepemhancer.models.store import load_network, read_metadata
from numpy_reference import keras_forward_numpy
from official_hd5 import write_official_hd5


@pytest.fixture
def official(tmp_path):
    return write_official_hd5(tmp_path / "deepEMhancer_tinyTarget.hd5", seed=5)


def test_import_then_load_matches_keras_reference(official, tmp_path):
    json_path = import_hd5(official["path"], tmp_path / "models")
    assert json_path == tmp_path / "models" / "tinyTarget.json"
    network, metadata = load_network(json_path)
    x = np.random.default_rng(0).normal(0, 0.3, size=(2, 16, 16, 16)).astype(np.float32)
    with torch.no_grad():
        out = network(torch.from_numpy(x)[:, None])[:, 0].numpy()
    expected = keras_forward_numpy(official["model_config"], official["weights"], x[..., None])[..., 0]
    assert np.abs(out - expected).max() <= 1e-4 * np.abs(expected).max()

    assert metadata["name"] == "tinyTarget" and metadata["trained"] is True
    assert metadata["normalization"] == "noise" and metadata["voxel_size"] == 1.0
    assert (metadata["cube_size"], metadata["stride"]) == (16, 4)
    assert metadata["architecture"] == {"type": "keras_graph", "model_config": official["model_config"]}
    digest = hashlib.sha256(official["path"].read_bytes()).hexdigest()
    assert metadata["source"] == {"file": "deepEMhancer_tinyTarget.hd5", "sha256": digest,
                                  "keras_version": "2.2.4", "norm_function": "inputNormalization_3"}


def test_read_keeps_weight_order_and_values(official):
    model = read_official_hd5(official["path"])
    assert model.model_config == official["model_config"]
    assert set(model.weights) == set(official["weights"])
    for name, arrays in official["weights"].items():
        assert len(model.weights[name]) == len(arrays)
        for got, wrote in zip(model.weights[name], arrays):
            np.testing.assert_array_equal(got, wrote)
    assert model.weights["input_1"] == [] and len(model.weights["group_normalization_3"]) == 1


def test_string_attributes_as_well_as_bytes(official):
    with h5py.File(official["path"], "r+") as f:
        f.attrs["model_config"] = json.dumps(official["model_config"])  # variable-length str
        f["model_weights"].attrs["layer_names"] = [n.decode() for n in f["model_weights"].attrs["layer_names"]]
    assert read_official_hd5(official["path"]).model_config == official["model_config"]


def test_embedded_code_is_never_executed(tmp_path):
    marker = tmp_path / "executed"
    source = (f"open({str(marker)!r}, 'w').write('ran')\n"
              "raise SystemExit('executed')\n"
              "def inputNormalization_3(x, noise_stats=None):\n    return x\n"
              "normFun = inputNormalization_3\n")
    written = write_official_hd5(tmp_path / "deepEMhancer_evil.hd5", norm_source=source)
    with h5py.File(written["path"], "r+") as f:
        del f["code/custom_objects"]
        f.create_dataset("code/custom_objects", data=[f"open({str(marker)!r}, 'w')\n"],
                         dtype=h5py.string_dtype())
    json_path = import_hd5(written["path"], tmp_path / "models")
    assert read_metadata(json_path)["normalization"] == "noise"
    assert not marker.exists()


def test_masked_function_maps_to_masked(tmp_path):
    written = write_official_hd5(tmp_path / "deepEMhancer_masked.hd5", norm_function="inputNormalizationWithMask_2")
    model = read_official_hd5(written["path"])
    assert (model.normalization, model.norm_function) == ("masked", "inputNormalizationWithMask_2")


def test_unknown_normalisation_refused_unless_overridden(tmp_path):
    written = write_official_hd5(tmp_path / "deepEMhancer_odd.hd5", norm_function="inputNormalization_7")
    with pytest.raises(ModelError, match="normalisation function inputNormalization_7 is unknown") as caught:
        import_hd5(written["path"], tmp_path / "models")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "models" / "odd.json").exists()
    json_path = import_hd5(written["path"], tmp_path / "models", name="mine", normalization="masked")
    metadata = read_metadata(json_path)
    assert json_path.name == "mine.json" and metadata["normalization"] == "masked"
    assert metadata["source"]["norm_function"] == "inputNormalization_7"
    with pytest.raises(ModelError, match="normalisation 'fancy' is unknown"):
        read_official_hd5(written["path"], normalization="fancy")


def test_missing_config_params_default_to_64_16(tmp_path):
    written = write_official_hd5(tmp_path / "plain.hd5", config_params=False)
    model = read_official_hd5(written["path"])
    assert (model.cube_size, model.stride) == (64, 16)
    assert model_name(written["path"]) == "plain"


@pytest.mark.parametrize("breakage,message", [
    ("not_hdf5", "not an HDF5 file"),
    ("no_config", "no model_config"),
    ("no_weights", "no model_weights"),
    ("missing_dataset", "misses a weight of layer conv3d_2"),
    ("wrong_shape", "conv3d_2"),
    ("no_norm_code", "no code/normFun"),
])
def test_broken_files_refused_with_one_line(tmp_path, breakage, message):
    path = tmp_path / "deepEMhancer_broken.hd5"
    if breakage == "not_hdf5":
        path.write_bytes(b"PK\x03\x04 this is a zip, not HDF5" * 10)
    else:
        write_official_hd5(path)
        with h5py.File(path, "r+") as f:
            if breakage == "no_config":
                del f.attrs["model_config"]
            elif breakage == "no_weights":
                del f["model_weights"]
            elif breakage == "missing_dataset":
                del f["model_weights/conv3d_2/conv3d_2/bias:0"]
            elif breakage == "wrong_shape":
                del f["model_weights/conv3d_2/conv3d_2/bias:0"]
                f["model_weights/conv3d_2/conv3d_2"].create_dataset("bias:0", data=np.zeros(3, np.float32))
            elif breakage == "no_norm_code":
                del f["code/normFun"]
    with pytest.raises(ModelError, match=message) as caught:
        import_hd5(path, tmp_path / "models")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "models").exists()  # nothing written


def test_missing_file_refused(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        read_official_hd5(tmp_path / "nothing.hd5")


@pytest.mark.parametrize("source,name", [
    ("def helper(x):\n    return x\n\ndef inputNormalization_3(x):\n    return helper(x)\n", "inputNormalization_3"),
    ("from deepEMhancer.utils.normalization import inputNormalizationWithMask_2 as normFun\n",
     "inputNormalizationWithMask_2"),
    ("def somethingElse(x):\n    return x\n", "somethingElse"),
    ("def a(x):\n    return x\n\ndef b(x):\n    return x\nnormFun = b\n", "b"),
])
def test_norm_function_name_read_from_text(source, name):
    assert norm_function_name(source) == name


def test_ambiguous_norm_code_refused():
    with pytest.raises(ModelError, match="no single function"):
        norm_function_name("def a(x):\n    return x\n\ndef b(x):\n    return x\n")
