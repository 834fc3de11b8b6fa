"""``soft_mask``: a mask with a soft edge from a map or a mask (threshold, dilate, then a
raised-cosine edge), in voxels, exact and in bounded memory for large maps."""
from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from ..errors import InputError

_SLAB = 32  # planes per distance transform: bounds its memory (it keeps int32 indices of every voxel)


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
