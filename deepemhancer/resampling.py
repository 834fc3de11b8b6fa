"""Resampling between a map's own grid and the networks' 1 Å grid.

Two modes:

- legacy: the original's `resize` call and rounded shape. scikit-image aligns the outer box edges
  of both grids, so on the "1 Å" grid a feature is offset by 0.5 * (voxel_size - 1) Å and, as the
  shape is rounded, the spacing is n * voxel_size / round(n * voxel_size) instead of 1 Å: the
  network sees a slightly shifted, rescaled map (up to about 0.6 Å off in tests). The inverse
  resize undoes both, so the round trip itself does not move the map.
- corrected (default): both grids share the centre of voxel 0 and the model grid has exactly the
  target spacing, so voxel i of the input sits at model coordinate i * voxel_size / target. The
  way back samples the model grid exactly at the input voxel centres, so nothing moves.

The corrected mode interpolates with cubic B-splines (scipy's prefilter, mirror boundaries), one
axis at a time: for tensor-product splines this equals the 3-D interpolation, and it keeps memory
to one output-sized float32 array plus small float64 blocks. When an axis goes to a coarser grid it
is first smoothed by a Gaussian of sigma (s - 1) / 2 input voxels, s being the spacing ratio: the
same anti-aliasing scikit-image applies in legacy mode, so both modes smooth alike.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage
from skimage.transform import resize

from .errors import InputError

# Voxel sizes closer than this (Å) are treated as equal: no resampling at all.
_SAME_SIZE_TOL = 1e-6
# scipy.ndimage boundary mode for the spline prefilter, the Gaussian and the coefficient
# extension; 'mirror' is what scikit-image's mode='reflect' becomes, so legacy and corrected
# modes treat box edges alike.
_MODE = "mirror"
# Elements per float64 working block in the per-axis resampling (about 32 MB).
_BLOCK_ELEMENTS = 4_000_000


def _check_voxel_sizes(voxel_size: float, target_voxel_size: float) -> None:
    for name, value in (("voxel size", voxel_size), ("target voxel size", target_voxel_size)):
        if not (math.isfinite(value) and value > 0):
            raise InputError(f"the {name} must be a positive number of Å, got {value}; give the map's voxel size",
                             setting="voxel_size")


def _check_map(x: np.ndarray) -> None:
    if x.ndim != 3 or min(x.shape) < 1:
        raise InputError(f"expected a 3-D map, got an array of shape {x.shape}")


def _same_size(voxel_size: float, target_voxel_size: float) -> bool:
    return abs(voxel_size - target_voxel_size) <= _SAME_SIZE_TOL


def legacy_target_shape(
    shape: Sequence[int], voxel_size: float, target_voxel_size: float = 1.0
) -> tuple[int, int, int]:
    """The original's resampled shape: Python `round(n * voxel_size / target)` on each axis.

    The ratio is computed in float64, as NumPy 1.x does for the original's float32 header value.
    """
    _check_voxel_sizes(float(voxel_size), float(target_voxel_size))
    factor = float(voxel_size) / float(target_voxel_size)
    new_shape = tuple(round(int(n) * factor) for n in shape)
    if min(new_shape) < 1:
        raise InputError(f"a {tuple(shape)} map at {voxel_size} Å/voxel is too small to resample to {target_voxel_size} Å/voxel")
    return new_shape


def legacy_resize(x: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """The original's resizeVol: scikit-image `resize` with its exact parameters.

    Cubic spline (order=3), box edges aligned, mode 'reflect' (scipy 'mirror'), Gaussian
    anti-aliasing of sigma max(0, (factor - 1) / 2) per axis, output clipped to the input's
    [min, max]. float32 stays float32 and float64 stays float64 (scikit-image >= 0.19); values are
    not rescaled for float input. Non-float input is first made float32, as the original's
    reader does for every map and mask.
    """
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return resize(
        x,
        tuple(int(n) for n in shape),
        order=3,
        mode="reflect",
        cval=0,
        clip=True,
        preserve_range=False,
        anti_aliasing=True,
        anti_aliasing_sigma=None,
    )


def model_grid_shape(
    shape: Sequence[int], voxel_size: float, target_voxel_size: float = 1.0
) -> tuple[int, int, int]:
    """Shape of the corrected model grid: the fewest target-spaced voxels, starting at the centre of
    input voxel 0, whose last centre reaches the centre of the last input voxel."""
    _check_voxel_sizes(float(voxel_size), float(target_voxel_size))
    if _same_size(voxel_size, target_voxel_size):
        return tuple(int(n) for n in shape)
    ratio = float(voxel_size) / float(target_voxel_size)
    # The tolerance keeps an extent that is a whole number of target voxels from gaining one.
    return tuple(math.ceil((int(n) - 1) * ratio - 1e-6) + 1 for n in shape)


def _mirror_indices(idx: np.ndarray, n: int) -> np.ndarray:
    """Fold indices into [0, n) by whole-sample symmetry about 0 and n - 1 (scipy 'mirror')."""
    if n == 1:
        return np.zeros_like(idx)
    period = 2 * (n - 1)
    folded = np.abs(idx) % period
    return np.where(folded >= n, period - folded, folded)


def _cubic_taps(positions: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (4, m) into the spline coefficients and cubic B-spline weights (4, m) at `positions`."""
    base = np.floor(positions)
    u = positions - base
    weights = np.stack(
        [
            (1 - u) ** 3 / 6,
            (3 * u**3 - 6 * u**2 + 4) / 6,
            (-3 * u**3 + 3 * u**2 + 3 * u + 1) / 6,
            u**3 / 6,
        ]
    )
    indices = base.astype(np.int64)[None, :] + np.arange(-1, 3)[:, None]
    return _mirror_indices(indices, n), weights


def _resample_axis(x: np.ndarray, axis: int, positions: np.ndarray, sigma: float) -> np.ndarray:
    """Resample `x` along `axis` at `positions` (in input voxel units), after an optional
    Gaussian of `sigma` input voxels; float32 output, C-contiguous."""
    n_in = x.shape[axis]
    indices, weights = _cubic_taps(positions, n_in)
    out_shape = list(x.shape)
    out_shape[axis] = len(positions)
    out = np.empty(out_shape, dtype=np.float32)
    src = np.moveaxis(x, axis, 0)
    dst = np.moveaxis(out, axis, 0)
    # Blocks along the next axis: every 1-D line is independent, so memory stays bounded.
    line_elements = n_in * int(np.prod(src.shape[2:]))
    rows = max(1, _BLOCK_ELEMENTS // max(1, line_elements))
    for start in range(0, src.shape[1], rows):
        block = src[:, start : start + rows].astype(np.float64)
        if sigma > 0:
            block = ndimage.gaussian_filter1d(block, sigma, axis=0, mode=_MODE)
        coeffs = ndimage.spline_filter1d(block, order=3, axis=0, mode=_MODE, output=np.float64)
        weight_shape = (-1,) + (1,) * (coeffs.ndim - 1)
        acc = weights[0].reshape(weight_shape) * coeffs[indices[0]]
        for k in range(1, 4):
            acc += weights[k].reshape(weight_shape) * coeffs[indices[k]]
        dst[:, start : start + rows] = acc
    return out


def _antialias_sigma(step: float) -> float:
    """Gaussian sigma (input voxels) before sampling every `step` input voxels: (step - 1) / 2
    when coarsening, as scikit-image does, else none."""
    return max(0.0, (step - 1.0) / 2.0)


def _resample(x: np.ndarray, out_shape: Sequence[int], step: float) -> np.ndarray:
    """Sample output voxel j of every axis at input coordinate j * step."""
    out = x
    for axis, n_out in enumerate(out_shape):
        out = _resample_axis(out, axis, np.arange(n_out) * step, _antialias_sigma(step))
    return out


def to_model_grid(x: np.ndarray, voxel_size: float, target_voxel_size: float = 1.0) -> np.ndarray:
    """Resample a map onto the model grid (spacing `target_voxel_size`, voxel 0 centres shared);
    float32. Identity (a float32 copy) when the voxel size already equals the target."""
    _check_map(x)
    _check_voxel_sizes(float(voxel_size), float(target_voxel_size))
    if _same_size(voxel_size, target_voxel_size):
        return x.astype(np.float32, copy=True)
    out_shape = model_grid_shape(x.shape, voxel_size, target_voxel_size)
    return _resample(x, out_shape, float(target_voxel_size) / float(voxel_size))


def from_model_grid(
    y: np.ndarray, voxel_size: float, shape: Sequence[int], target_voxel_size: float = 1.0
) -> np.ndarray:
    """Sample a model-grid map back at the centres of the input grid of `shape`; float32.

    `y` must have `model_grid_shape(shape, voxel_size, target_voxel_size)` (unpadded)."""
    _check_map(y)
    _check_voxel_sizes(float(voxel_size), float(target_voxel_size))
    expected = model_grid_shape(shape, voxel_size, target_voxel_size)
    if tuple(y.shape) != expected:
        raise ValueError(f"model-grid map has shape {tuple(y.shape)}, expected {expected} for a {tuple(shape)} input")
    if _same_size(voxel_size, target_voxel_size):
        return y.astype(np.float32, copy=True)
    return _resample(y, tuple(int(n) for n in shape), float(voxel_size) / float(target_voxel_size))
