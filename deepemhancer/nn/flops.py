"""Analytic operation count of a network's convolutions for one cube (the speed yardstick)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def convolution_flops(network: nn.Module, cube: int) -> int:
    """Floating-point operations (2 per multiply-add) of every convolution in one forward pass of
    one ``cube``³ single-channel input.

    Conv3d: 2 · output voxels · C_out · (C_in / groups) · k³. ConvTranspose3d: 2 · input voxels ·
    C_in · (C_out / groups) · k³ (every input voxel scatters a kernel). Shapes come from a forward
    pass on the meta device, so nothing is computed or allocated. Normalisation and activations
    (a few operations per voxel) are left out: they are memory-bound, not compute-bound.
    """
    total = 0

    def count(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        kernel = math.prod(module.kernel_size)
        if isinstance(module, nn.ConvTranspose3d):
            voxels = math.prod(inputs[0].shape[2:])
            total += 2 * voxels * module.in_channels * (module.out_channels // module.groups) * kernel
        else:
            voxels = math.prod(output.shape[2:])
            total += 2 * voxels * module.out_channels * (module.in_channels // module.groups) * kernel

    shadow = copy.deepcopy(network).to("meta")
    hooks = [m.register_forward_hook(count) for m in shadow.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    try:
        with torch.no_grad():
            shadow(torch.empty((1, 1, cube, cube, cube), device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return total
