"""``check_mask``: the one check of a mask's shape and values, for every use of a mask (the
measurements, enhance's masked normalisation, the sliding window's region)."""
from __future__ import annotations

from typing import Literal

import numpy as np

from ..errors import InputError, NormalizationError

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
