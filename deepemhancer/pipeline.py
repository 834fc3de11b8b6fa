"""The one pipeline: read → normalise → resample → tile → predict → blend → resample back.

``enhance`` serves the command line, the Scipion plugin, the benchmarks and the tests.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from . import cleaning, halves_input, normalization, resampling, tiling
from .devices import configure_matmul_precision, resolve_devices, set_cpu_threads
from .errors import InputError
from .mapio import Map, check_same_grid, validate_for_enhancement
from .models.store import load_network
from .predict import predict_into

log = logging.getLogger("deepemhancer")


@dataclass(frozen=True)
class EnhanceOptions:
    """How to enhance. The defaults are the corrected pipeline on the first GPU (or the CPU).

    legacy: reproduce the original step by step (count+1 blending, its padding, skimage round trip).
    noise_stats: (mean, std) of the solvent noise; None estimates them (ignored in masked mode).
    mask: a binary mask on the input's grid; selects masked normalisation (needs the masked model).
    blending: corrected mode only: 'gaussian' (smooth window, the default: None) or 'count' (true
        mean; cube edges then leave a pattern at the stride that independent halves share).
    stride: cube stride in voxels; None takes the model's (16 for the official models).
    cleaning_strength: remove connected components smaller than this fraction (0..1); None: off.
    gpu_ids: the original's -g: "0", "0,1", "all", "-1" (CPU).
    batch_size: cubes per device per step; None sizes it from free memory.
    precision: fp32 (default, reproducible), tf32, bf16 or fp16.
    threads: CPU threads; None leaves torch's default (OMP_NUM_THREADS).
    """

    legacy: bool = False
    noise_stats: tuple[float, float] | None = None
    mask: Map | None = None
    blending: Literal["count", "gaussian"] | None = None
    stride: int | None = None
    cleaning_strength: float | None = None
    gpu_ids: str = "0"
    batch_size: int | None = None
    precision: str = "fp32"
    threads: int | None = None
    progress: bool = True


@dataclass
class Model:
    """A network ready to run, with the settings its JSON states."""

    network: torch.nn.Module
    metadata: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", "unnamed"))


def load_model(json_path: str | Path) -> Model:
    """Load a model JSON (and its safetensors) onto the CPU; warns once if it is an untrained demo."""
    network, metadata = load_network(Path(json_path))
    model = Model(network=network, metadata=metadata, path=Path(json_path))
    if not metadata.get("trained", True):
        log.warning("model %r is an UNTRAINED network: the result only demonstrates the pipeline "
                    "and is not an enhanced map", model.name)
    return model


def average_halves(first: Map, second: Map) -> Map:
    """The voxel-wise mean of two half maps, after checking they share one grid and placement."""
    check_same_grid(first, second, "half map 1", "half map 2",
                    advice="use the two unfiltered half maps of one refinement")
    return first.with_data((0.5 * (first.data + second.data)).astype(np.float32))


def _check_options(options: EnhanceOptions, model: Model) -> None:
    masked_model = model.metadata["normalization"] == "masked"
    if takes_halves(model):
        if options.mask is not None or options.noise_stats is not None:
            raise InputError(f"model {model.name!r} measures the noise from the two half maps; it takes "
                             "no mask or noise statistics")
        if options.legacy:
            raise InputError(f"legacy mode reproduces the original, which takes one map; model {model.name!r} "
                             "needs the default mode")
    if options.mask is not None and not masked_model:
        raise InputError(f"a binary mask selects masked normalisation, but model {model.name!r} expects "
                         "unmasked input; use the 'masked' model or drop -m")
    if options.mask is None and masked_model:
        raise InputError(f"model {model.name!r} needs a binary mask; pass one with -m/--binaryMask")
    if options.mask is not None and options.noise_stats is not None:
        raise InputError("--noiseStats and -m/--binaryMask are two normalisation modes; give only one")
    if options.noise_stats is not None and not options.noise_stats[1] > 0:
        raise InputError(f"--noiseStats standard deviation must be positive, not {options.noise_stats[1]}")
    if options.cleaning_strength is not None:
        cleaning.check_strength(options.cleaning_strength)
    if options.stride is not None and not 0 < options.stride <= int(model.metadata["cube_size"]):
        raise InputError(f"stride must be between 1 and the cube size {model.metadata['cube_size']}, not {options.stride}")
    if options.batch_size is not None and options.batch_size < 1:
        raise InputError(f"batch size must be at least 1, not {options.batch_size}")
    if options.legacy and options.blending is not None:
        raise InputError("legacy mode blends as the original does; --blending applies to the default mode only")


def takes_halves(model: Model) -> bool:
    """Whether the model takes two half maps (it measures the noise from their difference)."""
    return model.metadata["normalization"] == halves_input.NORMALIZATION


def _per_channel(function, volume: np.ndarray) -> np.ndarray:
    """``function`` applied to a (Z, Y, X) volume, or to each channel of a (C, Z, Y, X) one."""
    return function(volume) if volume.ndim == 3 else np.stack([function(channel) for channel in volume])


def _normalise(volume: np.ndarray, options: EnhanceOptions) -> np.ndarray:
    if options.mask is not None:
        return normalization.normalize_with_mask(volume, options.mask.data)
    if options.noise_stats is not None:
        mean, std = options.noise_stats
    else:
        mean, std = normalization.noise_statistics_radial(volume)  # logs what it found
    return normalization.normalize_with_noise(volume, mean, std)


def enhance(map_or_halves: Map | Sequence[Map], model: Model | str | Path,
            options: EnhanceOptions = EnhanceOptions()) -> Map:
    """Enhance a map (or the average of two half maps) with a model; the result keeps the input's geometry.

    Intensities of the result are in the network's normalised units (noise std 0.1 at input), as
    the original writes them.
    """
    if not isinstance(model, Model):
        model = load_model(model)
    halves = None
    if isinstance(map_or_halves, Map):
        source = map_or_halves
    elif len(map_or_halves) == 2:
        halves = tuple(map_or_halves)
        source = average_halves(*halves)
    else:
        raise InputError(f"give one map or two half maps, not {len(map_or_halves)}")
    _check_options(options, model)
    if takes_halves(model) and halves is None:
        raise InputError(f"model {model.name!r} needs the two half maps (they measure the noise); give both, "
                         "or choose a single-map model")
    validate_for_enhancement(source, "input map")
    voxel_size = source.isotropic_voxel_size
    if options.mask is not None and options.mask.data.shape != source.data.shape:
        # shape only: masks from many tools drop the origin, and the array is what is used
        raise InputError(f"the mask's shape {options.mask.data.shape} differs from the map's "
                         f"{source.data.shape}; make the mask on the map's grid")

    cube = int(model.metadata["cube_size"])
    stride = options.stride or int(model.metadata["stride"])
    model_voxel = float(model.metadata["voxel_size"])
    set_cpu_threads(options.threads)
    configure_matmul_precision(options.precision)
    devices = resolve_devices(options.gpu_ids)

    # (Z, Y, X), or (C, Z, Y, X) for a half-map model
    normalised = halves_input.halves_channels(*halves) if takes_halves(model) else _normalise(source.data, options)
    mask = None if options.mask is None else options.mask.data.astype(np.float32)
    if options.legacy:
        model_shape = resampling.legacy_target_shape(normalised.shape, voxel_size, model_voxel)
        resampled = resampling.legacy_resize(normalised, model_shape)
        mask = None if mask is None else resampling.legacy_resize(mask, model_shape)
        padding = tiling.legacy_padding(resampled.shape, stride)
        padded = tiling.pad_volume(resampled, padding, "wrap")
        blending, mask_threshold = "legacy", None
    else:
        resampled = _per_channel(lambda v: resampling.to_model_grid(v, voxel_size, model_voxel), normalised)
        mask = None if mask is None else resampling.to_model_grid(mask, voxel_size, model_voxel)
        padding = tiling.covering_padding(resampled.shape[-3:], cube, stride)
        padded = _per_channel(lambda v: tiling.pad_volume(v, padding, "reflect"), resampled)
        blending, mask_threshold = options.blending or "gaussian", 0.01
    del normalised

    origins = tiling.cube_origins(padded.shape[-3:], cube, stride)
    if mask is not None:
        origins = tiling.cubes_touching(mask, origins, cube, mask_threshold)
    if not origins:
        raise InputError(f"the map ({source.data.shape} voxels at {voxel_size:g} Å) is too small for "
                         f"{cube}³ cubes in this mode" + (" (legacy padding); use the default mode" if options.legacy else ""))
    log.info("%d cubes of %d³ at stride %d on %s", len(origins), cube, stride,
             ", ".join(str(d) for d in devices))

    blender = tiling.Blender(padded.shape[-3:], cube, blending)
    predict_into(blender, padded, origins, model.network, devices, cube=cube,
                 batch_size=options.batch_size, precision=options.precision, progress=options.progress)
    del padded
    enhanced = tiling.unpad_volume(blender.result(), padding)
    if not np.all(np.isfinite(enhanced)):
        raise InputError("the network produced NaN/Inf values; rerun with --precision fp32")
    if options.cleaning_strength is not None:
        enhanced = cleaning.remove_small_blobs(enhanced, options.cleaning_strength)
    if options.legacy:
        restored = resampling.legacy_resize(enhanced, source.data.shape)
    else:
        restored = resampling.from_model_grid(enhanced, voxel_size, source.data.shape, model_voxel)
    return source.with_data(np.ascontiguousarray(restored, dtype=np.float32))
