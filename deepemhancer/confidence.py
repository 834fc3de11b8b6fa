"""The confidence map: how far independent predictions of one map agree, per voxel.

The spread between independent predictions of one map (the averaged map under cube symmetries as
test-time augmentation, and each half map on its own), normalised to [0, 1] with 1 where the
predictions agree. It runs ``enhance`` once per prediction, so it lives with the pipeline; the
independent-halves check, a measurement of the enhanced halves it makes, is
``deepemhancer.metrics.independent_halves`` (docs/trust.md).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from . import normalization
from .errors import InputError
from .mapio import Geometry, Map, average_halves
from .models.loaded import Model, load_model, takes_halves
from .pipeline import EnhanceOptions, enhance
from .predict import Progress

log = logging.getLogger("deepemhancer")

AUGMENTATION_COUNTS = (1, 8, 24)


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
                            options: EnhanceOptions = EnhanceOptions(), augmentations: int = 8, *,
                            mask: Map | None = None) -> ConfidenceResult:
    """Enhance and measure how far independent predictions agree; costs ``augmentations`` enhance runs,
    plus 2 with half maps.

    Predictions: the map (or the average of the halves) under each augmentation (transformed, enhanced
    with ``options``, transformed back) and, given half maps, each half enhanced on its own. Every
    prediction is normalised with the noise statistics of the map (or average), so all share one
    intensity scale; in masked mode (``mask``, as ``enhance`` takes it) each normalises itself inside
    the mask, moved with the map. A half-map model (which
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
    if not pair_model and mask is None and options.noise_stats is None:
        # Taken once, exactly as enhance() would (measured from the halves in the default mode), and
        # reused for every prediction.
        options = dataclasses.replace(options, noise_stats=(
            normalization.noise_statistics_from_halves(halves[0].data, halves[1].data)
            if halves is not None and not options.legacy else normalization.noise_statistics_radial(average.data)))
    total = len(transforms) + (2 if separate_halves else 0)
    progress = Progress(runs=total, enabled=options.progress, label="enhancing (confidence)")
    spread = _Spread()
    plain = None
    try:
        for i, transform in enumerate(transforms, 1):
            log.debug("confidence: prediction %d of %d (%s)", i, total, transform.name)
            predicted = _enhance_augmented(source, mask, model, options, transform, progress)
            if plain is None:
                plain = predicted
            spread.add(predicted.data)
        enhanced_halves = None
        if separate_halves:
            enhanced_halves = []
            for i, half in enumerate(halves, 1):
                log.debug("confidence: prediction %d of %d (half map %d)", len(transforms) + i, total, i)
                enhanced_halves.append(enhance(half, model, options, mask=mask, progress=progress))
                spread.add(enhanced_halves[-1].data)
            enhanced_halves = tuple(enhanced_halves)
    finally:
        progress.close()
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


def _enhance_augmented(source: Map | tuple[Map, Map], mask: Map | None, model: Model, options: EnhanceOptions,
                       transform: Augmentation, progress: Progress) -> Map:
    """enhance() of the transformed map or pair of half maps (and mask), transformed back onto the
    source's grid."""
    if not transform.flip_axes and not transform.turns:
        return enhance(source, model, options, mask=mask, progress=progress)
    first = source if isinstance(source, Map) else source[0]
    voxel = first.isotropic_voxel_size

    def moved(m: Map) -> Map:
        data = transform.apply(m.data)
        return Map(data, Geometry.for_grid(data.shape, voxel))

    moved_source = moved(source) if isinstance(source, Map) else tuple(moved(h) for h in source)
    predicted = enhance(moved_source, model, options, mask=None if mask is None else moved(mask), progress=progress)
    return first.with_data(transform.invert(predicted.data))
