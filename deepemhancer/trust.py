"""How far to trust an enhanced map: a per-voxel confidence map and the independent-halves check.

Confidence: the spread between independent predictions of one map (the averaged map under cube
symmetries as test-time augmentation, and each half map on its own), normalised to [0, 1] with
1 where the predictions agree. Halves check: the FSC of the separately enhanced halves against
the FSC of the raw halves, shell by shell; beyond the raw 0.143 resolution the enhanced halves
must not agree more than the data do (docs/trust.md).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import stats

from . import normalization
from .errors import InputError
from .mapio import Geometry, Map, check_same_grid
from .metrics.fourier import HALF_MAP_FSC_THRESHOLD, FSCCurve, fsc, resolution_at, shared_power
from .pipeline import EnhanceOptions, Model, average_halves, enhance, load_model, takes_halves

log = logging.getLogger("deepemhancer")

AUGMENTATION_COUNTS = (1, 8, 24)
_FALSE_ALARM = 0.05  # chance that a map without invented detail has any shell flagged (Bonferroni)
_MIN_SIGMAS = 3.0  # never flag a shell closer than this many noise standard deviations


@dataclass(frozen=True)
class Augmentation:
    """A symmetry of the cube on array axes: flip ``flip_axes``, then np.rot90 by each (k, a, b) of ``turns``."""

    name: str
    flip_axes: tuple[int, ...] = ()
    turns: tuple[tuple[int, int, int], ...] = ()

    def apply(self, volume: np.ndarray) -> np.ndarray:
        out = np.flip(volume, self.flip_axes) if self.flip_axes else volume
        for k, a, b in self.turns:
            out = np.rot90(out, k, (a, b))
        return np.ascontiguousarray(out)

    def invert(self, volume: np.ndarray) -> np.ndarray:
        out = volume
        for k, a, b in reversed(self.turns):
            out = np.rot90(out, -k, (a, b))
        if self.flip_axes:
            out = np.flip(out, self.flip_axes)
        return np.ascontiguousarray(out)


def augmentations(n: int) -> list[Augmentation]:
    """1: identity; 8: flips over every subset of the three axes; 24: the proper rotations of the cube.

    The identity comes first in every set.
    """
    if n == 1:
        return [Augmentation("identity")]
    if n == 8:
        subsets = [(), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2), (0, 1, 2)]
        return [Augmentation("flip " + "".join(map(str, s)) if s else "identity", flip_axes=s) for s in subsets]
    if n == 24:
        # Bring each of the 6 faces to the front (turns about axes 1 and 0), then spin about axis 0.
        faces = [(), ((1, 0, 2),), ((2, 0, 2),), ((3, 0, 2),), ((1, 0, 1),), ((3, 0, 1),)]
        rotations = []
        for face in faces:
            for spin in range(4):
                turns = tuple(face) + (((spin, 1, 2),) if spin else ())
                name = " ".join(f"rot{k * 90}({a}{b})" for k, a, b in turns) or "identity"
                rotations.append(Augmentation(name, turns=turns))
        return rotations
    raise InputError(f"test-time augmentations must be one of {AUGMENTATION_COUNTS}, not {n}")


@dataclass(frozen=True, eq=False)
class ConfidenceResult:
    """map: the plain enhancement (what enhance() gives); half_maps: each half enhanced on its own,
    or None; confidence: per-voxel agreement of the predictions in [0, 1]; n_predictions: how many."""

    map: Map
    half_maps: tuple[Map, Map] | None
    confidence: Map
    n_predictions: int


class _Spread:
    """Running mean and sum of squared deviations over predictions (Welford): two float32 arrays, any count."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = x.astype(np.float32, copy=True), np.zeros(x.shape, np.float32)
            return
        delta = x - self.mean
        self.mean += delta / np.float32(self.count)
        delta *= x - self.mean
        self.m2 += delta

    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / np.float32(self.count - 1))


def confidence_from_spread(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """1 - clip(std / (|mean| + rms), 0, 1), rms the standard deviation of ``mean`` over the box (float32).

    The spread is judged against the local density, with the map's RMS (the unit maps are contoured
    in) as the floor where the density is near zero.
    """
    rms = np.float32(np.std(mean, dtype=np.float64))
    scale = np.abs(mean) + rms
    ratio = np.divide(std, scale, out=np.zeros(std.shape, np.float32), where=scale > 0)
    return 1.0 - np.clip(ratio, 0.0, 1.0, out=ratio)


def enhance_with_confidence(map_or_halves: Map | Sequence[Map], model: Model | str | Path,
                            options: EnhanceOptions = EnhanceOptions(), augmentations: int = 8) -> ConfidenceResult:
    """Enhance and measure how far independent predictions agree; costs ``augmentations`` enhance runs,
    plus 2 with half maps.

    Predictions: the map (or the average of the halves) under each augmentation (transformed, enhanced
    with ``options``, transformed back) and, given half maps, each half enhanced on its own. Every
    prediction is normalised with the noise statistics of the map (or average), so all share one
    intensity scale; in masked mode each normalises itself inside the mask. A half-map model (which
    needs both halves for every prediction) gets the augmentations of the pair only.
    """
    if not isinstance(model, Model):
        model = load_model(model)
    pair_model = takes_halves(model)
    halves = _as_halves(map_or_halves)
    # A half-map model predicts from the pair; any other model from the average, and each half alone.
    separate_halves = halves is not None and not pair_model
    transforms = _augmentations_for(augmentations, halves=separate_halves)
    if pair_model and halves is None:
        raise InputError(f"model {model.name!r} needs the two half maps; give both")
    average = map_or_halves if halves is None else average_halves(*halves)
    source = halves if pair_model else average
    if not pair_model and options.mask is None and options.noise_stats is None:
        # Estimated once on the map, exactly as enhance() would, and reused for every prediction.
        options = dataclasses.replace(options, noise_stats=normalization.noise_statistics_radial(average.data))
    total = len(transforms) + (2 if separate_halves else 0)
    spread = _Spread()
    plain = None
    for i, transform in enumerate(transforms, 1):
        log.info("confidence: prediction %d of %d (%s)", i, total, transform.name)
        predicted = _enhance_augmented(source, model, options, transform)
        if plain is None:
            plain = predicted
        spread.add(predicted.data)
    enhanced_halves = None
    if separate_halves:
        enhanced_halves = []
        for i, half in enumerate(halves, 1):
            log.info("confidence: prediction %d of %d (half map %d)", len(transforms) + i, total, i)
            enhanced_halves.append(enhance(half, model, options))
            spread.add(enhanced_halves[-1].data)
        enhanced_halves = tuple(enhanced_halves)
    confidence = confidence_from_spread(spread.mean, spread.std())
    return ConfidenceResult(map=plain, half_maps=enhanced_halves, confidence=average.with_data(confidence),
                            n_predictions=total)


def _augmentations_for(n: int, halves: bool) -> list[Augmentation]:
    transforms = augmentations(n)
    if len(transforms) == 1 and not halves:
        raise InputError("a confidence map needs at least two predictions: give half maps or 8 or 24 augmentations")
    return transforms


def _as_halves(map_or_halves: Map | Sequence[Map]) -> tuple[Map, Map] | None:
    if isinstance(map_or_halves, Map):
        return None
    if len(map_or_halves) != 2:
        raise InputError(f"give one map or two half maps, not {len(map_or_halves)}")
    return map_or_halves[0], map_or_halves[1]


def _enhance_augmented(source: Map | tuple[Map, Map], model: Model, options: EnhanceOptions,
                       transform: Augmentation) -> Map:
    """enhance() of the transformed map or pair of half maps (and mask), transformed back onto the
    source's grid."""
    if not transform.flip_axes and not transform.turns:
        return enhance(source, model, options)
    first = source if isinstance(source, Map) else source[0]
    voxel = first.isotropic_voxel_size

    def moved(m: Map) -> Map:
        data = transform.apply(m.data)
        return Map(data, Geometry.for_grid(data.shape, voxel))

    if options.mask is not None:
        options = dataclasses.replace(options, mask=moved(options.mask))
    moved_source = moved(source) if isinstance(source, Map) else tuple(moved(h) for h in source)
    predicted = enhance(moved_source, model, options)
    return first.with_data(transform.invert(predicted.data))


@dataclass(frozen=True, eq=False)
class HalvesCheck:
    """FSC of the raw and of the separately enhanced halves, and the shells where the enhanced agree too well.

    margin: per shell, how far the enhanced FSC may exceed the raw one by chance.
    flagged: shells beyond the raw 0.143 resolution where it exceeds it by more.
    enhanced_shared_beyond, raw_shared_beyond: the share of each pair's shared power (the FSC's
    numerator summed over shells 1 .. Nyquist) that lies beyond the raw 0.143 resolution: how much
    of the map the detail there is, which the scale-free FSC cannot say.
    """

    raw: FSCCurve
    enhanced: FSCCurve
    margin: np.ndarray
    flagged: np.ndarray
    raw_resolution: float
    enhanced_resolution: float
    enhanced_shared_beyond: float
    raw_shared_beyond: float

    @property
    def invented_detail(self) -> bool:
        return bool(self.flagged.any())

    @property
    def verdict(self) -> str:
        if not self.invented_detail:
            return (f"no sign of invented detail: beyond the raw halves' {self.raw_resolution:.2f} Å the enhanced "
                    "halves agree no more than the data support")
        shells = 1.0 / self.raw.resolution[self.flagged]
        return (f"possible invented detail: in {int(self.flagged.sum())} shells between {shells.max():.2f} and "
                f"{shells.min():.2f} Å, beyond the raw halves' {self.raw_resolution:.2f} Å, the enhanced halves "
                f"agree more than the data support; {share_text(self.enhanced_shared_beyond)} of their shared power "
                f"lies there (raw halves: {share_text(self.raw_shared_beyond)})")

    def to_dict(self) -> dict:
        """JSON-able numbers: resolutions in Å, the per-shell curves, flagged shells and the verdict."""
        return {"raw_resolution_0143": self.raw_resolution, "enhanced_resolution_0143": self.enhanced_resolution,
                "invented_detail": self.invented_detail, "verdict": self.verdict,
                "enhanced_shared_power_beyond": self.enhanced_shared_beyond,
                "raw_shared_power_beyond": self.raw_shared_beyond,
                "flagged_resolutions": [float(v) for v in 1.0 / self.raw.resolution[self.flagged]],
                "voxel_size": self.raw.voxel_size,
                "shells": {"resolution_inv_angstrom": self.raw.resolution.tolist(),
                           "n_voxels": self.raw.n_voxels.tolist(), "fsc_raw": self.raw.correlation.tolist(),
                           "fsc_enhanced": self.enhanced.correlation.tolist(), "margin": self.margin.tolist(),
                           "flagged": self.flagged.tolist()}}

    @classmethod
    def from_dict(cls, entry: dict) -> "HalvesCheck":
        """The check back from ``to_dict``'s output (to plot it again from a JSON file)."""
        shells, voxel = entry["shells"], float(entry["voxel_size"])
        s, n = np.asarray(shells["resolution_inv_angstrom"]), np.asarray(shells["n_voxels"])
        return cls(raw=FSCCurve(s, np.asarray(shells["fsc_raw"]), n, voxel),
                   enhanced=FSCCurve(s, np.asarray(shells["fsc_enhanced"]), n, voxel),
                   margin=np.asarray(shells["margin"]), flagged=np.asarray(shells["flagged"], dtype=bool),
                   raw_resolution=float(entry["raw_resolution_0143"]),
                   enhanced_resolution=float(entry["enhanced_resolution_0143"]),
                   enhanced_shared_beyond=float(entry["enhanced_shared_power_beyond"]),
                   raw_shared_beyond=float(entry["raw_shared_power_beyond"]))


def share_text(share: float) -> str:
    """A shared-power share as a percentage; below zero (noise in the estimate) as '≤ 0 %'."""
    return f"{100 * share:.1f} %" if share > 0 else "≤ 0 %"


def halves_check(raw_half1: Map, raw_half2: Map, enhanced_half1: Map, enhanced_half2: Map,
                 mask: Map | None = None) -> HalvesCheck:
    """Compare FSC(enhanced halves) with FSC(raw halves) shell by shell (both under ``mask`` when given).

    A shell is flagged when it lies beyond the raw 0.143 resolution and the enhanced FSC exceeds the
    raw one by more than z noise standard deviations of an FSC difference, sqrt(2) / sqrt(n_eff / 2)
    for n_eff coefficients in the shell (times the mask's volume fraction); z makes a false flag on
    any shell 5 % likely (Bonferroni, at least 3).
    """
    others = [(raw_half2, "raw half map 2"), (enhanced_half1, "enhanced half map 1"),
              (enhanced_half2, "enhanced half map 2")] + ([] if mask is None else [(mask, "the mask")])
    for other, name in others:
        check_same_grid(raw_half1, other, "raw half map 1", name)
    voxel = raw_half1.isotropic_voxel_size
    weights = None if mask is None else mask.data
    raw = fsc(raw_half1.data, raw_half2.data, voxel, weights)
    enhanced = fsc(enhanced_half1.data, enhanced_half2.data, voxel, weights)
    raw_resolution = resolution_at(raw, HALF_MAP_FSC_THRESHOLD)
    beyond = raw.resolution > 1.0 / raw_resolution
    n_eff = raw.n_voxels * _volume_fraction(weights)
    margin = _sigmas(int(beyond.sum())) * np.sqrt(2.0) / np.sqrt(np.maximum(n_eff / 2.0, 1.0))
    flagged = beyond & (enhanced.correlation - raw.correlation > margin)

    def share_beyond(a: Map, b: Map) -> float:
        shared = shared_power(a.data, b.data, voxel, weights)
        total = float(shared.sum())
        return float(shared[beyond].sum()) / total if total > 0 else 0.0

    return HalvesCheck(raw=raw, enhanced=enhanced, margin=margin, flagged=flagged, raw_resolution=raw_resolution,
                       enhanced_resolution=resolution_at(enhanced, HALF_MAP_FSC_THRESHOLD),
                       enhanced_shared_beyond=share_beyond(enhanced_half1, enhanced_half2),
                       raw_shared_beyond=share_beyond(raw_half1, raw_half2))


def _sigmas(n_tested: int) -> float:
    return max(_MIN_SIGMAS, float(stats.norm.isf(_FALSE_ALARM / max(n_tested, 1))))


def _volume_fraction(mask: np.ndarray | None) -> float:
    """The share of the box a (soft) mask keeps, as its participation ratio (sum m)² / (N sum m²)."""
    if mask is None:
        return 1.0
    m = np.asarray(mask, dtype=np.float64)
    squares = float(np.sum(m * m))
    if squares <= 0:
        raise InputError("the mask is empty (all zero); give a mask around the molecule")
    return float(np.sum(m)) ** 2 / (m.size * squares)
