"""The Keras-exact layers against the independent numpy reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from deepemhancer.errors import ModelError
from deepemhancer.nn.layers import (KerasGroupNormalization, TFSameConv3d, TFSameConvTranspose3d, keras_prelu,
                                    tf_same_padding)
from numpy_reference import (conv3d_same, conv3d_transpose_same, group_norm_keras, group_norm_standard, prelu,
                             tf_same_pads)

RNG = np.random.default_rng(7)


def to_torch(x_ndhwc: np.ndarray) -> torch.Tensor:
    """Channels-last numpy -> NCDHW float64 tensor (no spatial reordering)."""
    return torch.from_numpy(np.ascontiguousarray(x_ndhwc.transpose(0, 4, 1, 2, 3)))


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().numpy().transpose(0, 2, 3, 4, 1)


def group_norm_layer(channels: int, groups: int, gamma: np.ndarray, beta: np.ndarray) -> KerasGroupNormalization:
    layer = KerasGroupNormalization(channels, groups, 1e-5).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(gamma))
        layer.bias.copy_(torch.from_numpy(beta))
    return layer


@pytest.mark.parametrize("shape,groups", [((2, 8, 3, 5, 4), 2), ((1, 8, 4, 4, 8), 4), ((2, 3, 4, 5, 4), 2),
                                          ((1, 6, 2, 2, 6), 3)])
def test_group_norm_matches_keras_contrib_reference(shape, groups):
    x = RNG.normal(1.0, 2.0, shape)
    c = shape[-1]
    gamma, beta = RNG.uniform(0.5, 1.5, c), RNG.normal(0, 0.5, c)
    out = to_numpy(group_norm_layer(c, groups, gamma, beta)(to_torch(x)))
    np.testing.assert_allclose(out, group_norm_keras(x, groups, 1e-5, gamma, beta), rtol=1e-10, atol=1e-10)


def test_group_norm_differs_from_torch_group_norm():
    x = RNG.normal(0.0, 1.0, (1, 8, 6, 6, 4)) + np.linspace(-2, 2, 8)[None, :, None, None, None]
    keras = to_numpy(group_norm_layer(4, 2, np.ones(4), np.zeros(4))(to_torch(x)))
    standard = to_numpy(F.group_norm(to_torch(x), 2, eps=1e-5))
    np.testing.assert_allclose(standard, group_norm_standard(x, 2, 1e-5), rtol=1e-10, atol=1e-10)
    assert np.abs(keras - standard).max() > 0.5


def test_group_norm_groups_are_z_slabs():
    """With G dividing D, group g is z-slices [g*D/G, (g+1)*D/G) across all channels: slabs are independent."""
    x = RNG.normal(size=(1, 8, 4, 4, 4))
    layer = group_norm_layer(4, 2, RNG.uniform(0.5, 1.5, 4), RNG.normal(size=4))
    changed = x.copy()
    changed[:, :4] = RNG.normal(3.0, 2.0, changed[:, :4].shape)  # the first slab only
    a, b = to_numpy(layer(to_torch(x))), to_numpy(layer(to_torch(changed)))
    np.testing.assert_allclose(a[:, 4:], b[:, 4:], rtol=1e-12)
    assert np.abs(a[:, :4] - b[:, :4]).max() > 0.1
    slab = to_numpy(group_norm_layer(4, 2, np.ones(4), np.zeros(4))(to_torch(x)))[:, :4]
    assert abs(slab.mean()) < 1e-12 and abs(slab.var() - 1) < 1e-3


def test_group_norm_without_affine_and_bad_groups():
    layer = KerasGroupNormalization(4, 2, 1e-5, center=False, scale=False).double()
    assert list(layer.state_dict()) == []
    x = RNG.normal(size=(1, 4, 4, 4, 4))
    np.testing.assert_allclose(to_numpy(layer(to_torch(x))), group_norm_keras(x, 2, 1e-5, None, None), atol=1e-12)
    with pytest.raises(ModelError):
        KerasGroupNormalization(6, 4)


def test_tf_same_padding_rules():
    assert tf_same_padding(64, 5, 1) == (2, 2) == tf_same_pads(64, 5, 1)
    assert tf_same_padding(64, 5, 2) == (1, 2) == tf_same_pads(64, 5, 2)
    assert tf_same_padding(16, 5, 2) == (1, 2)
    assert tf_same_padding(15, 5, 2) == (2, 2) == tf_same_pads(15, 5, 2)


def conv_layer(cls, kernel_np: np.ndarray, bias: np.ndarray, stride: int, transpose: bool):
    """A torch layer holding a Keras-layout kernel, converted by the documented transpose."""
    k = kernel_np.shape[:3]
    cin, cout = (kernel_np.shape[4], kernel_np.shape[3]) if transpose else (kernel_np.shape[3], kernel_np.shape[4])
    layer = cls(cin, cout, k, stride).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(kernel_np.transpose(4, 3, 0, 1, 2).copy()))
        layer.bias.copy_(torch.from_numpy(bias))
    return layer


@pytest.mark.parametrize("stride,size", [(1, (6, 7, 5)), (2, (8, 8, 8)), (2, (7, 6, 9)), (3, (7, 8, 6))])
def test_same_conv_matches_tensorflow(stride, size):
    x = RNG.normal(size=(2, *size, 3))
    kernel, bias = RNG.normal(size=(5, 5, 5, 3, 2)), RNG.normal(size=2)
    out = to_numpy(conv_layer(TFSameConv3d, kernel, bias, stride, False)(to_torch(x)))
    np.testing.assert_allclose(out, conv3d_same(x, kernel, bias, stride), rtol=1e-10, atol=1e-10)


def test_torch_symmetric_padding_is_wrong_for_stride_two():
    x = RNG.normal(size=(1, 8, 8, 8, 2))
    kernel = RNG.normal(size=(5, 5, 5, 2, 2))
    weight = torch.from_numpy(kernel.transpose(4, 3, 0, 1, 2).copy())
    naive = to_numpy(F.conv3d(to_torch(x), weight, stride=2, padding=2))
    assert naive.shape == conv3d_same(x, kernel, None, 2).shape
    assert np.abs(naive - conv3d_same(x, kernel, None, 2)).max() > 0.1


@pytest.mark.parametrize("kernel_size,stride,size", [(5, 2, (4, 4, 4)), (5, 2, (3, 5, 4)), (3, 2, (4, 3, 5)),
                                                      (5, 1, (4, 5, 3)), (2, 3, (3, 2, 4))])
def test_same_transposed_conv_matches_tensorflow(kernel_size, stride, size):
    x = RNG.normal(size=(2, *size, 3))
    kernel, bias = RNG.normal(size=(kernel_size,) * 3 + (2, 3)), RNG.normal(size=2)
    out = to_numpy(conv_layer(TFSameConvTranspose3d, kernel, bias, stride, True)(to_torch(x)))
    expected = conv3d_transpose_same(x, kernel, bias, stride)
    assert out.shape[1:4] == tuple(n * stride for n in size)
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)


def test_torch_padding_two_output_padding_one_is_wrong_for_transposed():
    x = RNG.normal(size=(1, 4, 4, 4, 2))
    kernel = RNG.normal(size=(5, 5, 5, 2, 2))
    weight = torch.from_numpy(kernel.transpose(4, 3, 0, 1, 2).copy())
    naive = to_numpy(F.conv_transpose3d(to_torch(x), weight, stride=2, padding=2, output_padding=1))
    expected = conv3d_transpose_same(x, kernel, None, 2)
    assert naive.shape == expected.shape and np.abs(naive - expected).max() > 0.1


def test_reference_transposed_conv_is_the_adjoint_of_the_conv():
    """Check the reference itself: <conv(x), y> == <x, conv_transpose(y)> for the same kernel."""
    x, y = RNG.normal(size=(1, 8, 6, 10, 2)), RNG.normal(size=(1, 4, 3, 5, 3))
    kernel = RNG.normal(size=(5, 5, 5, 2, 3))  # conv: (.., Cin=2, Cout=3); transposed: (.., Cout=2, Cin=3)
    lhs = np.sum(conv3d_same(x, kernel, None, 2) * y)
    rhs = np.sum(x * conv3d_transpose_same(y, kernel, None, 2))
    assert lhs == pytest.approx(rhs, rel=1e-10)


def test_prelu_shares_alpha_over_space():
    x = RNG.normal(size=(2, 3, 4, 5, 3))
    alpha = RNG.uniform(0.1, 0.5, (1, 1, 1, 3))
    layer = keras_prelu(3, [1, 2, 3]).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(alpha.reshape(-1)))
    np.testing.assert_allclose(to_numpy(layer(to_torch(x))), prelu(x, alpha), rtol=1e-12)


@pytest.mark.parametrize("shared", [None, [1, 2], [4]])
def test_prelu_other_sharing_refused(shared):
    with pytest.raises(ModelError, match="shared_axes"):
        keras_prelu(3, shared)
