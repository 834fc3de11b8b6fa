"""Legacy mode equals the original program on the same weights.

The reference below is an independent re-statement of the original's processVol pipeline (spec
§3 steps 3-9): its normalisations, scikit-image resize round trip, end-only wrap padding with the
third-axis bug, i/j/k cube order, float64 accumulators whose weights start at one, unpadding by
negative slices, optional small-blob removal. Its network is the numpy walk of the Keras graph
(tests/numpy_reference.py) on the weights of a tiny official-layout .hd5, never our torch module.
Our side imports that .hd5 and runs deepemhancer.pipeline.enhance in legacy mode.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from scipy.stats import iqr
from skimage.filters import threshold_otsu
from skimage.measure import label
from skimage.transform import resize

from deepemhancer.mapio import Geometry, Map, read_map, write_map
from deepemhancer.models.keras_import import import_hd5
from deepemhancer.pipeline import EnhanceOptions, enhance
from numpy_reference import keras_forward_numpy
from official_hd5 import write_official_hd5

CUBE = 16
STRIDE = 4  # what write_official_hd5 stores as NNET_INPUT_STRIDE for 16^3 cubes


# --- the original's pipeline, restated ---------------------------------------------------------


def ref_resize(x: np.ndarray, shape) -> np.ndarray:
    """The original's resizeVol: one scikit-image call with its exact arguments."""
    return resize(x, tuple(shape), order=3, mode="reflect", cval=0, clip=True, preserve_range=False,
                  anti_aliasing=True, anti_aliasing_sigma=None)


def ref_noise_normalisation(x: np.ndarray, mean: float, std: float) -> np.ndarray:
    """inputNormalization_3 with given statistics: noise to mean 0, std 0.1."""
    return (x - mean) / (std * 10)


def ref_masked_normalisation(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """inputNormalizationWithMask_2: 3^3 grey dilation, binarise at min + 1 % of the range, median and
    10-95 percentile range of the positive voxels inside, zero outside."""
    dilated = ndimage.grey_dilation(mask, size=3)
    low, high = dilated.min(), dilated.max()
    binary = dilated.copy()
    below = binary < low + 0.01 * (high - low)
    binary[below] = 0
    binary[~below] = 1
    inside = x[(binary > 0) & (x > 0)]
    out = (x - np.median(inside)) / iqr(inside, rng=(10, 95))
    out *= binary
    return out


def ref_remove_small_components(img: np.ndarray, strength: float) -> np.ndarray:
    """removeSmallCCs: background outside the inscribed sphere, threshold halfway between the inner
    third's mean and Otsu's level, grey closing, full-connectivity labels, small ones to the minimum."""
    idx = np.indices(img.shape)
    radius = np.sqrt(sum((g - n // 2) ** 2 for g, n in zip(idx, img.shape)))
    half = min(img.shape) // 2
    background = np.mean(img[radius > half])
    threshold = 0.5 * (np.mean(img[radius < int(half * 0.33)]) + threshold_otsu(img))
    assert background < threshold, "the original aborts here; choose another test input"
    closed = ndimage.grey_erosion(ndimage.grey_dilation(img, size=(3, 3, 3)), size=(3, 3, 3))
    closed[closed < threshold] = 0  # two in-place steps, in the original's order
    closed[closed >= threshold] = 1
    labels = label(closed.astype(bool), background=background)
    sizes = np.bincount(labels.ravel())
    out = np.ones_like(img) * img.min()
    for component in range(1, len(sizes)):
        if sizes[component] > strength * np.sum(labels > 0):
            out[labels == component] = img[labels == component]
    return out


def ref_legacy(normalised: np.ndarray, voxel_size: float, hd5: dict, mask: np.ndarray | None = None,
               cleaning: float | None = None) -> tuple[np.ndarray, dict]:
    """Steps 4-9 of the original on a normalised map; returns the result and what happened."""
    original_shape = normalised.shape
    new_shape = [round(n * (voxel_size / 1.0)) for n in original_shape]
    vol = ref_resize(normalised, new_shape)
    if mask is not None:
        mask = ref_resize(mask, new_shape)
    # End-only wrap padding; the third axis takes the second axis' amount.
    pads = [(0, STRIDE - vol.shape[0] % STRIDE), (0, STRIDE - vol.shape[1] % STRIDE),
            (0, STRIDE - vol.shape[1] % STRIDE)]
    vol = np.pad(vol, pads, mode="wrap")
    origins, skipped = [], 0
    for i in range(0, vol.shape[0] - CUBE + 1, STRIDE):
        for j in range(0, vol.shape[1] - CUBE + 1, STRIDE):
            for k in range(0, vol.shape[2] - CUBE + 1, STRIDE):
                if mask is not None and np.count_nonzero(mask[i:i + CUBE, j:j + CUBE, k:k + CUBE]) == 0:
                    skipped += 1
                    continue
                origins.append((i, j, k))
    cubes = np.stack([vol[i:i + CUBE, j:j + CUBE, k:k + CUBE] for i, j, k in origins])
    predictions = keras_forward_numpy(hd5["model_config"], hd5["weights"], cubes[..., None])[..., 0]
    total = np.zeros(vol.shape)
    weights = np.ones(vol.shape)
    for (i, j, k), prediction in zip(origins, predictions):
        total[i:i + CUBE, j:j + CUBE, k:k + CUBE] += prediction
        weights[i:i + CUBE, j:j + CUBE, k:k + CUBE] += 1.0
    result = total / weights
    result = result[:-pads[0][1], :-pads[1][1], :-pads[2][1]]
    if cleaning is not None:
        result = ref_remove_small_components(result, cleaning)
    return ref_resize(result, original_shape), {"cubes": len(origins), "skipped": skipped,
                                                "covered": weights > 1}


# --- test inputs --------------------------------------------------------------------------------


def blobs(shape, seed: int, noise: float = 0.05, offset: float = 0.0, centred: bool = False) -> np.ndarray:
    """Smooth Gaussian blobs plus white noise, float32."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape).astype(np.float64)
    x = np.zeros(shape)
    for _ in range(6):
        spread = 0.15 if centred else 0.35
        centre = [n / 2 + rng.uniform(-spread, spread) * n for n in shape]
        width = rng.uniform(1.5, 3.0)
        x += rng.uniform(0.5, 1.0) * np.exp(-sum((g - c) ** 2 for g, c in zip(idx, centre)) / (2 * width**2))
    x += rng.normal(offset, noise, shape)
    return x.astype(np.float32)


def on_disk(tmp_path: Path, data: np.ndarray, voxel_size: float, name: str) -> Map:
    """A map as the original reads it: through a file, so the voxel size is the header's float32."""
    path = write_map(Map(data, Geometry.for_grid(data.shape, voxel_size)), tmp_path / f"{name}.mrc")
    return read_map(path)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny official-layout .hd5, as written and as imported (the JSON our side loads)."""
    folder = tmp_path_factory.mktemp("legacy_model")
    written = write_official_hd5(folder / "deepEMhancer_tiny.hd5", seed=11)
    return written, import_hd5(written["path"], folder / "imported")


@pytest.fixture(scope="module")
def masked_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("legacy_masked_model")
    written = write_official_hd5(folder / "deepEMhancer_masked.hd5", seed=12,
                                 norm_function="inputNormalizationWithMask_2")
    return written, import_hd5(written["path"], folder / "imported")


def assert_same(ours: np.ndarray, reference: np.ndarray) -> None:
    assert ours.shape == reference.shape
    spread = float(reference.max() - reference.min())
    assert spread > 0
    assert np.max(np.abs(ours.astype(np.float64) - reference)) <= 1e-4 * spread
    assert np.corrcoef(ours.ravel(), reference.ravel())[0, 1] >= 0.9999


def legacy_options(**kwargs) -> EnhanceOptions:
    return EnhanceOptions(legacy=True, gpu_ids="-1", progress=False, **kwargs)


# --- parity ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape,voxel_size,stats", [
    ((17, 20, 16), 1.3, (0.02, 0.05)),   # 22 x 26 x 21 at 1 Å: downsampled, non-cubic
    ((24, 22, 26), 0.9, (-0.3, 0.07)),   # 22 x 20 x 23 at 1 Å: upsampled, negative noise mean
])
def test_noise_statistics_mode_matches_the_original(tmp_path, model, shape, voxel_size, stats):
    written, json_path = model
    source = on_disk(tmp_path, blobs(shape, seed=1, offset=stats[0] + 0.03), voxel_size, "map")
    apix = source.geometry.voxel_size[0]
    assert apix == float(np.float32(voxel_size))  # the header's float32 value, as the original reads it
    reference, info = ref_legacy(ref_noise_normalisation(source.data, *stats), apix, written)
    ours = enhance(source, json_path, legacy_options(noise_stats=stats))
    assert info["cubes"] >= 20
    assert_same(ours.data, reference)
    assert ours.geometry == source.geometry


def test_masked_mode_matches_the_original(tmp_path, masked_model):
    """The mask is resized with the map and decides which cubes run. Cubic resizing leaves tiny
    non-zero residues far from the mask, so at this size no window is empty and no cube is skipped,
    in the original as in ours (a version-dependent detail, spec §3)."""
    written, json_path = masked_model
    shape = (22, 19, 20)
    source = on_disk(tmp_path, blobs(shape, seed=2, centred=True), 1.2, "map")
    idx = np.indices(shape)
    ball = sum(((g - c) / r) ** 2 for g, c, r in zip(idx, (11, 9, 10), (5, 4, 5))) < 1
    mask = on_disk(tmp_path, ball.astype(np.float32), 1.2, "mask")
    apix = source.geometry.voxel_size[0]
    reference, info = ref_legacy(ref_masked_normalisation(source.data, mask.data), apix, written, mask=mask.data)
    ours = enhance(source, json_path, legacy_options(), mask=mask)
    assert info["cubes"] > 0
    assert_same(ours.data, reference)


def test_masked_mode_with_a_negative_background_mask_matches_the_original(tmp_path, masked_model):
    """The original skips a cube only when its resized-mask window has no non-zero voxel
    (np.count_nonzero), so windows whose mask values are negative still run. A mask of 1 in a ball
    near one corner and -0.1 elsewhere leaves windows far from the ball all negative."""
    written, json_path = masked_model
    shape = (22, 19, 20)
    source = on_disk(tmp_path, blobs(shape, seed=5), 1.2, "map")
    idx = np.indices(shape)
    ball = sum((g - 4.0) ** 2 for g in idx) < 9
    mask = on_disk(tmp_path, np.where(ball, 1.0, -0.1).astype(np.float32), 1.2, "mask")
    apix = source.geometry.voxel_size[0]
    reference, info = ref_legacy(ref_masked_normalisation(source.data, mask.data), apix, written, mask=mask.data)
    resized_mask = ref_resize(mask.data, [round(n * apix) for n in shape])
    # Windows from 12 on along the first axis hold only negative mask values: the original runs them.
    assert info["skipped"] == 0 and np.all(resized_mask[12:] < 0)
    ours = enhance(source, json_path, legacy_options(), mask=mask)
    assert_same(ours.data, reference)


def test_cleaning_matches_the_original(tmp_path, model):
    written, json_path = model
    source = on_disk(tmp_path, blobs((19, 21, 18), seed=3, centred=True), 1.1, "map")
    stats = (0.0, 0.05)
    apix = source.geometry.voxel_size[0]
    normalised = ref_noise_normalisation(source.data, *stats)
    reference, _ = ref_legacy(normalised, apix, written, cleaning=0.2)
    uncleaned, _ = ref_legacy(normalised, apix, written)
    ours = enhance(source, json_path, legacy_options(noise_stats=stats, cleaning_strength=0.2))
    assert np.mean(np.abs(reference - uncleaned)) > 1e-3 * np.ptp(uncleaned)  # cleaning changed the map
    assert_same(ours.data, reference)


# --- what the default mode corrects --------------------------------------------------------------


def test_default_mode_covers_the_strip_legacy_leaves_and_blends_by_the_true_count(tmp_path, model):
    """20 x 22 x 17 at 1 Å: legacy pads the third axis by 2 (the second axis' amount) to 19, so its
    only cube along that axis covers indices 0-15 and index 16 stays 0; the corner voxels that one
    cube alone covers come out halved (sum / (1 + count))."""
    _, json_path = model
    source = on_disk(tmp_path, blobs((20, 22, 17), seed=4), 1.0, "map")
    stats = (0.0, 0.05)
    legacy = enhance(source, json_path, legacy_options(noise_stats=stats)).data
    default = enhance(source, json_path, EnhanceOptions(noise_stats=stats, gpu_ids="-1", progress=False)).data
    assert np.max(np.abs(legacy[:, :, 16])) < 1e-5 * np.ptp(legacy)
    assert np.min(np.abs(default[:, :, 16])) > 0 and np.std(default[:, :, 16]) > 0.05 * np.std(default)
    corner = (slice(0, 4), slice(0, 4), slice(0, 4))  # only cube (0, 0, 0) reaches it in both modes
    np.testing.assert_allclose(2 * legacy[corner], default[corner], rtol=1e-4, atol=1e-5 * np.ptp(default))
