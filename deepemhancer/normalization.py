"""Input normalisation, as the original's models expect it.

- noise statistics: noise mean 0 and std 0.1, i.e. (x - mean) / (std * 10), with the statistics
  given by the user or estimated by the original's radial heuristic (`inputNormalization_3`);
- masked: median and 10-95 percentile range of the positive density inside a dilated, binarised
  mask, zero outside (`inputNormalizationWithMask_2`).

Numerics follow the original call by call (same scipy calls, parameters, dtypes and order) so the
legacy mode gives the same numbers.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.signal import argrelextrema
from scipy.stats import iqr

from .errors import InputError, NormalizationError
from .metrics import check_mask
from .resampling import legacy_resize

log = logging.getLogger("deepemhancer")

# The way out, in no front end's words: each error also names its setting ("normalisation") for
# the front end to point at its own control (the command line: --noiseStats or -m).
_ADVICE = ("give the noise statistics (mean and standard deviation, measured in a solvent region) or a "
           "binary mask of the molecule")
_MIN_SOLVENT_VOXELS = 1000  # fewer cannot estimate a standard deviation to a few per cent

# The radial heuristic works on a copy resized to this cube.
_RADIAL_BOX = 100
_RADIAL_HALF = _RADIAL_BOX // 2
# Local statistics window, and the dilation that widens the protein region.
_WINDOW = 5
_PROTEIN_DILATION = 5
# Protein = dilated local energy above min + 5 % of its range.
_PROTEIN_REL_THR = 0.05
# Masked mode: dilation, relative binarisation threshold and percentile range.
_MASK_DILATION = 3
_MASK_REL_THR = 0.01
_MASK_PERCENTILES = (10, 95)


_SOLVENT_SMOOTHING = 2.0  # voxels: the Gaussian that makes the solvent one narrow peak of the histogram


def _squared_offsets(shape: Sequence[int]) -> list[np.ndarray]:
    """Per axis, the squared distance (float64, exact integers) of each index from n // 2."""
    return [(np.arange(n) - n // 2).astype(np.float64) ** 2 for n in shape]


def centre_distances(shape: Sequence[int]) -> np.ndarray:
    """Euclidean distance (float64) of every voxel from voxel (n0//2, n1//2, n2//2)."""
    dz, dy, dx = _squared_offsets(shape)
    d = dz[:, None, None] + dy[None, :, None] + dx[None, None, :]
    return np.sqrt(d, out=d)


def sphere_mask(shape: Sequence[int], radius: float, inside: bool = True) -> np.ndarray:
    """Voxels strictly closer than `radius` to the centre (or strictly farther when `inside` is
    False), computed slab by slab so that big maps need only the boolean result."""
    dz, dy, dx = _squared_offsets(shape)
    plane = dy[:, None] + dx[None, :]
    out = np.empty(tuple(shape), dtype=bool)
    for i, z2 in enumerate(dz):
        r = np.sqrt(plane + z2)
        out[i] = r < radius if inside else r > radius
    return out


def radial_profile(x: np.ndarray) -> np.ndarray:
    """Mean of `x` over shells of unit width (distance from the centre truncated to int)."""
    r = centre_distances(x.shape).astype(np.int32).ravel()
    return np.bincount(r, x.ravel()) / np.bincount(r)


def relative_threshold(x: np.ndarray, r_thr: float) -> np.ndarray:
    """1 where x >= min + r_thr * (max - min), else 0, in x's dtype.

    The threshold is summed in float64 and compared in x's dtype: what NumPy 1.x (the original's)
    does with these scalar types, made explicit so NumPy 2 gives the same.
    """
    lo, hi = x.min(), x.max()
    thr = x.dtype.type(float(lo) + r_thr * float(hi - lo))
    return np.where(x < thr, 0, 1).astype(x.dtype)


def normalize_with_noise(x: np.ndarray, noise_mean: float, noise_std: float) -> np.ndarray:
    """(x - mean) / (std * 10): noise of mean 0 and std 0.1; float32, no clipping."""
    if not (np.isfinite(noise_mean) and np.isfinite(noise_std)):
        raise InputError(f"noise statistics must be finite numbers, got mean={noise_mean} std={noise_std}")
    if noise_std <= 0:
        raise InputError(f"the noise standard deviation must be positive, got {noise_std}; check the noise statistics "
                         "given", setting="noise_stats")
    x = np.asarray(x, dtype=np.float32)
    return (x - noise_mean) / (noise_std * 10)


def _noise_radius(curve: np.ndarray, energy: np.ndarray) -> float:
    """Radius (in % of the 100-voxel box) beyond which the radial profile says there is only
    solvent; raises on what looks like a hollow structure."""
    minima = argrelextrema(curve, np.less)[0]
    start = int(minima.min()) if len(minima) > 0 else int(np.argmin(curve))
    if curve[start] >= 0:
        start = int(np.argmin(curve))
    if start > _RADIAL_HALF:
        log.warning("automatic noise estimation: no suitable minimum found; assuming noise within radius %d %%", _RADIAL_HALF)
        return float(_RADIAL_HALF)

    peak = int(np.argmax(curve[start : _RADIAL_HALF + 1])) + start
    if energy[peak] > curve[peak] and curve[peak] > 0:
        raise NormalizationError(f"automatic noise estimation failed: the map may be hollow or filamentous; {_ADVICE}",
                                 setting="normalisation")

    rising = np.flatnonzero(curve[start:] > 0)
    if len(rising) == 0:
        log.warning("automatic noise estimation: the map might be a fibre; assuming noise within radius %d %%", _RADIAL_HALF)
        return float(_RADIAL_HALF)
    first_positive = int(rising[0]) + start
    falling = np.flatnonzero(curve[first_positive:] <= 0)
    if len(falling) == 0:
        log.warning("automatic noise estimation: no trend change found; assuming noise within radius %d %%", _RADIAL_HALF)
        return float(_RADIAL_HALF)
    radius = float(round((first_positive + int(falling[0]) + first_positive) * 0.5))
    # A tail that keeps rising faster and faster: the noise reaches the corners.
    grad_tail = np.mean(np.diff(curve[-10:]))
    grad_before = np.mean(np.diff(curve[-25:-10]))
    if grad_tail > 1e-8 and grad_before > 1e-8 and grad_tail > 3 * grad_before:
        radius = float(np.sqrt(3 * _RADIAL_HALF**2))
    return radius


def noise_statistics_radial(x: np.ndarray) -> tuple[float, float]:
    """The original's automatic estimate of the noise mean and std (`_guessNoiseStats_radialProfile`).

    On a 100^3 copy: local 5^3 mean and mean of squares; the radial profile of (local variance -
    local mean) locates the solvent shell; noise voxels lie inside that radius and outside the
    dilated high-energy (protein) region; that region is brought back to the map's grid and the
    statistics are taken over the original voxels.
    """
    x = np.asarray(x, dtype=np.float32)
    small = ndimage.gaussian_filter(legacy_resize(x, (_RADIAL_BOX,) * 3), 0.1)
    win_mean = ndimage.uniform_filter(small, _WINDOW)
    win_sqr_mean = ndimage.uniform_filter(small**2, _WINDOW)
    win_var = win_sqr_mean - win_mean**2

    curve = radial_profile(win_var) - radial_profile(win_mean)
    energy = radial_profile(win_sqr_mean)
    radius = _noise_radius(curve, energy)
    log.info("automatic noise estimation: noise beyond %s %% of the box side", radius)

    protein = relative_threshold(ndimage.grey_dilation(win_sqr_mean, size=_PROTEIN_DILATION), _PROTEIN_REL_THR)
    region = np.zeros_like(small)
    region[sphere_mask(small.shape, radius)] = 1
    region -= protein
    noise_voxels = x[legacy_resize(region, x.shape) > 0.5]
    if noise_voxels.size < _MIN_SOLVENT_VOXELS:
        # The original goes on with any count; a handful of voxels gives a meaningless scale.
        raise NormalizationError(f"automatic noise estimation failed: only {noise_voxels.size} solvent voxels found "
                                 f"(a map that is noise everywhere, or no solvent around the molecule); {_ADVICE}",
                                 setting="normalisation")
    mean, std = float(np.mean(noise_voxels)), float(np.std(noise_voxels))
    if not (np.isfinite(mean) and np.isfinite(std)) or std <= 0:
        raise NormalizationError(f"automatic noise estimation failed: the solvent has no noise (std={std}); {_ADVICE}",
                                 setting="normalisation")
    log.info("noise statistics: mean=%f std=%f", mean, std)
    return mean, std


def binarize_mask(mask: np.ndarray) -> np.ndarray:
    """The masked mode's mask: grey dilation (3^3), then 1 where >= min + 1 % of the range, else
    0; float32. A constant mask becomes all ones, as in the original."""
    mask = np.asarray(mask, dtype=np.float32)
    return relative_threshold(ndimage.grey_dilation(mask, size=_MASK_DILATION), _MASK_REL_THR)


def normalize_with_mask(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(x - median) / (p95 - p10) of the positive density inside the binarised mask, times that
    mask (zero outside); float32 (`inputNormalizationWithMask_2`)."""
    x = np.asarray(x, dtype=np.float32)
    check_mask(mask, x.shape, "the map's", values="binarised", setting="mask")
    binary = binarize_mask(mask)
    inside = x[(binary > 0) & (x > 0)]
    if inside.size == 0:
        raise NormalizationError(f"no positive density inside the mask; check that the mask matches the map, or "
                                 f"{_ADVICE}", setting="mask")
    median = np.median(inside)
    # scipy returns float64; the original divides in float32 (NumPy 1.x casting), so do we.
    spread = np.float32(iqr(inside, rng=_MASK_PERCENTILES))
    if not spread > 0:
        raise NormalizationError(f"the density inside the mask is flat (10-95 percentile range {spread}); check the map "
                                 "and the mask", setting="mask")
    out = (x - median) / spread
    out *= binary
    return out


def noise_statistics_from_halves(half1: np.ndarray, half2: np.ndarray) -> tuple[float, float]:
    """The noise of the halves' average, measured instead of guessed.

    Its standard deviation is that of (half1 - half2) / 2: the halves share the signal, not the noise.
    Its mean is the solvent's level: smoothed (the noise then small beside the molecule's density),
    the solvent's voxels pile up at one value, the histogram's peak, whatever share of the box the
    molecule fills or however hollow it is; the mean of the average over the voxels at that level.
    """
    half1, half2 = np.asarray(half1, dtype=np.float32), np.asarray(half2, dtype=np.float32)
    difference = 0.5 * (half1 - half2)
    std = float(np.std(difference, dtype=np.float64))
    if not (np.isfinite(std) and std > 0):
        raise NormalizationError("the two half maps are identical, so their noise cannot be measured; give the two "
                                 "independently refined half maps")
    average = 0.5 * (half1 + half2)
    smoothed = ndimage.gaussian_filter(average, _SOLVENT_SMOOTHING)
    spread = float(np.std(ndimage.gaussian_filter(difference, _SOLVENT_SMOOTHING), dtype=np.float64))
    low, high = np.percentile(smoothed, [0.5, 99.5])
    bins = max(int(np.ceil((high - low) / (0.5 * spread))), 1) if spread > 0 else 1
    counts, edges = np.histogram(smoothed, bins=min(bins, 4096), range=(low, high))
    peak = int(np.argmax(counts))
    level = 0.5 * (edges[peak] + edges[peak + 1])
    mean = float(np.mean(average[np.abs(smoothed - level) <= 2.0 * spread], dtype=np.float64))
    log.info("noise measured from the half maps: mean %.4g, standard deviation %.4g", mean, std)
    return mean, std
