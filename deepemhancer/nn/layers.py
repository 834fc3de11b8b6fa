"""PyTorch layers that compute exactly what the official Keras/TensorFlow layers compute.

All take and return (N, C, D, H, W) tensors; D is the first spatial axis of the map and of Keras.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError


def _triple(value: int | tuple[int, ...] | list[int], what: str) -> tuple[int, int, int]:
    values = (value,) * 3 if isinstance(value, int) else tuple(int(v) for v in value)
    if len(values) != 3 or min(values) < 1:
        raise ModelError(f"{what} must be one or three positive integers, got {value!r}")
    return values


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'same' padding (before, after) of one axis: output ceil(size/stride), extra voxel after."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class TFSameConv3d(nn.Conv3d):
    """Conv3d with TensorFlow 'same' padding (stride 2, kernel 5, even size: 1 before, 2 after)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 1, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, _triple(kernel, "kernel size"),
                         stride=_triple(stride, "stride"), padding=0, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = [tf_same_padding(n, k, s) for n, k, s in zip(x.shape[2:], self.kernel_size, self.stride)]
        if all(before == after for before, after in pads):
            # Symmetric: let the convolution pad, which avoids a padded copy of the input.
            return F.conv3d(x, self.weight, self.bias, self.stride, [p[0] for p in pads])
        flat = [p for before_after in reversed(pads) for p in before_after]  # F.pad: last axis first
        return F.conv3d(F.pad(x, flat), self.weight, self.bias, self.stride, 0)


class TFSameConvTranspose3d(nn.ConvTranspose3d):
    """ConvTranspose3d with TensorFlow 'same' output size n*stride.

    TensorFlow's result is the full transposed convolution ((n-1)*stride + k voxels) cropped to
    [before : before + n*stride], `before` being the 'same' padding of the forward convolution on
    the n*stride grid (kernel 5, stride 2: [1 : 2n+1]). Cropping `before` on both sides through
    `padding` and cutting the tail gives the same voxels without building the full output.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int, int],
                 stride: int | tuple[int, int, int] = 2, bias: bool = True) -> None:
        kernel3, stride3 = _triple(kernel, "kernel size"), _triple(stride, "stride")
        before = tuple(max(k - s, 0) // 2 for k, s in zip(kernel3, stride3))
        # A kernel shorter than the stride leaves the last voxels to the bias only, as in TensorFlow.
        extra = tuple(max(s - k, 0) for k, s in zip(kernel3, stride3))
        super().__init__(in_channels, out_channels, kernel3, stride=stride3, padding=before,
                         output_padding=extra, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.conv_transpose3d(x, self.weight, self.bias, self.stride, self.padding, self.output_padding)
        d, h, w = (n * s for n, s in zip(x.shape[2:], self.stride))
        return out[:, :, :d, :h, :w]


class KerasGroupNormalization(nn.Module):
    """keras-contrib GroupNormalization (channels-last), including its z-slab behaviour.

    Keras reshapes (N, D, H, W, C) to (N, G, D, H, W, C/G) without a transpose, so a group is a
    contiguous 1/G chunk of each sample's channels-last memory (when G divides D: D/G consecutive
    z-slices, all channels). Mean and biased variance are taken over that chunk; gamma/beta of
    flat channels-last index i within a sample are entry (i // chunk) * (C/G) + (i mod C/G).
    This is not torch.nn.GroupNorm.
    """

    def __init__(self, channels: int, groups: int, epsilon: float = 1e-5,
                 center: bool = True, scale: bool = True) -> None:
        super().__init__()
        if groups < 1 or channels % groups:
            raise ModelError(f"group normalisation with {groups} groups cannot split {channels} channels")
        self.channels, self.groups, self.epsilon = channels, groups, float(epsilon)
        self.weight = nn.Parameter(torch.ones(channels)) if scale else None
        self.bias = nn.Parameter(torch.zeros(channels)) if center else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] != self.channels:
            raise ModelError(f"group normalisation expects {self.channels} channels, got {x.shape[1]}")
        if x.shape[2] % self.groups == 0:
            return self._forward_slabs(x)
        return self._forward_channels_last(x)

    def _forward_slabs(self, x: torch.Tensor) -> torch.Tensor:
        """G divides D: group s is z-slab s across all channels, computed in place of layout (no permute)."""
        n, c, d, h, w = x.shape
        g = self.groups
        slabs = x.reshape(n, c, g, d // g, h, w)
        var, mean = torch.var_mean(slabs, dim=(1, 3, 4, 5), unbiased=False, keepdim=True)
        # (x - mean) / std * gamma + beta as one pass over the activations: x * scale + shift, with
        # scale and shift per (sample, channel, slab); four full-size passes cost a quarter more
        scale = torch.rsqrt(var + self.epsilon)
        if self.weight is not None:
            scale = scale * self._per_slab(self.weight)
        shift = -mean * scale
        if self.bias is not None:
            shift = shift + self._per_slab(self.bias)
        return torch.addcmul(shift, slabs, scale).reshape(x.shape)

    def _per_slab(self, values: torch.Tensor) -> torch.Tensor:
        """gamma/beta as (1, C, G, 1, 1, 1): channel c of slab s uses entry s*(C/G) + c mod (C/G)."""
        g, c = self.groups, self.channels
        return values.view(g, c // g).repeat(1, g).t().reshape(1, c, g, 1, 1, 1)

    def _forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """Any D: the Keras computation literally, on a channels-last copy."""
        n, c = x.shape[:2]
        last = x.permute(0, 2, 3, 4, 1).contiguous()
        rows = last.reshape(n, self.groups, -1)
        var, mean = torch.var_mean(rows, dim=2, unbiased=False, keepdim=True)
        out = ((rows - mean) * torch.rsqrt(var + self.epsilon)).reshape(n, self.groups, -1, c // self.groups)
        affine = (1, self.groups, 1, c // self.groups)
        if self.weight is not None:
            out = out * self.weight.view(affine)
        if self.bias is not None:
            out = out + self.bias.view(affine)
        return out.reshape(last.shape).permute(0, 4, 1, 2, 3)

    def extra_repr(self) -> str:
        return f"{self.channels}, groups={self.groups}, epsilon={self.epsilon}"


def keras_prelu(channels: int, shared_axes: list[int] | None) -> nn.PReLU:
    """Keras PReLU whose alpha is shared over all spatial axes: torch PReLU with one alpha per channel.

    Other sharings give alpha a spatial shape tied to one input size, which a fully
    convolutional port cannot honour; they are refused.
    """
    if sorted(shared_axes or []) != [1, 2, 3]:
        raise ModelError(f"PReLU with shared_axes {shared_axes!r} is not supported "
                         "(only [1, 2, 3]: one alpha per channel)")
    return nn.PReLU(channels)
