"""Networks built from Keras model_config JSON, against the numpy walk of the same graph."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from deepemhancer.errors import ModelError
from deepemhancer.nn import build_network, count_parameters
from deepemhancer.nn.keras_graph import KerasGraphNetwork, keras_weights_to_state_dict
from numpy_reference import keras_forward_numpy
from official_hd5 import tiny_model_config, tiny_weights


@pytest.fixture(scope="module")
def tiny():
    config = tiny_model_config((2, 4), 2, 16)
    return config, tiny_weights(config, seed=3)


def run(config: dict, weights: dict, x_ndhwc: np.ndarray) -> np.ndarray:
    """Build, load the converted weights strictly, run in float64; return channels-last."""
    network = KerasGraphNetwork(config)
    network.load_state_dict(keras_weights_to_state_dict(config, weights), strict=True)
    with torch.no_grad():
        out = network.double()(torch.from_numpy(np.ascontiguousarray(x_ndhwc.transpose(0, 4, 1, 2, 3))))
    return out.numpy().transpose(0, 2, 3, 4, 1)


def layer(config: dict, name: str) -> dict:
    return next(entry for entry in config["config"]["layers"] if entry["name"] == name)


@pytest.mark.parametrize("shape", [(2, 16, 16, 16), (1, 16, 8, 12)])
def test_forward_matches_reference(tiny, shape):
    config, weights = tiny
    x = np.random.default_rng(0).normal(size=(*shape, 1))
    expected = keras_forward_numpy(config, weights, x)
    out = run(config, weights, x)
    assert out.shape == x.shape
    np.testing.assert_allclose(out, expected, rtol=1e-7, atol=1e-7 * np.abs(expected).max())


def test_concatenate_order_follows_inbound_nodes(tiny):
    config, weights = tiny
    swapped = copy.deepcopy(config)
    node = layer(swapped, "concatenate_1")["inbound_nodes"][0]
    node.reverse()
    # conv3d_transpose_2's kernel (.., Cout, Cin) must follow the new channel order.
    w = dict(weights)
    kernel = weights["conv3d_transpose_2"][0]
    w["conv3d_transpose_2"] = [np.concatenate([kernel[..., 4:], kernel[..., :4]], axis=-1),
                               weights["conv3d_transpose_2"][1]]
    x = np.random.default_rng(1).normal(size=(1, 16, 16, 16, 1))
    np.testing.assert_allclose(run(swapped, w, x), keras_forward_numpy(config, weights, x), rtol=1e-7, atol=1e-9)
    assert np.abs(run(swapped, weights, x) - run(config, weights, x)).max() > 1e-3


def test_relu_activation(tiny):
    config, weights = tiny
    relu = copy.deepcopy(config)
    layer(relu, "conv3d_2")["config"]["activation"] = "relu"
    x = np.random.default_rng(2).normal(size=(1, 16, 16, 16, 1))
    expected = keras_forward_numpy(relu, weights, x)
    np.testing.assert_allclose(run(relu, weights, x), expected, rtol=1e-7, atol=1e-9)
    assert np.abs(expected - keras_forward_numpy(config, weights, x)).max() > 1e-3


def test_state_dict_keys_come_from_keras_names(tiny):
    config, weights = tiny
    network = build_network({"type": "keras_graph", "model_config": config})
    keys = list(network.state_dict())
    assert keys == list(keras_weights_to_state_dict(config, weights))
    assert "layers.conv3d_transpose_2.weight" in keys and "layers.conv3d_3.bias" not in keys
    assert "layers.group_normalization_3.bias" in keys and "layers.group_normalization_3.weight" not in keys
    expected_count = sum(a.size for arrays in weights.values() for a in arrays)
    assert count_parameters(network) == expected_count


def test_converted_layouts(tiny):
    config, weights = tiny
    state = keras_weights_to_state_dict(config, weights)
    np.testing.assert_array_equal(state["layers.conv3d_2.weight"][3, 1, 0, 2, 4].numpy(),
                                  weights["conv3d_2"][0][0, 2, 4, 1, 3])  # (kd,kh,kw,Cin,Cout) -> (Cout,Cin,..)
    np.testing.assert_array_equal(state["layers.conv3d_transpose_1.weight"][3, 1, 4, 0, 2].numpy(),
                                  weights["conv3d_transpose_1"][0][4, 0, 2, 1, 3])  # (..,Cout,Cin) -> (Cin,Cout,..)
    np.testing.assert_array_equal(state["layers.p_re_lu_1.weight"].numpy(), weights["p_re_lu_1"][0].reshape(-1))
    assert all(t.dtype == torch.float32 for t in state.values())


@pytest.mark.parametrize("edit,message", [
    (lambda c: layer(c, "p_re_lu_2").update(class_name="LeakyReLU"), "LeakyReLU"),
    (lambda c: layer(c, "conv3d_2")["config"].update(activation="tanh"), "tanh"),
    (lambda c: layer(c, "conv3d_2")["config"].update(padding="valid"), "padding"),
    (lambda c: layer(c, "p_re_lu_2")["config"].update(shared_axes=None), "shared_axes"),
    (lambda c: layer(c, "conv3d_2")["inbound_nodes"][0][0].__setitem__(0, "nowhere"), "nowhere"),
    (lambda c: c.update(class_name="Sequential"), "functional"),
])
def test_unsupported_graphs_refused(tiny, edit, message):
    config = copy.deepcopy(tiny[0])
    edit(config)
    with pytest.raises(ModelError, match=message):
        KerasGraphNetwork(config)


def test_weight_mismatches_refused(tiny):
    config, weights = tiny
    wrong_shape = dict(weights, conv3d_2=[weights["conv3d_2"][0][..., :2], weights["conv3d_2"][1]])
    with pytest.raises(ModelError, match="conv3d_2"):
        keras_weights_to_state_dict(config, wrong_shape)
    missing = {k: v for k, v in weights.items() if k != "p_re_lu_4"}
    with pytest.raises(ModelError, match="p_re_lu_4"):
        keras_weights_to_state_dict(config, missing)
    extra = dict(weights, dense_9=[np.zeros(3)])
    with pytest.raises(ModelError, match="dense_9"):
        keras_weights_to_state_dict(config, extra)
    too_few = dict(weights, conv3d_1=weights["conv3d_1"][:1])
    with pytest.raises(ModelError, match="conv3d_1"):
        keras_weights_to_state_dict(config, too_few)


def test_build_network_refuses_unknown_type():
    with pytest.raises(ModelError, match="unknown network type"):
        build_network({"type": "resnet"})
