"""Masks on a map's grid: a density threshold (or the threshold enclosing a volume), and the model
mask of the paper's training targets. Each can be dilated and given a raised-cosine soft edge.

Masks are float32 arrays of values in [0, 1] with the source array's shape; wrap one with
``like.with_data(mask)`` to write it with the map's geometry.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputError
from .mapio import Map
from .metrics import model_map, soft_mask


def threshold_mask(volume: np.ndarray, *, threshold: float | None = None,
                   enclosed_volume_A3: float | None = None, voxel_size: float,
                   dilation_A: float = 0.0, soft_edge_A: float = 0.0) -> np.ndarray:
    """The voxels above ``threshold``, or the voxels of highest density that enclose
    ``enclosed_volume_A3`` (exactly round(volume / voxel³) voxels; equal densities at the cut are taken arbitrarily);
    then dilated by ``dilation_A`` and softened over ``soft_edge_A`` (see ``shape_mask``).

    Every component is kept: dropping small ones would break the enclosed-volume contract, and
    the dilation and soft edge are what make a threshold mask safe for FSC.
    """
    _check_volume(volume)
    _check_length(voxel_size, "voxel_size", positive=True)
    if (threshold is None) == (enclosed_volume_A3 is None):
        raise InputError("give either a density threshold or an enclosed volume in Å³ for the mask, "
                         "exactly one of the two")
    if threshold is not None:
        binary = volume > threshold
        if not binary.any():
            raise InputError(f"no voxel is above the mask threshold {threshold:g} (the map maximum is "
                             f"{float(volume.max()):g}); choose a lower threshold")
    else:
        binary = _top_voxels(volume, enclosed_volume_A3, voxel_size)
    return shape_mask(binary, voxel_size, dilation_A=dilation_A, soft_edge_A=soft_edge_A)


def model_mask(structure_path: str | Path, like: Map, resolution: float, percentile: float = 95.0,
               dilation_A: float = 0.0, soft_edge_A: float = 0.0) -> np.ndarray:
    """The paper's model mask (Supplementary Note 6): the map simulated from the atomic model at
    ``resolution`` on ``like``'s grid, keeping the voxels strictly above its ``percentile``-th
    percentile taken over the whole box (so at most 100 - percentile % of the box); then
    dilated and softened as in ``shape_mask``.
    """
    if not 0.0 < percentile < 100.0:
        raise InputError(f"the model-mask percentile must be between 0 and 100 (exclusive), got {percentile}")
    simulated = model_map(structure_path, like, resolution).data
    binary = simulated > np.percentile(simulated, percentile)
    if not binary.any():
        raise InputError(f"the map simulated from {structure_path} is flat on this grid; check that the "
                         "model lies inside the map's box")
    return shape_mask(binary, like.isotropic_voxel_size, dilation_A=dilation_A, soft_edge_A=soft_edge_A)


def shape_mask(binary: np.ndarray, voxel_size: float, *, dilation_A: float = 0.0,
               soft_edge_A: float = 0.0) -> np.ndarray:
    """float32 mask from a boolean one: voxels whose centres lie within ``dilation_A`` of a mask
    voxel's centre are 1; beyond, the value falls as a raised cosine, 0.5 + 0.5 cos(pi d / w), of
    the extra distance d over the width w = ``soft_edge_A``, reaching 0 at d = w.
    """
    _check_length(voxel_size, "voxel_size", positive=True)
    _check_length(dilation_A, "dilation_A")
    _check_length(soft_edge_A, "soft_edge_A")
    # metrics.soft_mask works in voxels, on the mask's bounding box in bounded memory.
    return soft_mask(np.asarray(binary, dtype=bool), 0.5, dilation_A / voxel_size, soft_edge_A / voxel_size)


def level_enclosing(volume: np.ndarray, enclosed_volume_A3: float, voxel_size: float) -> float:
    """The contour level enclosing ``enclosed_volume_A3``: midway between the lowest density of the
    round(volume / voxel³) densest voxels and the highest density outside them."""
    _check_volume(volume)
    inside = _top_voxels(volume, enclosed_volume_A3, voxel_size)
    lowest_inside = float(volume[inside].min())
    return lowest_inside if inside.all() else 0.5 * (lowest_inside + float(volume[~inside].max()))


def _top_voxels(volume: np.ndarray, enclosed_volume_A3: float, voxel_size: float) -> np.ndarray:
    """Boolean mask of the round(enclosed / voxel³) voxels of highest density."""
    box_A3 = volume.size * voxel_size ** 3
    count = int(round(enclosed_volume_A3 / voxel_size ** 3)) if np.isfinite(enclosed_volume_A3) else 0
    if not 1 <= count <= volume.size:
        raise InputError(f"the enclosed volume must be between one voxel ({voxel_size ** 3:.4g} Å³) and the box "
                         f"({box_A3:.4g} Å³), got {enclosed_volume_A3:g} Å³")
    flat = volume.ravel()
    chosen = np.argpartition(flat, flat.size - count)[flat.size - count:]
    binary = np.zeros(flat.size, dtype=bool)
    binary[chosen] = True
    return binary.reshape(volume.shape)


def _check_volume(volume: np.ndarray) -> None:
    if not isinstance(volume, np.ndarray) or volume.ndim != 3:
        raise InputError("the mask source must be a 3D map array")
    if not np.isfinite(volume).all():
        raise InputError("the mask source map contains NaN/Inf values; replace them (e.g. by 0) first")


def _check_length(value: float, name: str, *, positive: bool = False) -> None:
    valid = np.isfinite(value) and (value > 0 if positive else value >= 0)
    if not valid:
        bound = "positive" if positive else "zero or positive"
        raise InputError(f"{name} must be a {bound} length in Å, got {value}")
