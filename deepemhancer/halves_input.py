"""The input of half-map models: the sharpened average and the sharpened half-map difference.

Channel 0 is the map a user would otherwise take, the halves' average after global B-factor
sharpening as RELION's postprocess does it with an automatic mask (``baseline_sharpening``: the
halves' FSC inside a soft mask of the molecule made from their average, corrected by phase
randomisation; FSC weighting, Guinier B fitted from 10 Å, or from twice the resolution for maps
coarser than 5 Å, low-pass at the FSC-0.143 resolution);
a residual network starts from it ("sharpened-halves" models). "wiener-halves" models take instead
the same average Wiener-weighted, keeping the shells beyond the FSC-0.143 resolution weighted down as
the FSC falls (``SharpeningFilter``'s "wiener" weighting; same FSC, mask and B-factor), so that the
network sees the weak signal there and can keep it where the data hold it.
Channel 1 is (half1 − half2) / 2 filtered by the same gain as channel 0:
pure noise with the spectrum and the local level of the noise in channel 0, from which the network
can judge where the data are good. Both are offset by channel 0's median (the solvent level of a
box that is mostly solvent) and divided by ten times channel 1's standard deviation: the noise
normalisation's convention (noise std 0.1).
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from .errors import InputError
from .mapio import Map
from .molecule_masks import molecule_mask
from .metrics import GuinierRangeError
from .models.store import HALVES_NORMALIZATION, WIENER_HALVES_NORMALIZATION
from .sharpen import SharpenResult, sharpen

log = logging.getLogger("deepemhancer")
CHANNELS = 2
# Names how the channels are made; cached training inputs made another way are never read for them.
RECIPE = "maskedfsc"
# The ``SharpeningFilter`` weighting of each half-map model normalisation (the model JSON's name of its input).
WEIGHTING = {HALVES_NORMALIZATION: "relion", WIENER_HALVES_NORMALIZATION: "wiener"}
NOISE_STD = 0.1
# The FSC mask: the auto-mask of the halves' average, widened and softened as RELION users do
# (the molecule's edge is uncertain; a sharp mask would correlate the halves by itself).
FSC_MASK_DILATION_A = 6.0
FSC_MASK_EDGE_A = 6.0


def baseline_sharpening(half1: Map, half2: Map) -> SharpenResult:
    """Global B-factor sharpening as half-map models start from it (and as validation compares with
    it): the FSC inside ``fsc_mask``; the Guinier fit from 10 Å (twice the resolution for coarser
    maps); where the box is too small for a fit at that resolution, the FSC weighting and low-pass
    alone (B = 0)."""
    mask = fsc_mask(half1, half2)
    try:
        return sharpen(half1, half2, low_resolution=None, mask=mask)
    except GuinierRangeError as error:
        log.info("no B-factor fit for these half maps (%s): FSC weighting and low-pass only", error)
        return sharpen(half1, half2, b_factor=0.0, mask=mask)


def fsc_mask(half1: Map, half2: Map) -> np.ndarray | None:
    """A soft mask of the molecule from the halves' average (``molecule_masks.map_mask``, dilated and softened
    by 6 Å), or None where no molecule stands out of the average's noise: the FSC is then taken
    unmasked.

    Unmasked, the solvent's noise dilutes the FSC of a molecule filling a small part of its box, and
    the low-pass would discard detail the halves share (RELION's postprocess reports the masked FSC)."""
    mask = molecule_mask(0.5 * (half1.data + half2.data), voxel_size=half1.isotropic_voxel_size,
                         dilation_A=FSC_MASK_DILATION_A, soft_edge_A=FSC_MASK_EDGE_A)
    if mask is None:
        log.info("no molecule stands out of the halves' noise: the half-map FSC is taken unmasked")
    return mask


def halves_channels(half1: Map, half2: Map, weighting: str = "relion") -> np.ndarray:
    """The (2, Z, Y, X) float32 input of a half-map model (see the module docstring); ``weighting``
    as ``SharpeningFilter``'s: "relion", the baseline's filter, or "wiener"."""
    result = baseline_sharpening(half1, half2)
    difference = 0.5 * (half1.data - half2.data)
    if not np.any(difference):
        raise InputError("the two half maps are identical, so their noise cannot be measured; give the two "
                         "independently refined half maps")
    gain = dataclasses.replace(result.filter, weighting=weighting)
    noise = gain.apply(difference)
    scale = float(np.std(noise, dtype=np.float64)) / NOISE_STD
    if not (np.isfinite(scale) and scale > 0):
        raise InputError("the two half maps share no signal at any resolution (their FSC is below 0.143 from the "
                         "lowest shell), so there is nothing to enhance; check that they are two halves of one map")
    baseline = result.map.data if weighting == "relion" else gain.apply(0.5 * (half1.data + half2.data))
    offset = float(np.median(baseline))
    return np.stack([(baseline - offset) / scale, noise / scale]).astype(np.float32, copy=False)
