"""Guinier analysis: the overall B-factor of a map, and applying one.

Convention (crystallographic): a B-factor B multiplies Fourier amplitudes by exp(-B s² / 4), s = 1/d
in 1/Å. A map blurred by B has a Guinier plot (ln |F| against s²) whose slope falls by B / 4, so the
fitted B-factor is -4 * slope: positive for blurred maps, about 0 for a sharpened (flat) one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft

from ..errors import InputError
from .fourier import radial_frequency_grid, shell_sums

_MIN_FIT_SHELLS = 3


@dataclass(frozen=True, eq=False)  # arrays inside: no element-wise ==
class GuinierFit:
    """A straight line fitted to the Guinier plot.

    b_factor: Å², -4 * slope (> 0 for a blurred map).
    intercept: ln |F| of the line at s = 0.
    s_squared: 1/Å² of every shell (1 .. Nyquist), for plotting.
    ln_amplitude: ln of the mean amplitude of every shell (-inf where a shell is empty of signal).
    in_fit: which shells the line was fitted to.
    """

    b_factor: float
    intercept: float
    s_squared: np.ndarray
    ln_amplitude: np.ndarray
    in_fit: np.ndarray

    @property
    def slope(self) -> float:
        return -self.b_factor / 4.0

    def line(self) -> np.ndarray:
        """The fitted ln |F| at every ``s_squared``."""
        return self.intercept + self.slope * self.s_squared


class GuinierRangeError(InputError):
    """The fit's resolution range holds too few Fourier shells of the map (a small box, a coarse map)."""


def guinier_bfactor(volume: np.ndarray, voxel_size: float, low_resolution: float = 10.0,
                    high_resolution: float | None = None) -> GuinierFit:
    """Fit ln(mean |F| per shell) against s² between ``low_resolution`` and ``high_resolution`` Å.

    high_resolution: None fits up to Nyquist (2 * voxel_size); RELION's postprocess uses the
    FSC = 0.143 resolution. Raises GuinierRangeError when the range holds fewer than 3 shells.
    """
    high = 2.0 * voxel_size if high_resolution is None else float(high_resolution)
    if not (0 < high < low_resolution):
        raise InputError(f"the Guinier fit needs 0 < high_resolution < low_resolution, got {high:g} and "
                         f"{low_resolution:g} Å; give e.g. low_resolution=10 and the map's FSC=0.143 resolution")
    transform = scipy.fft.rfftn(np.asarray(volume, dtype=np.float32), workers=-1)
    (amplitude,), counts = shell_sums(volume.shape, voxel_size, lambda rows: (np.abs(transform[rows]),))
    mean = np.divide(amplitude, counts, out=np.zeros_like(amplitude), where=counts > 0)[1:]
    s = np.arange(1, mean.size + 1) / (max(volume.shape) * float(voxel_size))
    with np.errstate(divide="ignore"):
        ln_amplitude = np.log(mean)
    in_fit = (s >= 1.0 / low_resolution) & (s <= 1.0 / high) & (mean > 0)
    if int(in_fit.sum()) < _MIN_FIT_SHELLS:
        raise GuinierRangeError(f"the Guinier fit between {low_resolution:g} and {high:g} Å covers only "
                         f"{int(in_fit.sum())} Fourier shells of this map; widen the range or use a larger box")
    slope, intercept = np.polyfit(s[in_fit] ** 2, ln_amplitude[in_fit], 1)
    return GuinierFit(b_factor=float(-4.0 * slope), intercept=float(intercept), s_squared=s ** 2,
                      ln_amplitude=ln_amplitude, in_fit=in_fit)
