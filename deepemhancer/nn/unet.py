"""Our own U-Net, after the paper's Supplementary Table 1 as we read it.

5^3 kernels by default (the paper's; ``kernel_size``: 3 in the bundled models); down-sampling by
stride-2 convolutions, up-sampling by stride-2 transposed convolutions (``sampling="strided"``, the
paper's), or by 2^3 average pooling and trilinear interpolation each followed by a convolution
(``"interpolated"``). Strided layers give a
random network a response fixed to the cube's 2-voxel grid (the transposed convolution's
checkerboard), the same for independent inputs up to Nyquist; interpolation removes it there
(tests/test_trust.py); trained, it did no better for the single-map model and removed a fixed
grid pattern from the half-map model, which is bundled with it (docs/trust.md). GroupNorm +
PReLU after every hidden convolution; skips by
concatenation (decoder first, skip second); a linear one-channel output. Four down-samplings, so
every spatial size must be a multiple of 16 (64^3 cubes in practice). Unlike the official
models it uses torch.nn.GroupNorm, so it is translation-equivariant inside a cube. The paper's
detour to twice the cube size (official layers 23/24) is left out: it costs 128^3 x 16 floats
per cube for no demonstrated gain.

``residual=True`` makes the network a correction of its first input channel: the output is that
channel plus the U-Net's output, whose last convolution starts at zero (an untrained residual
network returns its input). The U-Net then sees the cube divided by the RMS of its first channel,
and its output is multiplied back: the correction scales with the map (doubling the input doubles
the output), which GroupNorm inside the network could not know otherwise. Further input channels
(``in_channels`` > 1) carry side information, e.g. the half-map noise, in the same units.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..errors import InputError, ModelError

DEFAULT_CHANNELS = (16, 32, 64, 128, 256)
SIZE_MULTIPLE_PER_LEVEL = 2
SAMPLINGS = ("strided", "interpolated")
MAX_IN_CHANNELS = 8
RESIDUAL_SCALE_FLOOR = 1e-6  # a cube of zeros stays (almost) zero instead of dividing by zero


def scaled_channels(channels: Sequence[int], width: float, groups: int) -> list[int]:
    """Channel counts times `width`, rounded to a multiple of `groups` and at least `groups`."""
    return [max(groups, round(c * width / groups) * groups) for c in channels]


def _norm_act(channels: int, groups: int) -> list[nn.Module]:
    return [nn.GroupNorm(groups, channels), nn.PReLU(channels)]


def _conv_block(in_channels: int, out_channels: int, kernel: int, groups: int, stride: int = 1) -> nn.Sequential:
    """Convolution ('same' size for stride 1, half size for stride 2 on even sizes), GroupNorm, PReLU."""
    conv = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2)
    return nn.Sequential(conv, *_norm_act(out_channels, groups))


def _down_block(in_channels: int, out_channels: int, kernel: int, groups: int, sampling: str) -> nn.Sequential:
    """Half the size: a stride-2 convolution, or pooling then a convolution; GroupNorm, PReLU."""
    if sampling == "strided":
        return _conv_block(in_channels, out_channels, kernel, groups, stride=2)
    return nn.Sequential(nn.AvgPool3d(2), _conv_block(in_channels, out_channels, kernel, groups))


def _up_block(in_channels: int, out_channels: int, kernel: int, groups: int, sampling: str) -> nn.Sequential:
    """Twice the size: a stride-2 transposed convolution, or interpolation then a convolution; GroupNorm, PReLU."""
    if sampling == "strided":
        conv = nn.ConvTranspose3d(in_channels, out_channels, kernel, stride=2, padding=kernel // 2, output_padding=1)
        return nn.Sequential(conv, *_norm_act(out_channels, groups))
    upsample = nn.Upsample(scale_factor=2, mode="trilinear", align_corners=False)
    return nn.Sequential(upsample, _conv_block(in_channels, out_channels, kernel, groups))


class UNet(nn.Module):
    """U-Net mapping (N, 1, D, H, W) to (N, 1, D, H, W); D, H, W multiples of 2**(len(channels)-1)."""

    def __init__(self, width: float = 1.0, groups: int = 8, channels: Sequence[int] = DEFAULT_CHANNELS,
                 kernel_size: int = 5, sampling: str = "strided", in_channels: int = 1,
                 residual: bool = False) -> None:
        super().__init__()
        if (width <= 0 or groups < 1 or len(channels) < 2 or kernel_size < 3 or kernel_size % 2 == 0
                or sampling not in SAMPLINGS or not 1 <= in_channels <= MAX_IN_CHANNELS):
            raise ModelError(f"invalid U-Net settings width={width}, groups={groups}, channels={list(channels)}, "
                             f"kernel_size={kernel_size}, sampling={sampling!r}, in_channels={in_channels} (need "
                             f"width>0, groups>=1, 2+ levels, odd kernel>=3, sampling one of {', '.join(SAMPLINGS)}, "
                             f"1 to {MAX_IN_CHANNELS} input channels)")
        self.width, self.groups, self.kernel_size = float(width), int(groups), int(kernel_size)
        self.sampling, self.in_channels, self.residual = sampling, int(in_channels), bool(residual)
        self.base_channels = [int(c) for c in channels]
        c = scaled_channels(self.base_channels, self.width, self.groups)
        k, g = self.kernel_size, self.groups
        self.stem = nn.Sequential(_conv_block(self.in_channels, c[0], k, g), _conv_block(c[0], c[0], k, g))
        self.down = nn.ModuleList(
            nn.Sequential(_down_block(c[i - 1], c[i], k, g, sampling), _conv_block(c[i], c[i], k, g))
            for i in range(1, len(c)))
        self.up = nn.ModuleList(_up_block(c[i + 1], c[i], k, g, sampling) for i in reversed(range(len(c) - 1)))
        self.merge = nn.ModuleList(
            nn.Sequential(_conv_block(2 * c[i], c[i], k, g), _conv_block(c[i], c[i], k, g))
            for i in reversed(range(len(c) - 1)))
        self.head = nn.Conv3d(c[0], 1, k, padding=k // 2)  # linear: the output is a regression
        if self.residual:  # the correction starts at zero: untrained, the network returns its input
            nn.init.zeros_(self.head.weight)
            nn.init.zeros_(self.head.bias)

    @property
    def size_multiple(self) -> int:
        """Every spatial size must be a multiple of this."""
        return SIZE_MULTIPLE_PER_LEVEL ** len(self.down)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(n % self.size_multiple for n in x.shape[2:]):
            raise InputError(f"the U-Net needs cube sides that are multiples of {self.size_multiple}, "
                             f"got {tuple(x.shape[2:])}; use another cube size")
        if x.shape[1] != self.in_channels:
            raise InputError(f"this U-Net takes {self.in_channels} input channel(s), got {x.shape[1]}")
        if not self.residual:
            return self._unet(x)
        scale = x[:, :1].pow(2).mean(dim=(1, 2, 3, 4), keepdim=True).sqrt().clamp_min(RESIDUAL_SCALE_FLOOR)
        return x[:, :1] + scale * self._unet(x / scale)

    def _unet(self, x: torch.Tensor) -> torch.Tensor:
        skips = [self.stem(x)]
        for level in self.down:
            skips.append(level(skips[-1]))
        out = skips.pop()
        for up, merge in zip(self.up, self.merge):
            out = merge(torch.cat([up(out), skips.pop()], dim=1))
        return self.head(out)

    def architecture(self) -> dict[str, Any]:
        """The JSON-able dict that `build_network` turns back into this network."""
        out = {"type": "unet", "width": self.width, "groups": self.groups,
               "channels": list(self.base_channels), "kernel_size": self.kernel_size, "sampling": self.sampling}
        if self.in_channels != 1 or self.residual:  # older readers know only the single-channel U-Net
            out.update(in_channels=self.in_channels, residual=self.residual)
        return out

    @classmethod
    def from_architecture(cls, architecture: dict[str, Any]) -> "UNet":
        """Rebuild from `architecture()`'s dict; unknown keys are refused."""
        settings = {k: v for k, v in architecture.items() if k != "type"}
        known = {"width", "groups", "channels", "kernel_size", "sampling", "in_channels", "residual"}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise ModelError(f"the U-Net architecture has unknown settings {', '.join(unknown)}; upgrade deepemhancer")
        try:
            return cls(**settings)
        except (TypeError, ValueError) as exc:
            raise ModelError(f"the U-Net architecture {settings} is invalid ({exc})") from None
