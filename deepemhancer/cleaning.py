"""Optional removal of small isolated blobs from a prediction (the original's removeSmallCCs,
`--cleaningStrengh`)."""
from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from .errors import InputError
from .normalization import sphere_mask

log = logging.getLogger("deepemhancer")

# Structuring size of the grey closing that bridges one-voxel gaps before labelling.
_CLOSING_SIZE = 3
# The "protein" reference region: a central sphere of this fraction of the half box.
_INNER_FRACTION = 0.33


def _background_and_threshold(x: np.ndarray) -> tuple[float, float]:
    """Mean beyond the inscribed sphere (solvent), and the foreground threshold: halfway between
    the mean of the central sphere and Otsu's level."""
    half = min(x.shape) // 2
    background = np.mean(x[sphere_mask(x.shape, half, inside=False)])
    centre = np.mean(x[sphere_mask(x.shape, int(half * _INNER_FRACTION))])
    return background, 0.5 * (centre + threshold_otsu(x))


def check_strength(strength: float) -> None:
    """InputError unless 0 < strength < 1 (the pipeline checks before inference, not after)."""
    if not 0 < strength < 1:
        raise InputError(f"the small-blob cleaning fraction must be between 0 and 1 (exclusive); got {strength}",
                         setting="cleaning_strength")


def remove_small_blobs(x: np.ndarray, strength: float) -> np.ndarray:
    """Keep only 26-connected components larger than `strength` times the total labelled volume;
    every other voxel, solvent included, becomes the map minimum. Same dtype as `x`.

    When the solvent is not darker than the foreground threshold (where the original aborts), the
    map is returned unchanged with a warning.
    """
    check_strength(strength)
    background, thr = _background_and_threshold(x)
    if not background < thr:
        log.warning(
            "small-blob removal skipped: the solvent (mean %.4g) is not below the foreground threshold (%.4g)",
            background,
            thr,
        )
        return x.copy()

    closed = ndimage.grey_erosion(ndimage.grey_dilation(x, size=_CLOSING_SIZE), size=_CLOSING_SIZE)
    # The original binarises in place in two steps; when thr <= 0 the zeros written by the first
    # step pass the second, so every voxel is foreground.
    foreground = closed >= thr if thr > 0 else np.ones(x.shape, dtype=bool)
    del closed
    labels, _ = ndimage.label(foreground, structure=np.ones((3, 3, 3), dtype=bool))
    sizes = np.bincount(labels.ravel())
    keep = sizes > strength * sizes[1:].sum()
    keep[0] = False
    kept = keep[labels]
    out = np.full_like(x, x.min())
    out[kept] = x[kept]
    return out
