"""Cutting a volume into overlapping cubes and blending the predictions back.

``sliding_window`` is the one entry point (enhance, the benchmarks and the tests call it); a
``Tiling`` says, once, which of two recipes it follows:
- legacy: the original's end-only wrap padding (with its third-axis bug), cube origins
  ``range(0, n - cube + 1, stride)`` and blending by ``sum / (1 + count)``;
- corrected: every axis padded just enough to be covered, blending by the true count or by a
  smooth (Gaussian) window.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from typing import Callable, Literal, Sequence

import numpy as np

from .errors import InputError
from .metrics import check_mask

log = logging.getLogger("deepemhancer")

Padding = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
Blending = Literal["legacy", "count", "gaussian"]
Origin = tuple[int, int, int]
# predict_cubes(volume, origins, add): predict the cubes of ``volume`` at ``origins`` (any order,
# any batching, any device) and hand each prediction, a (cube, cube, cube) array, to add(origin, prediction).
CubePredictor = Callable[[np.ndarray, Sequence[Origin], Callable[[Origin, np.ndarray], None]], None]
CORRECTED_MASK_THRESHOLD = 0.01  # a soft mask's edge below this does not call for a cube


@dataclass(frozen=True)
class Tiling:
    """How a volume is cut into ``cube``-sided cubes ``stride`` apart and put back together: the
    original's recipe (``legacy``) or the corrected one with ``blending`` ('gaussian' or 'count')."""

    cube: int
    stride: int
    legacy: bool = False
    blending: Literal["count", "gaussian"] = "gaussian"

    def __post_init__(self) -> None:
        if not 1 <= self.stride <= self.cube:
            raise InputError(f"the stride must be between 1 and the cube size {self.cube}, not {self.stride}")
        if self.blending not in ("count", "gaussian"):
            raise InputError(f"blending {self.blending!r} is unknown; choose 'gaussian' or 'count'")

    def padding(self, shape: Sequence[int]) -> Padding:
        return legacy_padding(shape, self.stride) if self.legacy else covering_padding(shape, self.cube, self.stride)

    @property
    def pad_mode(self) -> Literal["wrap", "reflect"]:
        return "wrap" if self.legacy else "reflect"

    @property
    def blend(self) -> Blending:
        return "legacy" if self.legacy else self.blending

    @property
    def mask_threshold(self) -> float | None:
        """The mask value a cube must hold to be predicted (None: any non-zero, the original's rule)."""
        return None if self.legacy else CORRECTED_MASK_THRESHOLD


def sliding_window(volume: np.ndarray, predict_cubes: CubePredictor, tiling: Tiling,
                   mask: np.ndarray | None = None) -> np.ndarray:
    """``volume`` ((Z, Y, X), or (C, Z, Y, X) for C input channels) predicted cube by cube and blended
    back into one (Z, Y, X) volume: padded, cut, predicted by ``predict_cubes`` (see CubePredictor;
    ``predict.network_predictor`` runs a network, ``batch_predictor`` wraps any function of a batch
    of cubes), blended and unpadded, as ``tiling`` says.

    mask: (Z, Y, X) on ``volume``'s grid; only the cubes it touches are predicted, and voxels that
    no cube reaches come out 0.
    """
    shape = volume.shape[-3:]
    padding = tiling.padding(shape)
    padded = (pad_volume(volume, padding, tiling.pad_mode) if volume.ndim == 3
              else np.stack([pad_volume(channel, padding, tiling.pad_mode) for channel in volume]))
    origins = cube_origins(padded.shape[-3:], tiling.cube, tiling.stride)
    if mask is not None:
        check_mask(mask, shape, "the volume's", values="any")
        origins = cubes_touching(mask, origins, tiling.cube, tiling.mask_threshold)
    if not origins:
        raise InputError(f"a {'x'.join(map(str, shape))} volume holds no {tiling.cube}³ cube"
                         + (" with the original's padding; the default mode pads it to fit" if tiling.legacy
                            else " inside its mask"))
    log.info("%d cubes of %d³ at stride %d", len(origins), tiling.cube, tiling.stride)
    blender = Blender(padded.shape[-3:], tiling.cube, tiling.blend)
    predict_cubes(padded, origins, blender.add)
    del padded
    return unpad_volume(blender.result(), padding)


def cut_cubes(volume: np.ndarray, origins: Sequence[Origin], cube: int) -> np.ndarray:
    """The cubes of ``volume`` ((Z, Y, X) or (C, Z, Y, X)) at ``origins``, stacked on a new first axis."""
    return np.stack([volume[..., i:i + cube, j:j + cube, k:k + cube] for i, j, k in origins]).astype(
        np.float32, copy=False)


def batch_predictor(predict_batch: Callable[[np.ndarray], np.ndarray], cube: int, batch_size: int = 8) -> CubePredictor:
    """A CubePredictor from a function of a batch of cubes ((B, cube³) or (B, C, cube³) → (B, cube³))."""
    def predict_cubes(volume: np.ndarray, origins: Sequence[Origin], add: Callable[[Origin, np.ndarray], None]) -> None:
        for start in range(0, len(origins), batch_size):
            group = origins[start:start + batch_size]
            for origin, prediction in zip(group, predict_batch(cut_cubes(volume, group, cube))):
                add(origin, prediction)
    return predict_cubes


def legacy_padding(shape: Sequence[int], stride: int) -> Padding:
    """The original's padding: ``stride - n % stride`` (1..stride) after each axis.

    Its third axis reuses the second axis' length (a bug kept for parity), so a non-cubic map can
    end up with a strip that no cube covers.
    """
    n0, n1, _ = shape
    return ((0, stride - n0 % stride), (0, stride - n1 % stride), (0, stride - n1 % stride))


def covering_padding(shape: Sequence[int], cube: int, stride: int) -> Padding:
    """Padding after each axis so that cubes at ``0, stride, ...`` cover every voxel exactly."""
    pads = []
    for n in shape:
        length = max(cube, n)
        extra = (length - cube) % stride
        if extra:
            length += stride - extra
        pads.append((0, length - n))
    return tuple(pads)  # type: ignore[return-value]


def pad_volume(volume: np.ndarray, padding: Padding, mode: Literal["wrap", "reflect"]) -> np.ndarray:
    """Pad with ``np.pad``; 'reflect' falls back to 'symmetric' when a pad exceeds the axis."""
    if all(after == 0 and before == 0 for before, after in padding):
        return volume
    if mode == "reflect" and any(max(p) >= n for p, n in zip(padding, volume.shape)):
        mode = "symmetric"  # type: ignore[assignment]
    return np.pad(volume, padding, mode=mode)


def unpad_volume(volume: np.ndarray, padding: Padding) -> np.ndarray:
    """Remove what ``pad_volume`` added."""
    return volume[tuple(slice(before, volume.shape[axis] - after) for axis, (before, after) in enumerate(padding))]


def cube_origins(shape: Sequence[int], cube: int, stride: int) -> list[tuple[int, int, int]]:
    """Lower corners of the cubes, in the original's order: ``range(0, n - cube + 1, stride)`` per axis."""
    ranges = [range(0, n - cube + 1, stride) for n in shape]
    return [tuple(int(v) for v in origin) for origin in itertools.product(*ranges)]  # type: ignore[misc]


def cubes_touching(mask: np.ndarray, origins: Sequence[tuple[int, int, int]], cube: int,
                   threshold: float | None = None) -> list[tuple[int, int, int]]:
    """Origins whose cube holds a mask voxel: non-zero (the original's rule, ``threshold=None``) or
    above ``threshold``. Windows may run past the mask's end, as in the original."""
    kept = []
    for i, j, k in origins:
        window = mask[i:i + cube, j:j + cube, k:k + cube]
        if np.any(window != 0) if threshold is None else np.any(window > threshold):
            kept.append((i, j, k))
    return kept


def gaussian_window(cube: int, sigma_fraction: float = 0.125, floor: float = 1e-3) -> np.ndarray:
    """Separable Gaussian weight over a cube (sigma = fraction of the side), floored to stay positive.

    The floor keeps border voxels, which only cube edges reach, defined after normalisation.
    """
    centre = (cube - 1) / 2.0
    axis = np.exp(-0.5 * ((np.arange(cube) - centre) / (sigma_fraction * cube)) ** 2)
    window = axis[:, None, None] * axis[None, :, None] * axis[None, None, :]
    return np.maximum(window / window.max(), floor).astype(np.float32)


class Blender:
    """Accumulates weighted cube predictions over a volume and returns their weighted mean.

    ``blending='legacy'`` starts the weights at one, as the original does, so every voxel is
    divided by ``1 + count``. Voxels that no cube reached come out as 0.

    Only the weighted sum is held at full size: the weights are summed afterwards, a slab of
    sections at a time, in the order the cubes came, so the result is the same to the bit as with
    a full weight volume and memory is one volume instead of two.
    """

    def __init__(self, shape: Sequence[int], cube: int, blending: Blending = "count", slab: int = 32):
        self.cube = cube
        self.blending = blending
        self.slab = slab
        self.total = np.zeros(tuple(shape), dtype=np.float32)
        self.origins: list[tuple[int, int, int]] = []
        self.window = gaussian_window(cube) if blending == "gaussian" else None

    def add(self, origin: tuple[int, int, int], prediction: np.ndarray) -> None:
        i, j, k = origin
        region = (slice(i, i + self.cube), slice(j, j + self.cube), slice(k, k + self.cube))
        self.total[region] += prediction if self.window is None else prediction * self.window
        self.origins.append(origin)

    def result(self) -> np.ndarray:
        """The blended volume; consumes the accumulator (divides it in place)."""
        for start in range(0, self.total.shape[0], self.slab):
            part = self.total[start:start + self.slab]
            weight = self._weights(start, part.shape)
            reached = weight > 0
            np.divide(part, weight, out=part, where=reached)
            part[~reached] = 0.0
        return self.total

    def _weights(self, start: int, shape: tuple[int, ...]) -> np.ndarray:
        """The summed weights of sections ``start`` to ``start + shape[0]``."""
        weight = np.ones(shape, np.float32) if self.blending == "legacy" else np.zeros(shape, np.float32)
        end = start + shape[0]
        for i, j, k in self.origins:
            if i < end and i + self.cube > start:
                low, high = max(i, start), min(i + self.cube, end)
                region = (slice(low - start, high - start), slice(j, j + self.cube), slice(k, k + self.cube))
                weight[region] += 1.0 if self.window is None else self.window[low - i:high - i]
        return weight
