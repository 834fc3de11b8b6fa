"""Local correlation: Pearson correlation of two maps in a sliding cubic window.

The DeepEMhancer paper (Supplementary Note 2) reports the median of the local correlation between
a map and its model map, in 5- and 7-voxel windows, over the voxels of the model mask.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .fourier import check_map_shapes

_SLAB = 16  # output planes computed at a time (each with its window's halo): bounds float64 temporaries
_FLAT = 1e-10  # a window whose variance is below this fraction of the map's variance is flat


def local_correlation(a: np.ndarray, b: np.ndarray, window: int = 5, mask: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation of ``a`` and ``b`` in the ``window``³ cube centred on each voxel (float32).

    Windows reaching past the box are completed by reflection (scipy.ndimage's 'reflect'). NaN where
    either map is flat within the window (variance below 1e-10 of the map's), and outside ``mask``
    (voxels with mask > 0.5) when one is given.
    """
    _check(a, b, window, mask)
    mean_a, mean_b = float(np.mean(a, dtype=np.float64)), float(np.mean(b, dtype=np.float64))
    floor_a = _FLAT * float(np.var(a, dtype=np.float64))
    floor_b = _FLAT * float(np.var(b, dtype=np.float64))
    halo = window // 2
    result = np.full(a.shape, np.nan, dtype=np.float32)
    for start in range(0, a.shape[0], _SLAB):
        stop = min(start + _SLAB, a.shape[0])
        low, high = max(0, start - halo), min(a.shape[0], stop + halo)
        # Centred float64 copies: E[x²] - E[x]² then loses no digits to a large mean.
        xa = np.asarray(a[low:high], dtype=np.float64) - mean_a
        xb = np.asarray(b[low:high], dtype=np.float64) - mean_b
        keep = slice(start - low, stop - low)
        ma, mb = _window_mean(xa, window)[keep], _window_mean(xb, window)[keep]
        var_a = _window_mean(xa * xa, window)[keep] - ma * ma
        var_b = _window_mean(xb * xb, window)[keep] - mb * mb
        cov = _window_mean(xa * xb, window)[keep] - ma * mb
        valid = (var_a > floor_a) & (var_b > floor_b)
        block = np.full(cov.shape, np.nan)
        block[valid] = cov[valid] / np.sqrt(var_a[valid] * var_b[valid])
        result[start:stop] = block
    if mask is not None:
        result[np.asarray(mask) <= 0.5] = np.nan
    return result


def median_local_correlation(a: np.ndarray, b: np.ndarray, window: int, mask: np.ndarray) -> float:
    """Median of ``local_correlation(a, b, window, mask)`` over the mask's non-flat voxels."""
    values = local_correlation(a, b, window, mask)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        raise InputError("no voxel inside the mask has a non-flat window in both maps; check the mask and the maps")
    return float(np.median(finite))


def _window_mean(values: np.ndarray, window: int) -> np.ndarray:
    return ndimage.uniform_filter(values, size=window, mode="reflect")


def _check(a: np.ndarray, b: np.ndarray, window: int, mask: np.ndarray | None) -> None:
    """InputError for arrays of different shapes or an even or too small window."""
    check_map_shapes(a, b, mask)
    if int(window) != window or window < 3 or window % 2 == 0:
        raise InputError(f"the local correlation window must be an odd number of voxels >= 3, got {window}")
