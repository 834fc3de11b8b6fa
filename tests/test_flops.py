"""The convolution operation count against hand-computed answers."""
import torch
from torch import nn

from deepemhancer.nn.flops import convolution_flops
from deepemhancer.nn.layers import TFSameConv3d, TFSameConvTranspose3d
from deepemhancer.nn.unet import UNet


def test_single_convolution():
    network = nn.Conv3d(1, 4, 5, padding=2)
    assert convolution_flops(network, 8) == 2 * 8**3 * 4 * 1 * 125


def test_stride_two_and_transposed_tf_layers():
    network = nn.Sequential(TFSameConv3d(1, 3, 5, stride=2), TFSameConvTranspose3d(3, 2, 5, stride=2))
    down = 2 * 4**3 * 3 * 1 * 125      # 8³ -> 4³ outputs
    up = 2 * 4**3 * 3 * 2 * 125        # 4³ inputs scatter into 8³
    assert convolution_flops(network, 8) == down + up


def test_unet_count_scales_with_width_squared_and_leaves_weights_alone():
    small, large = UNet(width=0.5), UNet(width=1.0)  # both above the minimum of one group per level
    before = {k: v.clone() for k, v in small.state_dict().items()}
    ratio = convolution_flops(large, 32) / convolution_flops(small, 32)
    assert 3.0 < ratio < 4.2  # ~width² (the 1-channel input and output layers scale linearly)
    assert all(torch.equal(before[k], v) for k, v in small.state_dict().items())
