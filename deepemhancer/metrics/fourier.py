"""Fourier-space measures: the frequency grid, Fourier shell correlation and the resolution it gives;
``half_map_fsc`` is the one recipe for the FSC and resolution of two half maps.

Shells are one Fourier voxel wide: shell k holds the coefficients whose spatial frequency |s| rounds
to k * ds, with ds = 1 / (longest box edge in Å) (RELION's and servalcat's shells). Curves run from
shell 1 up to Nyquist, 1 / (2 * voxel size); the DC term holds only the mean and is left out.

Transforms use scipy.fft.rfftn: the layout of numpy.fft.rfftn, but float32 maps stay complex64,
half the memory of numpy's complex128 (maps of 400³ and more).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import scipy.fft

from ..errors import InputError
from .mask_check import check_mask

log = logging.getLogger("deepemhancer")

_SLAB = 16  # planes of the transform summed at a time: bounds the temporaries for large maps
_RANDOMISE_AT_FSC = 0.8  # RELION's default: randomise phases where the unmasked FSC first drops below this
_CORRECTION_DELAY = 2  # shells after the randomisation start left uncorrected (RELION: leakage across the edge)


@dataclass(frozen=True, eq=False)  # arrays inside: no element-wise ==
class FSCCurve:
    """A Fourier shell correlation curve.

    frequency: shell centres as spatial frequency in 1/Å (k * ds, k = 1 .. Nyquist); the resolution
        of a shell in Å is 1 / frequency.
    correlation: FSC per shell; 0 where either map has no power in the shell.
    n_voxels: Fourier coefficients in each shell, counted over the full (Hermitian) transform.
    voxel_size: Å, so that the Nyquist resolution (2 * voxel_size) is known.
    """

    frequency: np.ndarray
    correlation: np.ndarray
    n_voxels: np.ndarray
    voxel_size: float

    def to_dict(self) -> dict:
        """JSON-ready values (the format of reports and of the plugin's result files)."""
        return {"resolution_inv_angstrom": self.frequency.tolist(), "correlation": self.correlation.tolist(),
                "n_voxels": self.n_voxels.tolist(), "voxel_size": self.voxel_size}

    @classmethod
    def from_dict(cls, entry: dict) -> "FSCCurve":
        """The curve back from ``to_dict``'s values."""
        return cls(np.asarray(entry["resolution_inv_angstrom"]), np.asarray(entry["correlation"]),
                   np.asarray(entry["n_voxels"]), float(entry["voxel_size"]))


def radial_frequency_grid(shape: Sequence[int], voxel_size: float | Sequence[float]) -> np.ndarray:
    """|s| in 1/Å (float32) of every coefficient of ``rfftn`` of an array of ``shape``.

    voxel_size: Å, one value or one per array axis.
    """
    return _frequency_rows(shape, voxel_size, slice(0, shape[0]), np.float32)


def fsc(a: np.ndarray, b: np.ndarray, voxel_size: float, mask: np.ndarray | None = None) -> FSCCurve:
    """Fourier shell correlation of ``a`` and ``b``; ``mask`` (binary or soft) multiplies both first."""
    (cross, power_a, power_b), counts = _shell_spectra(a, b, voxel_size, mask)
    return _curve(a.shape, voxel_size, _correlation(cross, power_a, power_b), counts)


def shared_power(a: np.ndarray, b: np.ndarray, voxel_size: float, mask: np.ndarray | None = None) -> np.ndarray:
    """The power ``a`` and ``b`` share in each shell 1 .. Nyquist (as ``fsc`` numbers them): the sum of
    Re(F_a F_b*), the FSC's numerator. Unlike the FSC it keeps scale: a faint shared pattern is small."""
    (cross, _, _), _ = _shell_spectra(a, b, voxel_size, mask)
    return cross[1:]


def _shell_spectra(a: np.ndarray, b: np.ndarray, voxel_size: float,
                   mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per shell 0 .. Nyquist: the cross power and both powers (stacked), and the coefficient counts."""
    _check_maps(a, b, mask, voxel_size)
    fa, fb = _transform(a, mask), _transform(b, mask)

    def terms(rows: slice) -> tuple[np.ndarray, ...]:
        pa, pb = fa[rows], fb[rows]
        return (pa * pb.conj()).real, _power(pa), _power(pb)

    return shell_sums(a.shape, voxel_size, terms)


# The half-map FSC threshold (Rosenthal & Henderson 2003): the one definition every module uses.
HALF_MAP_FSC_THRESHOLD = 0.143


def resolution_at(curve: FSCCurve, threshold: float = HALF_MAP_FSC_THRESHOLD) -> float:
    """Resolution in Å where ``curve`` first falls below ``threshold``, interpolated linearly in 1/Å.

    A curve that starts below the threshold gives its first shell's resolution; one that never falls
    below it gives the Nyquist resolution, 2 * voxel_size: the data say nothing finer.
    """
    below = np.flatnonzero(curve.correlation < threshold)
    if below.size == 0:
        return 2.0 * curve.voxel_size
    i = int(below[0])
    if i == 0:
        return float(1.0 / curve.frequency[0])
    c0, c1 = curve.correlation[i - 1], curve.correlation[i]
    s0, s1 = curve.frequency[i - 1], curve.frequency[i]
    s = s0 + (c0 - threshold) / (c0 - c1) * (s1 - s0)
    return float(1.0 / s)


def fsc_masked_corrected(a: np.ndarray, b: np.ndarray, voxel_size: float, mask: np.ndarray,
                         randomise_beyond: float | None = None, seed: int = 0) -> FSCCurve:
    """Masked FSC corrected for the mask's own correlation by phase randomisation (Chen et al. 2013).

    The phases of ``a`` and ``b`` are replaced by independent random phases beyond
    ``randomise_beyond`` Å (default: where the unmasked FSC first drops below 0.8); the masked FSC of
    the randomised maps, FSC_n, measures what the mask alone adds. From two shells beyond the
    randomisation start (as RELION, since the mask spreads true correlation across a few shells):
    FSC_true = (FSC_t - FSC_n) / (1 - FSC_n), with FSC_t the masked FSC; below, FSC_t. When the
    unmasked FSC stays above 0.8 up to Nyquist there is nothing to randomise and FSC_t is returned.
    """
    return _masked_corrected(a, b, voxel_size, mask, fsc(a, b, voxel_size), randomise_beyond, seed)


def _masked_corrected(a: np.ndarray, b: np.ndarray, voxel_size: float, mask: np.ndarray, unmasked: FSCCurve,
                      randomise_beyond: float | None, seed: int) -> FSCCurve:
    """``fsc_masked_corrected`` given the unmasked FSC of ``a`` and ``b``."""
    masked = fsc(a, b, voxel_size, mask)
    start = _randomisation_shell(unmasked, randomise_beyond)
    if start is None:
        return masked
    rng = np.random.default_rng(seed)
    noise = fsc(randomise_phases(a, voxel_size, start, rng), randomise_phases(b, voxel_size, start, rng),
                voxel_size, mask)
    shells = np.arange(1, masked.correlation.size + 1)
    corrected = np.where(shells >= start + _CORRECTION_DELAY,
                         (masked.correlation - noise.correlation) / np.maximum(1.0 - noise.correlation, 1e-6),
                         masked.correlation)
    return FSCCurve(masked.frequency, corrected, masked.n_voxels, masked.voxel_size)


@dataclass(frozen=True, eq=False)
class HalfMapFSC:
    """The FSC of two half maps and the resolution it gives (``half_map_fsc``).

    curve: the FSC the resolution is read from.
    masking: how a mask entered ``curve``: "unmasked" (no mask, or one that RELION's rule set
        aside), "corrected" (masked, phase-randomisation corrected) or "masked" (masked, uncorrected).
    resolution: Å where ``curve`` first falls below HALF_MAP_FSC_THRESHOLD (``resolution_at``).
    """

    curve: FSCCurve
    masking: str
    resolution: float


def half_map_fsc(half1: np.ndarray, half2: np.ndarray, voxel_size: float, mask: np.ndarray | None = None, *,
                 correct_for_mask: bool = True) -> HalfMapFSC:
    """The one recipe for "the FSC and resolution of these half maps": sharpening, ``evaluate``,
    validation, the independent-halves check and the plugin's FSC, sharpening and viewer all use it.

    Without a mask: the plain FSC. With a mask (values 0..1 on the halves' grid): the masked FSC
    corrected for the mask's own correlation by phase randomisation (``fsc_masked_corrected``),
    unless the unmasked FSC stays at or above 0.143 for more shells: then, as RELION's postprocess
    does, the unmasked one (a mask that cuts into the molecule would cost resolution; a warning
    says so).

    correct_for_mask=False gives the plain masked FSC, without randomisation or RELION's rule. It
    is for comparing two pairs of maps under one mask shell by shell, as the independent-halves
    check does: the mask adds the same correlation to both curves, so it cancels in their
    difference, whose noise (the check's margin) is that of a plain masked FSC; the correction
    would add the randomisation's own noise to each curve, and the rule could measure the two
    pairs differently.
    """
    if mask is not None:
        check_mask(mask, np.shape(half1), "the half maps'")
        if not correct_for_mask:
            masked = fsc(half1, half2, voxel_size, mask)
            return HalfMapFSC(masked, "masked", resolution_at(masked))
    unmasked = fsc(half1, half2, voxel_size)
    if mask is None:
        return HalfMapFSC(unmasked, "unmasked", resolution_at(unmasked))
    corrected = _masked_corrected(half1, half2, voxel_size, mask, unmasked, None, 0)
    if _shells_above_threshold(unmasked) > _shells_above_threshold(corrected):
        log.warning("the unmasked half-map FSC extends beyond the mask-corrected one: the mask is not used for "
                    "the FSC; check that it covers the whole molecule with a soft edge")
        return HalfMapFSC(unmasked, "unmasked", resolution_at(unmasked))
    return HalfMapFSC(corrected, "corrected", resolution_at(corrected))


def _shells_above_threshold(curve: FSCCurve) -> int:
    """How many shells, from the lowest, have FSC >= HALF_MAP_FSC_THRESHOLD."""
    below = np.flatnonzero(np.asarray(curve.correlation) < HALF_MAP_FSC_THRESHOLD)
    return int(below[0]) if below.size else len(curve.correlation)


def shell_sums(shape: Sequence[int], voxel_size: float,
               terms: Callable[[slice], Sequence[np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Sums over shells 0 .. Nyquist of real per-coefficient ``terms`` of an ``rfftn`` layout, and the counts.

    ``terms(rows)`` gives the terms for planes ``rows`` of the transform. Each coefficient that stands
    for itself and its Friedel mate is counted twice, so sums and counts cover the full transform.
    Coefficients beyond Nyquist (the box corners) are left out.
    """
    _, n_shells = _shell_step(shape, voxel_size)
    weight = _friedel_weight(shape[2])
    counts = np.zeros(n_shells + 2)
    totals: list[np.ndarray] | None = None
    for start in range(0, shape[0], _SLAB):
        rows = slice(start, min(start + _SLAB, shape[0]))
        index = shell_index(shape, voxel_size, rows).ravel()
        w = np.broadcast_to(weight, (rows.stop - rows.start, shape[1], weight.size)).ravel()
        counts += np.bincount(index, w, minlength=n_shells + 2)
        values = terms(rows)
        if totals is None:
            totals = [np.zeros(n_shells + 2) for _ in values]
        for total, value in zip(totals, values):
            total += np.bincount(index, value.ravel() * w, minlength=n_shells + 2)
    return np.stack(totals)[:, :n_shells + 1], counts[:n_shells + 1]


def shell_index(shape: Sequence[int], voxel_size: float, rows: slice) -> np.ndarray:
    """Shell number of each coefficient in planes ``rows`` of the ``rfftn`` layout; beyond Nyquist: Nyquist + 1."""
    ds, n_shells = _shell_step(shape, voxel_size)
    index = np.rint(_frequency_rows(shape, voxel_size, rows, np.float64) / ds).astype(np.int64)
    return np.minimum(index, n_shells + 1)


def _shell_step(shape: Sequence[int], voxel_size: float) -> tuple[float, int]:
    """Shell width ds in 1/Å and the number of shells up to Nyquist."""
    longest = max(int(n) for n in shape)
    return 1.0 / (longest * float(voxel_size)), longest // 2


def _frequency_rows(shape: Sequence[int], voxel_size: float | Sequence[float], rows: slice,
                    dtype: type) -> np.ndarray:
    """|s| in 1/Å for planes ``rows`` of the ``rfftn`` layout of ``shape``."""
    spacing = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (3,))
    f0 = np.fft.fftfreq(shape[0], spacing[0])[rows].astype(dtype)
    f1 = np.fft.fftfreq(shape[1], spacing[1]).astype(dtype)
    f2 = np.fft.rfftfreq(shape[2], spacing[2]).astype(dtype)
    return np.sqrt(f0[:, None, None] ** 2 + f1[None, :, None] ** 2 + f2[None, None, :] ** 2)


def _friedel_weight(n_last: int) -> np.ndarray:
    """2 for rfftn columns that also stand for their Friedel mate, 1 for column 0 and an even Nyquist column."""
    weight = np.full(n_last // 2 + 1, 2.0)
    weight[0] = 1.0
    if n_last % 2 == 0:
        weight[-1] = 1.0
    return weight


def _transform(volume: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    """rfftn of ``volume`` (times ``mask``) in single precision."""
    data = np.asarray(volume, dtype=np.float32)
    if mask is not None:
        data = data * np.asarray(mask, dtype=np.float32)
    return scipy.fft.rfftn(data, workers=-1)


def _power(values: np.ndarray) -> np.ndarray:
    return values.real ** 2 + values.imag ** 2


def _correlation(cross: np.ndarray, power_a: np.ndarray, power_b: np.ndarray) -> np.ndarray:
    """cross / sqrt(power_a * power_b); 0 where a shell holds no power (nothing correlates there)."""
    norm = np.sqrt(power_a * power_b)
    return np.divide(cross, norm, out=np.zeros_like(cross), where=norm > 0)


def _curve(shape: Sequence[int], voxel_size: float, correlation: np.ndarray, counts: np.ndarray) -> FSCCurve:
    """An FSCCurve from per-shell values of shells 0 .. Nyquist (shell 0 dropped)."""
    ds, n_shells = _shell_step(shape, voxel_size)
    return FSCCurve(frequency=np.arange(1, n_shells + 1) * ds, correlation=correlation[1:],
                    n_voxels=np.rint(counts[1:]).astype(np.int64), voxel_size=float(voxel_size))


def _randomisation_shell(unmasked: FSCCurve, randomise_beyond: float | None) -> int | None:
    """First shell whose phases are randomised, or None when there is none up to Nyquist."""
    if randomise_beyond is not None:
        if not randomise_beyond > 0:
            raise InputError(f"randomise_beyond must be a resolution in Å > 0, got {randomise_beyond}")
        shell = max(1, int(np.rint(1.0 / (randomise_beyond * unmasked.frequency[0]))))
        return shell if shell <= unmasked.frequency.size else None
    below = np.flatnonzero(unmasked.correlation < _RANDOMISE_AT_FSC)
    return int(below[0]) + 1 if below.size else None


def randomisation_start(shape: Sequence[int], voxel_size: float, resolution: float) -> int:
    """The first FSC shell (1-based, as ``fsc`` numbers them) finer than ``resolution`` Å."""
    ds, _ = _shell_step(shape, voxel_size)
    return max(1, int(np.rint(1.0 / (resolution * ds))))


def randomise_phases(volume: np.ndarray, voxel_size: float, start: int, rng: np.random.Generator) -> np.ndarray:
    """``volume`` with uniformly random phases in shells >= ``start`` (amplitudes kept)."""
    transform = _transform(volume, None)
    for first in range(0, volume.shape[0], _SLAB):
        rows = slice(first, min(first + _SLAB, volume.shape[0]))
        block = transform[rows]
        chosen = shell_index(volume.shape, voxel_size, rows) >= start
        phases = rng.uniform(0.0, 2.0 * np.pi, size=int(chosen.sum()))
        block[chosen] = np.abs(block[chosen]) * np.exp(1j * phases).astype(np.complex64)
    return scipy.fft.irfftn(transform, s=volume.shape, workers=-1).astype(np.float32)


def _check_maps(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None, voxel_size: float) -> None:
    """InputError unless ``a``, ``b`` (and ``mask``) are 3D arrays of one shape and the voxel size is positive."""
    check_map_shapes(a, b, mask)
    if not (np.isfinite(voxel_size) and voxel_size > 0):
        raise InputError(f"voxel size must be a positive number of Å, got {voxel_size}")


def check_map_shapes(a: np.ndarray, b: np.ndarray, mask: np.ndarray | None) -> None:
    """InputError unless ``a`` and ``b`` are 3D arrays of one shape (and ``mask`` passes ``check_mask`` on it)."""
    if np.ndim(a) != 3 or np.shape(a) != np.shape(b):
        raise InputError(f"the two maps must be 3D arrays of one shape, got {np.shape(a)} and {np.shape(b)}; "
                         "give maps on one grid")
    if mask is not None:
        check_mask(mask, np.shape(a))
