"""The one pipeline: read → normalise → resample → tile → predict → blend → resample back.

``enhance`` serves the command line, the Scipion plugin, the benchmarks and the tests.
"""
from __future__ import annotations

import logging
import numbers
import os
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from . import cleaning, halves_input, normalization, resampling, tiling
from .devices import PRECISIONS, resolve_devices, torch_settings
from .errors import InputError, ResourceError
from .mapio import Map, average_halves, check_map_values
from .molecule_masks import molecule_mask
from .metrics import check_mask
from .models.loaded import Model, load_model, takes_halves
from .predict import Progress, network_predictor
from .tiling import Tiling, sliding_window

log = logging.getLogger("deepemhancer")

BLENDINGS = ("gaussian", "count")
# Noise std 0.1 is the normalised unit; a map reaching this far beyond it was given noise
# statistics that are not its own (a network fed such values returns Inf/NaN).
MAX_NORMALISED = 1e4
# The solvent farther than this from the automatic molecular mask is not predicted: the result fades
# to 0 over SOLVENT_EDGE_A beyond it (a raised cosine: a hard step would correlate two enhanced
# halves by itself). Measured in docs/performance.md: the result inside the molecule does not change.
SOLVENT_MARGIN_A = 10.0
SOLVENT_EDGE_A = 5.0


@dataclass(frozen=True)
class EnhanceOptions:
    """How to enhance. The defaults are the corrected pipeline on the first GPU (or the CPU).

    legacy: reproduce the original step by step (count+1 blending, its padding, skimage round trip).
    noise_stats: (mean, std) of the solvent noise; None estimates them. (The other normalisation,
        by a binary mask, is chosen by giving ``enhance`` the mask: a mask is data, not a setting.)
    blending: corrected mode only: 'gaussian' (smooth window, the default: None) or 'count' (true
        mean; cube edges then leave a pattern at the stride that independent halves share).
    stride: cube stride in voxels; None takes the model's (16 for the official models).
    cleaning_strength: remove connected components smaller than this fraction (0..1); None: off.
    gpu_ids: the original's -g: "0", "0,1", "all", "-1" (CPU).
    batch_size: cubes per device per step; None sizes it from free memory.
    precision: fp32 (default, reproducible), tf32, bf16 or fp16.
    threads: CPU threads; None leaves torch's default (OMP_NUM_THREADS).
    progress: report progress with a time estimate (a bar on a terminal, else a line every 30 s).
    skip_solvent: default mode without a mask: predict only near the molecule (its automatic mask
        dilated by 10 Å); beyond, the result fades to 0 over 5 Å, as a tight-target model makes it.
    """

    legacy: bool = False
    noise_stats: tuple[float, float] | None = None
    blending: Literal["count", "gaussian"] | None = None
    stride: int | None = None
    cleaning_strength: float | None = None
    gpu_ids: str = "0"
    batch_size: int | None = None
    precision: str = "fp32"
    threads: int | None = None
    progress: bool = True
    skip_solvent: bool = True

    def __post_init__(self) -> None:
        """Every setting is checked here, on its own, before any work; what depends on the model
        is checked by ``enhance``."""
        self._check_modes()
        self._check_numbers()
        if not isinstance(self.gpu_ids, str):
            raise InputError(f"gpu_ids must be text such as '0', '0,1', 'all' or '-1' (CPU), not {self.gpu_ids!r}",
                             setting="gpu_ids")
        if self.precision not in PRECISIONS:
            raise InputError(f"precision {self.precision!r} is unknown; choose one of {', '.join(PRECISIONS)}",
                             setting="precision")

    def _check_modes(self) -> None:
        """The switches, the noise statistics and the blending."""
        for name in ("legacy", "progress", "skip_solvent"):
            if not isinstance(getattr(self, name), bool):
                raise InputError(f"{name} must be True or False, not {getattr(self, name)!r}", setting=name)
        if self.noise_stats is not None:
            object.__setattr__(self, "noise_stats", _noise_stats(self.noise_stats))
        if self.blending not in (None, *BLENDINGS):
            raise InputError(f"blending {self.blending!r} is unknown; choose one of {', '.join(BLENDINGS)}",
                             setting="blending")
        if self.legacy and self.blending is not None:
            raise InputError("legacy mode blends as the original does; the blending choice applies to the "
                             "default mode only", setting="blending")

    def _check_numbers(self) -> None:
        for name in ("stride", "batch_size", "threads"):
            _check_count(getattr(self, name), name)
        if self.cleaning_strength is not None:
            if not _is_number(self.cleaning_strength):
                raise InputError(f"cleaning strength must be a number, not {self.cleaning_strength!r}",
                                 setting="cleaning_strength")
            cleaning.check_strength(self.cleaning_strength)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_count(value, name: str) -> None:
    """InputError unless ``value`` is None or a whole number of at least 1."""
    if value is not None and not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1):
        raise InputError(f"{name.replace('_', ' ')} must be a whole number of at least 1, not {value!r}",
                         setting=name)


def _noise_stats(value) -> tuple[float, float]:
    """(mean, std) as floats; InputError unless two finite numbers with a positive std."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2 \
            or not all(_is_number(v) and np.isfinite(v) for v in value):
        raise InputError(f"noise statistics must be two finite numbers (mean, std), not {value!r}",
                         setting="noise_stats")
    mean, std = float(value[0]), float(value[1])
    if not std > 0:
        raise InputError(f"the noise standard deviation must be positive, not {std:g}", setting="noise_stats")
    return mean, std


def _check_options(options: EnhanceOptions, model: Model, mask: Map | None) -> None:
    """What the settings (checked on their own by EnhanceOptions) and the choice of a mask must
    satisfy together and for this model."""
    if not isinstance(options, EnhanceOptions):
        raise InputError(f"options must be EnhanceOptions, not {type(options).__name__}")
    if mask is not None and not isinstance(mask, Map):
        raise InputError(f"the mask must be a Map (read it with read_map), not {type(mask).__name__}", setting="mask")
    if mask is not None and options.noise_stats is not None:
        raise InputError("a mask and noise statistics are two normalisation modes; give only one",
                         setting="noise_stats")
    masked_model = model.metadata["normalization"] == "masked"
    if takes_halves(model):
        if mask is not None or options.noise_stats is not None:
            raise InputError(f"model {model.name!r} measures the noise from the two half maps; it takes "
                             "no mask or noise statistics", setting="noise_stats")
        if options.legacy:
            raise InputError(f"legacy mode reproduces the original, which takes one map; model {model.name!r} "
                             "needs the default mode", setting="legacy")
    if mask is not None and not masked_model:
        raise InputError(f"a binary mask selects masked normalisation, but model {model.name!r} expects "
                         "unmasked input; use the 'masked' model or no mask", setting="mask")
    if mask is None and masked_model:
        raise InputError(f"model {model.name!r} needs a binary mask; give one", setting="mask")
    cube = int(model.metadata["cube_size"])
    if options.stride is not None and options.stride > cube:
        raise InputError(f"stride must be between 1 and the cube size {cube}, not {options.stride}", setting="stride")


def _per_channel(function, volume: np.ndarray) -> np.ndarray:
    """``function`` applied to a (Z, Y, X) volume, or to each channel of a (C, Z, Y, X) one."""
    return function(volume) if volume.ndim == 3 else np.stack([function(channel) for channel in volume])


def _normalise(volume: np.ndarray, options: EnhanceOptions, mask: Map | None,
               halves: tuple[Map, Map] | None) -> np.ndarray:
    """The map in the network's units: by its mask, by the noise statistics given, measured from the
    two halves (``halves``: the corrected mode), or estimated as the original does."""
    if mask is not None:
        return normalization.normalize_with_mask(volume, mask.data)
    if options.noise_stats is None:
        if halves is not None:
            mean, std = normalization.noise_statistics_from_halves(halves[0].data, halves[1].data)
        else:
            mean, std = normalization.noise_statistics_radial(volume)  # logs what it found
        return normalization.normalize_with_noise(volume, mean, std)
    mean, std = options.noise_stats
    normalised = normalization.normalize_with_noise(volume, mean, std)
    reach = float(np.max(np.abs(normalised)))
    if not reach <= MAX_NORMALISED:
        raise InputError(f"noise mean {mean:g} and standard deviation {std:g} do not describe this map's noise "
                         f"(its values reach {reach / 0.1:.3g} such deviations); give the solvent noise of this map, "
                         "or let it be estimated", setting="noise_stats")
    return normalised


def _source(map_or_halves) -> tuple[Map, tuple[Map, Map] | None]:
    """(the map to enhance, the two halves or None) from what enhance was given."""
    if isinstance(map_or_halves, Map):
        return map_or_halves, None
    if isinstance(map_or_halves, (str, bytes, os.PathLike)):
        raise InputError(f"enhance takes maps, not file names: read {map_or_halves!s} with read_map first")
    if not isinstance(map_or_halves, Sequence):
        raise InputError(f"enhance takes a Map or two half Maps, not {type(map_or_halves).__name__}")
    if len(map_or_halves) != 2:
        raise InputError(f"give one map or two half maps, not {len(map_or_halves)}")
    if not all(isinstance(m, Map) for m in map_or_halves):
        kinds = ", ".join(type(m).__name__ for m in map_or_halves)
        raise InputError(f"two half maps must be two Maps (read them with read_map), not {kinds}")
    halves = (map_or_halves[0], map_or_halves[1])
    return average_halves(*halves), halves


def _host_memory_budget() -> int | None:
    """Bytes this process can still get: available memory and free swap, capped by an address-space
    limit (ulimit -v); None where the system does not say."""
    try:
        with open("/proc/meminfo") as handle:
            info = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in handle if line.strip()}
        with open("/proc/self/status") as handle:
            used = next((int(line.split()[1]) * 1024 for line in handle if line.startswith("VmSize:")), 0)
    except (OSError, ValueError, IndexError):
        return None
    budget = info.get("MemAvailable", 0) + info.get("SwapFree", 0)
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    return budget if limit == resource.RLIM_INFINITY else min(budget, limit - used)


def _check_memory(source: Map, voxel_size: float, model: Model, channels: int, stride: int) -> None:
    """ResourceError before any large allocation when the arrays the run holds at once cannot fit.

    Counted: the normalised input, its copy on the model grid, the padded copy and the blended sum,
    all float32 (an upper bound: not all live at once). Cubes in flight and the network are small
    beside them.
    """
    cube, model_voxel = int(model.metadata["cube_size"]), float(model.metadata["voxel_size"])
    grid = resampling.model_grid_shape(source.data.shape, voxel_size, model_voxel)
    padded = [n + after for n, (_, after) in zip(grid, tiling.covering_padding(grid, cube, stride))]
    voxels = [int(np.prod(shape, dtype=np.float64)) for shape in (source.data.shape, grid, padded)]
    needed = 4 * (channels * sum(voxels) + voxels[2])
    budget = _host_memory_budget()
    if budget is not None and needed > budget:
        raise ResourceError(
            f"enhancing this {'x'.join(map(str, source.data.shape))} map at {voxel_size:g} Å needs about "
            f"{needed / 2**30:.1f} GiB of memory ({'x'.join(map(str, grid))} voxels on the model's {model_voxel:g} Å "
            f"grid) but about {max(budget, 0) / 2**30:.1f} GiB is available; check the voxel size, crop the box, "
            "or use a machine with more memory")


def enhance(map_or_halves: Map | Sequence[Map], model: Model | str | Path,
            options: EnhanceOptions = EnhanceOptions(), *, mask: Map | None = None,
            progress: Progress | None = None) -> Map:
    """Enhance a map (or the average of two half maps) with a model; the result keeps the input's geometry.

    Intensities of the result are in the network's normalised units (noise std 0.1 at input), as
    the original writes them. ``mask``: a binary mask of the molecule on the input's grid (its
    array is used, not its origin); it selects masked normalisation, which the masked model
    needs, and only the cubes it touches are predicted. ``progress``: the report of a longer job
    this run is part of (the confidence map's); None: a report of its own, as ``options.progress`` says.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    if not isinstance(model, Model):
        raise InputError(f"model must be a Model (load_model) or the path of a model JSON, not {type(model).__name__}")
    _check_options(options, model, mask)
    source, halves = _source(map_or_halves)
    if takes_halves(model) and halves is None:
        raise InputError(f"model {model.name!r} needs the two half maps (they measure the noise); give both, "
                         "or choose a single-map model")
    check_map_values(source, "input map")
    voxel_size = source.isotropic_voxel_size
    if mask is not None:
        check_mask(mask.data, source.data.shape, "the map's", values="binarised", setting="mask")
    recipe = Recipe(options, model, masked=mask is not None)
    _check_memory(source, voxel_size, model, halves_input.CHANNELS if takes_halves(model) else 1, recipe.tiling.stride)
    report = progress if progress is not None else Progress(enabled=options.progress)
    try:
        with torch_settings(options.threads, options.precision):
            return _enhance(source, halves, mask, model, options, recipe, report)
    except MemoryError:
        raise ResourceError(f"ran out of memory enhancing this {'x'.join(map(str, source.data.shape))} map; "
                            "close other programs, crop the box, or use a machine with more memory") from None
    finally:
        if progress is None:
            report.close()


@dataclass(frozen=True)
class Recipe:
    """The original's pipeline (legacy) or the corrected one, chosen once for a run: how the map goes
    to the model's grid and back, how it is tiled, and whether cubes of solvent are skipped."""

    legacy: bool
    tiling: Tiling
    model_voxel: float
    skip_solvent: bool

    def __init__(self, options: EnhanceOptions, model: Model, *, masked: bool):
        cube = int(model.metadata["cube_size"])
        object.__setattr__(self, "legacy", options.legacy)
        object.__setattr__(self, "tiling", Tiling(cube, options.stride or int(model.metadata["stride"]),
                                                  legacy=options.legacy, blending=options.blending or "gaussian"))
        object.__setattr__(self, "model_voxel", float(model.metadata["voxel_size"]))
        # legacy mode predicts every cube, as the original; a given mask already chooses the cubes
        object.__setattr__(self, "skip_solvent", options.skip_solvent and not options.legacy and not masked)

    def to_model_grid(self, volume: np.ndarray, voxel_size: float) -> np.ndarray:
        """(Z, Y, X) or (C, Z, Y, X) on the model's grid."""
        if self.legacy:
            shape = resampling.legacy_target_shape(volume.shape[-3:], voxel_size, self.model_voxel)
            return _per_channel(lambda v: resampling.legacy_resize(v, shape), volume)
        return _per_channel(lambda v: resampling.to_model_grid(v, voxel_size, self.model_voxel), volume)

    def from_model_grid(self, volume: np.ndarray, voxel_size: float, shape: Sequence[int]) -> np.ndarray:
        if self.legacy:
            return resampling.legacy_resize(volume, shape)
        return resampling.from_model_grid(volume, voxel_size, shape, self.model_voxel)


def solvent_free_region(volume: np.ndarray, voxel_size: float) -> np.ndarray | None:
    """Where the map may hold signal: its automatic molecular mask (``molecule_masks.molecule_mask``) dilated
    by SOLVENT_MARGIN_A, fading to 0 over SOLVENT_EDGE_A; beyond it there is solvent only. None
    where no molecule stands out of the noise (then every cube is predicted)."""
    region = molecule_mask(volume, voxel_size=voxel_size, dilation_A=SOLVENT_MARGIN_A, soft_edge_A=SOLVENT_EDGE_A)
    if region is None:
        log.info("no molecule stands out of the noise: every cube is predicted")
    return region


def _enhance(source: Map, halves: tuple[Map, Map] | None, mask: Map | None, model: Model, options: EnhanceOptions,
             recipe: Recipe, progress: Progress) -> Map:
    """enhance() once its inputs are checked."""
    voxel_size = source.isotropic_voxel_size
    devices = resolve_devices(options.gpu_ids)
    # (Z, Y, X), or (C, Z, Y, X) for a half-map model
    # (a half-map model may read channel 0 alone: the noise channel's ablation, train.config)
    normalised = (halves_input.halves_channels(*halves, halves_input.WEIGHTING[model.metadata["normalization"]])
                  [:model.network.in_channels] if takes_halves(model)
                  else _normalise(source.data, options, mask, None if recipe.legacy else halves))
    region = mask.data.astype(np.float32) if mask is not None else (
        solvent_free_region(source.data, voxel_size) if recipe.skip_solvent else None)
    resampled = recipe.to_model_grid(normalised, voxel_size)
    del normalised
    region = None if region is None else recipe.to_model_grid(region, voxel_size)
    tiling = recipe.tiling
    log.info("predicting on %s", ", ".join(str(d) for d in devices))
    predictor = network_predictor(model.network, devices, cube=tiling.cube, batch_size=options.batch_size,
                                  precision=options.precision, progress=progress)
    enhanced = sliding_window(resampled, predictor, tiling, region)
    del resampled
    if recipe.skip_solvent and region is not None:
        # the solvent fades by the region, not by where the cube grid happened to reach: the same
        # for any placement of the grid (the confidence map's augmentations move it)
        enhanced[region <= tiling.mask_threshold] = 0.0
        enhanced *= np.clip(region, 0.0, 1.0)
    if not np.all(np.isfinite(enhanced)):
        advice = ("compute in fp32 precision" if options.precision != "fp32"
                  else "check that the map (and any noise statistics given) are right")
        raise InputError(f"the network produced NaN/Inf values ({options.precision}); {advice}",
                         setting="precision" if options.precision != "fp32" else None)
    if options.cleaning_strength is not None:
        enhanced = cleaning.remove_small_blobs(enhanced, options.cleaning_strength)
    restored = recipe.from_model_grid(enhanced, voxel_size, source.data.shape)
    return source.with_data(np.ascontiguousarray(restored, dtype=np.float32))
