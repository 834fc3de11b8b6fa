"""Making masks of the molecule on a map's grid: from the map itself (as RELION's and cryoSPARC's
auto-masks make them: low-pass, threshold, keep the connected molecule, dilate, soften), and the
model mask of the paper's training targets. Each can be dilated and given a raised-cosine soft edge.

Masks are float32 arrays of values in [0, 1] with the source array's shape; wrap one with
``like.with_data(mask)`` to write it with the map's geometry. (This module makes masks;
``metrics.mask_check`` checks a mask given to a measurement or to ``enhance``;
``metrics.soft_edge`` softens one in voxels; the plugin's ``protocol_mask`` is the Scipion
protocol that calls this module.)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from .errors import InputError
from .mapio import Map
from .metrics import model_map, soft_mask

LOWPASS_A = 15.0  # RELION's initial low-pass for auto-masks: noise and side chains gone, the envelope kept
# The automatic contour, in standard deviations of the low-passed solvent above its level: low enough
# to follow the molecule's envelope. The pieces above it that reach the core level (far above any
# low-passed noise) are the molecule; the others are noise.
CONTOUR_SIGMAS = 3.0
CORE_SIGMAS = 8.0
NEAR_FULL_BOX = 0.9  # a mask beyond this fraction of the box hardly masks anything


@dataclass(frozen=True)
class MapMask:
    """A mask made from a map, and how it was made."""

    mask: np.ndarray
    threshold: float  # the contour on the low-passed map
    automatic: bool  # the threshold was chosen from the map's solvent noise
    pieces: int  # connected pieces above the threshold
    kept: int  # the pieces that reach the molecule's core
    # the low-passed map's peak reaches CORE_SIGMAS above the solvent: a molecule stands out of the
    # noise (else the kept piece is the highest noise blob, which ``map_mask`` keeps all the same)
    stands_out: bool = True

    @property
    def coverage(self) -> float:
        return coverage(self.mask)


def map_mask(volume: np.ndarray, *, voxel_size: float, lowpass_A: float = LOWPASS_A,
             threshold: float | None = None, enclosed_volume_A3: float | None = None,
             dilation_A: float = 0.0, soft_edge_A: float = 0.0) -> MapMask:
    """The molecule's mask from a map: low-passed to ``lowpass_A`` (0: as it is), contoured at
    ``threshold``, at the level enclosing ``enclosed_volume_A3``, or (neither given) automatically
    (``automatic_threshold``); only the pieces that reach the core level are kept, so noise blobs
    are dropped (the mask may then enclose a little less than the volume asked); then dilated by
    ``dilation_A`` and softened over ``soft_edge_A`` (see ``shape_mask``).
    """
    if threshold is not None and enclosed_volume_A3 is not None:
        raise InputError("give a density threshold or an enclosed volume in Å³ for the mask, not both")
    smoothed = lowpass(volume, voxel_size, lowpass_A)
    solvent, sigma = solvent_level(smoothed)
    automatic = threshold is None and enclosed_volume_A3 is None
    if automatic:
        threshold = solvent + CONTOUR_SIGMAS * sigma
    elif enclosed_volume_A3 is not None:
        threshold = level_enclosing(smoothed, enclosed_volume_A3, voxel_size)
    above = smoothed > threshold
    if not above.any():
        raise InputError(f"no voxel is above the mask threshold {threshold:g} (the low-passed map's maximum is "
                         f"{float(smoothed.max()):g}); choose a lower threshold")
    peak = float(smoothed.max())
    core = max(threshold, min(solvent + CORE_SIGMAS * sigma, 0.5 * (solvent + peak)))  # the peak always counts
    labels, pieces = ndimage.label(above)
    kept = np.unique(labels[above & (smoothed >= core)])
    binary = np.isin(labels, kept)
    return MapMask(shape_mask(binary, voxel_size, dilation_A=dilation_A, soft_edge_A=soft_edge_A),
                   float(threshold), automatic, int(pieces), int(kept.size),
                   stands_out=peak >= solvent + CORE_SIGMAS * sigma)


def molecule_mask(volume: np.ndarray, *, voxel_size: float, dilation_A: float = 0.0,
                  soft_edge_A: float = 0.0) -> np.ndarray | None:
    """The automatic mask of ``map_mask`` where a molecule stands out of the map's noise, else None
    (a map of noise, or one no voxel of which reaches the automatic contour): for the steps that
    use such a mask when there is one, and do without otherwise."""
    try:
        made = map_mask(volume, voxel_size=voxel_size, dilation_A=dilation_A, soft_edge_A=soft_edge_A)
    except InputError:
        return None
    return made.mask if made.stands_out else None


def automatic_threshold(volume: np.ndarray, voxel_size: float, lowpass_A: float = LOWPASS_A) -> float:
    """The automatic contour of ``map_mask``: the solvent level of the low-passed map plus
    CONTOUR_SIGMAS of its noise."""
    solvent, sigma = solvent_level(lowpass(volume, voxel_size, lowpass_A))
    return solvent + CONTOUR_SIGMAS * sigma


def lowpass(volume: np.ndarray, voxel_size: float, resolution_A: float) -> np.ndarray:
    """A Gaussian low-pass whose transfer is 0.5 at 1 / ``resolution_A`` (0: the map as it is).
    Gaussian rather than a sharp cutoff: no ringing to add speckle around the contour."""
    _check_volume(volume)
    _check_length(voxel_size, "voxel_size", positive=True)
    _check_length(resolution_A, "the low-pass resolution")
    if resolution_A == 0:
        return np.asarray(volume, dtype=np.float32)
    sigma_A = resolution_A * np.sqrt(np.log(2.0) / 2.0) / np.pi  # exp(-2 pi² sigma² f²) = 0.5 at f = 1/R
    return ndimage.gaussian_filter(np.asarray(volume, dtype=np.float32), sigma_A / voxel_size)


def solvent_level(volume: np.ndarray) -> tuple[float, float]:
    """The solvent's level and noise standard deviation: the median and the scaled median absolute
    deviation, robust while the molecule fills less than half of the box."""
    level = float(np.median(volume))
    return level, 1.4826 * float(np.median(np.abs(volume - level)))


def coverage(mask: np.ndarray) -> float:
    """The fraction of the box a mask touches (any value above 0)."""
    return float(np.count_nonzero(mask > 0)) / mask.size


def full_box_warning(mask: np.ndarray) -> str | None:
    """A one-line warning when a mask covers nearly the whole box, else None."""
    fraction = coverage(mask)
    if fraction <= NEAR_FULL_BOX:
        return None
    return (f"the mask covers {100 * fraction:.1f}% of the box, so it hardly masks anything: make it tighter "
            f"(a higher threshold, less dilation or a narrower soft edge)")


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
