"""Masks as they are given: ``check_mask`` (the one check of a mask's shape and values, for every
use of a mask) and ``soft_mask`` (threshold, dilate, then a raised-cosine edge)."""
from __future__ import annotations

import math
from typing import Literal

import numpy as np
from scipy import ndimage

from ..errors import InputError, NormalizationError

_SLAB = 32  # planes per distance transform: bounds its memory (it keeps int32 indices of every voxel)
_VALUE_TOLERANCE = 1e-6  # soft masks written in float32 may reach 1 + a rounding error
MaskValues = Literal["weights", "binarised", "any"]
MASK_VALUES = ("weights", "binarised", "any")


def check_mask(mask: np.ndarray, shape: tuple[int, ...], grid: str = "the maps'", *,
               values: MaskValues = "weights", setting: str | None = None) -> None:
    """InputError unless ``mask`` is an array of ``shape`` whose values suit their use. ``grid``
    names whose grid it must be on in the message; ``setting`` the engine setting an error names
    (``enhance``'s mask: "mask").

    The one check of a mask's shape and values. The shape rule is the same for every use (the
    array is what is used; its origin is not compared: masks from many tools drop it). The values
    differ on purpose, by what the mask is used for (``values``):

    - "weights" (every measurement: the half-map FSC, sharpening, evaluate, the map-model
      correlations, local correlation, the independent-halves check): finite values in 0..1
      (1 = molecule, 0 = solvent; binary or soft), not all 0. A measurement multiplies the maps
      by the mask, so values beyond 0..1 (a map given as a mask) would weigh voxels, not select them.
    - "binarised" (``enhance``'s masked normalisation, ``normalization.normalize_with_mask``): any
      values, some above 0. The mask is grey-dilated and binarised at 1 % of its range, as the
      original does, so masks beyond 0..1 (0 and 255, a negative background, ...) that users rely
      on keep working, and its non-zero voxels choose the cubes to predict (the original's rule).
      Without a voxel above 0 there is nothing to normalise by: NormalizationError, as that step
      has always said.
    - "any" (a region choosing the cubes to predict, ``tiling.sliding_window``): the shape only.
    """
    if values not in MASK_VALUES:
        raise ValueError(f"values must be one of {', '.join(MASK_VALUES)}, not {values!r}")
    if np.shape(mask) != tuple(shape):
        raise InputError(f"the mask's shape {np.shape(mask)} differs from {grid} {tuple(shape)}; "
                         f"give a mask on {grid} grid", setting=setting)
    if values == "binarised":
        if not np.any(np.asarray(mask) > 0):
            raise NormalizationError("the mask is empty (no voxel above 0); give a mask that covers the molecule",
                                     setting=setting)
        return
    if values == "any":
        return
    array = np.asarray(mask)
    if not np.isfinite(array).all():
        raise InputError("the mask holds NaN or infinite values; give a binary or soft mask with values in 0..1",
                         setting=setting)
    low, high = float(array.min()), float(array.max())
    if low < -_VALUE_TOLERANCE or high > 1.0 + _VALUE_TOLERANCE:
        raise InputError(f"mask values must lie in 0..1 (1 = molecule, 0 = solvent), found {low:g} to {high:g}; "
                         "give a binary or soft mask, not a map", setting=setting)
    if high <= 0.0:
        raise InputError("the mask is all zero; give a mask that covers the molecule", setting=setting)


def soft_mask(mask_or_map: np.ndarray, threshold: float, dilation_voxels: float,
              soft_edge_voxels: float) -> np.ndarray:
    """A float32 mask: 1 within ``dilation_voxels`` of a voxel above ``threshold``, falling to 0 over
    ``soft_edge_voxels`` more as a raised cosine, 0.5 * (1 + cos(pi * d / soft_edge_voxels)).

    Distances are Euclidean, in voxels. They matter only up to the margin (dilation plus soft
    edge), so the distance transform runs on the mask's bounding box, a block of planes at a time,
    each with a halo as wide as the margin: exact, in bounded memory for large maps.
    """
    if dilation_voxels < 0 or soft_edge_voxels < 0:
        raise InputError(f"mask dilation and soft edge must be >= 0 voxels, got {dilation_voxels:g} and "
                         f"{soft_edge_voxels:g}")
    inside = np.asarray(mask_or_map) > threshold
    if not inside.any():
        raise InputError(f"no voxel lies above the mask threshold {threshold:g}; lower the threshold")
    margin = math.ceil(dilation_voxels + soft_edge_voxels) + 1
    box = _bounding_box(inside, margin)
    beyond = _distance_outside(inside[box], margin) - dilation_voxels
    if soft_edge_voxels > 0:
        edge = 0.5 * (1.0 + np.cos(np.pi * np.clip(beyond / soft_edge_voxels, 0.0, 1.0)))
    else:
        edge = (beyond <= 0).astype(np.float64)
    result = np.zeros(inside.shape, dtype=np.float32)
    result[box] = edge
    return result


def _distance_outside(inside: np.ndarray, margin: int) -> np.ndarray:
    """Euclidean distance in voxels to the nearest True voxel, exact up to ``margin`` (float32)."""
    distance = np.empty(inside.shape, dtype=np.float32)
    for start in range(0, inside.shape[0], _SLAB):
        stop = min(start + _SLAB, inside.shape[0])
        low, high = max(0, start - margin), min(inside.shape[0], stop + margin)
        # A True voxel within ``margin`` of these planes lies within the halo, so nearer ones are exact.
        window = inside[low:high]
        if window.any():
            distance[start:stop] = ndimage.distance_transform_edt(~window)[start - low:stop - low]
        else:  # without a True voxel scipy measures to a phantom one before the window: not a distance
            distance[start:stop] = np.inf
    return distance


def _bounding_box(inside: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Slices around the True voxels of ``inside``, grown by ``margin`` and clipped to the array."""
    box = []
    for axis in range(inside.ndim):
        others = tuple(a for a in range(inside.ndim) if a != axis)
        present = np.flatnonzero(inside.any(axis=others))
        box.append(slice(max(0, int(present[0]) - margin), min(inside.shape[axis], int(present[-1]) + margin + 1)))
    return tuple(box)
