"""Global B-factor sharpening of two half maps, as RELION's postprocess does it: the baseline our
users compare enhanced maps with.

Order of steps (RELION's): average the halves; FSC of the halves and its 0.143 resolution
(``metrics.half_map_fsc``: with a mask, corrected by phase randomisation, Chen et al. 2013); divide by the detector MTF; weight each
shell by sqrt(2 FSC / (1 + FSC)) (Rosenthal & Henderson 2003); fit the Guinier slope of the
weighted map between ``low_resolution`` and the resolution; sharpen by that B; low-pass at the
resolution with a raised-cosine edge. The mask only shapes the FSC: the output map is unmasked
(multiply by the mask for a masked copy).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import fft

from .errors import InputError
from .mapio import Map, check_map_values, check_same_grid
from .metrics import (HALF_MAP_FSC_THRESHOLD, FSCCurve, GuinierFit, check_mask, guinier_bfactor, half_map_fsc,
                      radial_frequency_grid, resolution_at)

log = logging.getLogger("deepemhancer")

AUTO_LOW_RESOLUTION = 10.0  # Å: RELION's default low end of the Guinier fit
LOWPASS_EDGE_SHELLS = 2.0  # RELION's default width of the low-pass edge, in Fourier shells
WEIGHTINGS = ("relion", "wiener")  # SharpeningFilter.weighting


@dataclass(frozen=True)
class SharpenResult:
    """map: the sharpened average on the input grid; b_factor: the apparent B (Å², positive for a
    blurred map) that was removed, i.e. amplitudes were multiplied by exp(+b_factor s² / 4);
    resolution: the low-pass resolution (Å); fsc: the half-map FSC (``metrics.half_map_fsc``);
    fsc_masking: how the mask entered it ("unmasked", or "corrected"); guinier: the fit of the
    FSC-weighted map, None when the user gave the B-factor; filter: the Fourier gain that made
    ``map`` from the halves' average."""

    map: Map
    b_factor: float
    resolution: float
    fsc: FSCCurve
    fsc_masking: str
    guinier: GuinierFit | None
    filter: "SharpeningFilter"


def sharpen(half1: Map, half2: Map, *, resolution: float | None = None, b_factor: float | None = None,
            low_resolution: float | None = 10.0, mtf: np.ndarray | None = None, mask: np.ndarray | None = None,
            mtf_pixel_size: float | None = None) -> SharpenResult:
    """Sharpen the average of two half maps as RELION postprocess does (see the module docstring).

    resolution: low-pass resolution in Å; None takes the FSC = 0.143 resolution of the halves.
    b_factor: the apparent B to remove (Å², positive sharpens; RELION's ``--adhoc_bfac -100`` is
        ``b_factor=100`` here); None fits it between ``low_resolution`` and the resolution.
    low_resolution: the Guinier fit's low-resolution end (Å); None: 10 Å, or twice the resolution
        for maps coarser than 5 Å (a fixed 10 Å would leave such maps too short a range, or none).
    mtf: the detector MTF as a (2, n) array or pair of arrays: frequency as a fraction of Nyquist,
        MTF value (``read_mtf(path)``); the amplitudes are divided by it.
    mtf_pixel_size: the pixel size (Å) of the micrographs the MTF refers to; default the map's.
    mask: values in [0, 1] on the halves' grid, used for the FSC only.
    """
    check_same_grid(half1, half2, "half map 1", "half map 2",
                    advice="use the two unfiltered half maps of one refinement")
    check_map_values(half1, "half map 1")
    check_map_values(half2, "half map 2")
    voxel = half1.isotropic_voxel_size
    shape = half1.data.shape
    if mask is not None:
        check_mask(mask, shape, "the half maps'")
    if b_factor is not None and not np.isfinite(b_factor):
        raise InputError(f"b_factor must be a finite number of Å², got {b_factor}")
    if mtf_pixel_size is not None and not (np.isfinite(mtf_pixel_size) and mtf_pixel_size > 0):
        raise InputError(f"the MTF's pixel size must be a positive number of Å, got {mtf_pixel_size}")
    measured = half_map_fsc(half1.data, half2.data, voxel, mask)
    curve = measured.curve
    if low_resolution is None:
        low_resolution = max(AUTO_LOW_RESOLUTION, 2.0 * (resolution or _fsc_resolution(curve, 2.0 * voxel)))
    resolution = _choose_resolution(curve, resolution, voxel, low_resolution, fitting=b_factor is None)

    average = 0.5 * (half1.data + half2.data)
    weighting = SharpeningFilter(voxel, curve, mtf=mtf, mtf_pixel_size=mtf_pixel_size)
    fit = None
    if b_factor is None:
        fit = guinier_bfactor(weighting.apply(average), voxel, low_resolution=low_resolution,
                              high_resolution=resolution)
        b_factor = fit.b_factor
    elif b_factor < 0:
        log.warning("b_factor %g Å² is negative: it blurs the map (a positive apparent B sharpens it)", b_factor)
    final = dataclasses.replace(weighting, b_factor=float(b_factor), resolution=float(resolution))
    return SharpenResult(map=half1.with_data(final.apply(average)), b_factor=float(b_factor),
                         resolution=float(resolution), fsc=curve, fsc_masking=measured.masking, guinier=fit,
                         filter=final)


@dataclass(frozen=True, eq=False)
class SharpeningFilter:
    """The radial Fourier gain ``sharpen`` applies, so that other maps on the same grid (the halves'
    difference, for half-map models) can be filtered exactly alike.

    weighting "relion" (the baseline): gain at frequency s sqrt(2 FSC / (1 + FSC)) / MTF, and when
    ``resolution`` is set also exp(b_factor s² / 4) times a raised-cosine low-pass at the resolution.
    weighting "wiener" (the input of half-map models that keep the shells beyond the resolution):
    2 FSC' / (1 + FSC') / MTF, the Wiener gain of the halves' average (its SNR is 2 FSC / (1 - FSC)),
    with FSC' the curve made non-increasing past the "relion" low-pass's end, so that chance rises of
    a noisy curve past its fall count as no signal (up to there it is weighted as measured: the two
    gains are non-zero on the same shells there); when ``resolution`` is set also the B-factor's
    exp(b_factor s² / 4), held beyond the resolution at its value there, and no low-pass: the shells
    beyond keep what signal they hold, weighted down as their FSC falls.
    """

    voxel_size: float
    fsc: FSCCurve
    b_factor: float = 0.0
    resolution: float | None = None  # None: the FSC weighting (and MTF) only
    mtf: np.ndarray | None = None
    mtf_pixel_size: float | None = None
    weighting: str = "relion"

    def __post_init__(self) -> None:
        if self.weighting not in WEIGHTINGS:
            raise InputError(f"weighting must be one of {', '.join(WEIGHTINGS)}, not {self.weighting!r}")

    def gain(self, shape: tuple[int, ...]) -> np.ndarray:
        """The gain on the rfftn grid of a volume of ``shape`` (float32)."""
        frequency = radial_frequency_grid(shape, self.voxel_size)
        wiener = self.weighting == "wiener"
        edge = LOWPASS_EDGE_SHELLS / (max(shape) * self.voxel_size)  # metrics' shell width
        curve = self.fsc.correlation
        if wiener:  # non-increasing past the relion low-pass's end (up to it the curve is taken as measured)
            end = 0.0 if self.resolution is None else 1.0 / self.resolution + 0.5 * edge
            start = int(np.searchsorted(self.fsc.frequency, end, side="right"))
            curve = np.r_[curve[:start], np.minimum.accumulate(curve[start:])]
        # The DC term (not in the curve) holds the mean, which both halves share: weight 1.
        correlation = np.interp(frequency, np.r_[0.0, self.fsc.frequency], np.r_[1.0, curve])
        gain = fsc_weight(correlation) ** 2 if wiener else fsc_weight(correlation)
        if self.mtf is not None:
            gain /= _mtf_on_grid(self.mtf, frequency, self.voxel_size, self.mtf_pixel_size)
        if self.resolution is not None:
            # The B-factor's gain stops rising at the low-pass's end (beyond it the relion filter is 0 and
            # exp() may overflow; the wiener filter holds it there).
            capped = np.minimum(frequency, 1.0 / self.resolution + 0.5 * edge).astype(np.float64)
            gain = gain * np.exp(self.b_factor / 4.0 * capped ** 2)
            if not wiener:
                gain = gain * raised_cosine_lowpass(frequency, 1.0 / self.resolution, edge)
        return gain.astype(np.float32)

    def apply(self, volume: np.ndarray) -> np.ndarray:
        """``volume`` filtered (float32, same shape)."""
        volume = np.asarray(volume, dtype=np.float32)
        spectrum = fft.rfftn(volume, workers=-1) * self.gain(volume.shape)
        return fft.irfftn(spectrum, s=volume.shape, workers=-1).astype(np.float32, copy=False)


def fsc_weight(correlation: np.ndarray) -> np.ndarray:
    """Rosenthal & Henderson's sqrt(2 FSC / (1 + FSC)): the expected correlation of the average of
    the halves with the truth; FSC below 0 counts as 0."""
    c = np.clip(correlation, 0.0, 1.0)
    return np.sqrt(2.0 * c / (1.0 + c))


def raised_cosine_lowpass(frequency: np.ndarray, cutoff: float, width: float) -> np.ndarray:
    """1 below cutoff - width/2, 0 above cutoff + width/2, a raised cosine between (0.5 at cutoff);
    frequencies in 1/Å."""
    position = np.clip((frequency - (cutoff - 0.5 * width)) / width, 0.0, 1.0)
    return 0.5 + 0.5 * np.cos(np.pi * position)


def read_mtf(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A detector MTF file as (frequency as a fraction of Nyquist, MTF value).

    Accepts RELION's STAR file (a loop with _rlnResolutionInversePixel and _rlnMtfValue) or a
    two-column text file of the same two quantities (frequency in 1/pixel, Nyquist = 0.5;
    '#' starts a comment).
    """
    path = Path(path)
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(f"cannot read the MTF file {path} ({error}); give a RELION MTF STAR file or a "
                         "two-column text file") from None
    rows = _star_columns(lines, path) if any(line.strip().startswith("_rln") for line in lines) else _text_rows(lines)
    if len(rows) < 2:
        raise InputError(f"the MTF file {path} holds fewer than two (frequency, MTF) rows; check the file")
    frequency, value = np.asarray(rows, dtype=np.float64).T
    if not (np.isfinite(frequency).all() and np.isfinite(value).all()):
        raise InputError(f"the MTF file {path} holds non-numeric or non-finite values; check the file")
    if np.any(np.diff(frequency) <= 0) or frequency[0] < 0:
        raise InputError(f"the MTF frequencies in {path} must start at 0 or above and increase; check the file")
    if frequency[-1] > 0.5 + 1e-6:
        raise InputError(f"the MTF frequencies in {path} reach {frequency[-1]:g} 1/pixel, beyond Nyquist (0.5); "
                         "give them in 1/pixel as RELION's _rlnResolutionInversePixel")
    if np.any(value <= 0):
        raise InputError(f"the MTF file {path} holds zero or negative MTF values; the map cannot be divided by them")
    return 2.0 * frequency, value


def _star_columns(lines: list[str], path: Path) -> list[list[float]]:
    """(_rlnResolutionInversePixel, _rlnMtfValue) rows of the first loop that has both."""
    labels: list[str] = []
    rows: list[list[float]] = []
    for line in lines:
        text = line.split("#", 1)[0].strip()
        if text.startswith("_rln"):
            if rows:
                break  # a second loop starts
            labels.append(text.split()[0])
        elif text.startswith(("loop_", "data_")):
            if rows:
                break
            labels = []
        elif text and labels:
            rows.append(text.split())
    wanted = ("_rlnResolutionInversePixel", "_rlnMtfValue")
    if not all(label in labels for label in wanted):
        raise InputError(f"the MTF STAR file {path} lacks the columns _rlnResolutionInversePixel and _rlnMtfValue")
    columns = [labels.index(label) for label in wanted]
    try:
        return [[float(row[c]) for c in columns] for row in rows]
    except (ValueError, IndexError):
        raise InputError(f"the MTF STAR file {path} has a malformed row; check the file") from None


def _text_rows(lines: list[str]) -> list[list[float]]:
    """Two-column rows; anything else is a malformed file."""
    rows = []
    for line in lines:
        text = line.split("#", 1)[0].split()
        if not text:
            continue
        try:
            if len(text) != 2:
                raise ValueError
            rows.append([float(text[0]), float(text[1])])
        except ValueError:
            raise InputError(f"MTF text line {line.strip()!r} is not two numbers (frequency in 1/pixel, MTF); "
                             "fix the file or give RELION's MTF STAR file") from None
    return rows


def _mtf_on_grid(mtf: np.ndarray, frequency: np.ndarray, voxel_size: float,
                 mtf_pixel_size: float | None) -> np.ndarray:
    """The MTF at each Fourier voxel, linearly interpolated (held constant past either end), and 1
    beyond the map's Nyquist, where RELION does not divide either. ``mtf_pixel_size`` None: the
    MTF refers to the map's own voxel."""
    table = np.asarray(mtf, dtype=np.float64)
    if table.ndim != 2 or table.shape[0] != 2 or table.shape[1] < 2 or not np.all(table[1] > 0):
        raise InputError("mtf must be (frequency as a fraction of Nyquist, MTF value) with at least two positive "
                         "values, as read_mtf returns")
    nyquist_fraction, value = table
    detector_fraction = frequency * 2.0 * (mtf_pixel_size or voxel_size)
    on_grid = np.interp(detector_fraction, nyquist_fraction, value)
    on_grid[frequency > 0.5 / voxel_size] = 1.0
    return on_grid


def _choose_resolution(curve: FSCCurve, resolution: float | None, voxel_size: float,
                       low_resolution: float, *, fitting: bool) -> float:
    """The user's resolution after checks, or the FSC = 0.143 one (Nyquist, with a warning, when
    the FSC never drops that low)."""
    nyquist = 2.0 * voxel_size
    if resolution is None:
        resolution = _fsc_resolution(curve, nyquist)
    elif not (np.isfinite(resolution) and resolution >= nyquist * (1 - 1e-6)):
        raise InputError(f"resolution {resolution:g} Å is beyond Nyquist ({nyquist:g} Å for {voxel_size:g} Å "
                         "voxels); give a resolution of at least twice the voxel size")
    if fitting and resolution >= low_resolution:
        raise InputError(f"resolution {resolution:g} Å is not finer than the Guinier fit's low-resolution limit "
                         f"{low_resolution:g} Å; lower low_resolution or give a b_factor")
    return float(resolution)


def _fsc_resolution(curve: FSCCurve, nyquist: float) -> float:
    """FSC = 0.143 resolution, or Nyquist (warned) when the halves correlate to the end."""
    correlation = np.asarray(curve.correlation)
    if np.all(correlation >= HALF_MAP_FSC_THRESHOLD):
        log.warning("the half-map FSC stays above %.3f up to Nyquist: using Nyquist (%.3g Å) as the resolution; "
                    "the halves may not be independent", HALF_MAP_FSC_THRESHOLD, nyquist)
        return nyquist
    return max(float(resolution_at(curve, HALF_MAP_FSC_THRESHOLD)), nyquist)
