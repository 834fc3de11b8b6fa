"""Tiling and blending against independent reference loops."""
import itertools

import numpy as np
import pytest

from deepemhancer import tiling
from deepemhancer.errors import InputError


def reference_legacy_blend(volume, predict, cube, stride):
    """Written from the original's description: weights start at ones, plain sums, divide."""
    total = np.zeros(volume.shape, np.float64)
    weight = np.ones(volume.shape, np.float64)
    for i in range(0, volume.shape[0] - cube + 1, stride):
        for j in range(0, volume.shape[1] - cube + 1, stride):
            for k in range(0, volume.shape[2] - cube + 1, stride):
                total[i:i + cube, j:j + cube, k:k + cube] += predict(volume[i:i + cube, j:j + cube, k:k + cube])
                weight[i:i + cube, j:j + cube, k:k + cube] += 1
    return total / weight


def blend(volume, predict, cube, stride, blending):
    blender = tiling.Blender(volume.shape, cube, blending)
    for origin in tiling.cube_origins(volume.shape, cube, stride):
        i, j, k = origin
        blender.add(origin, predict(volume[i:i + cube, j:j + cube, k:k + cube]))
    return blender.result()


def test_legacy_padding_reuses_second_axis_for_third():
    assert tiling.legacy_padding((40, 37, 50), 16) == ((0, 8), (0, 11), (0, 11))
    # n % 16 == 0 still pads a whole stride, as the original does
    assert tiling.legacy_padding((32, 32, 32), 16) == ((0, 16), (0, 16), (0, 16))


def test_legacy_padding_leaves_uncovered_strip_on_non_cubic_map():
    shape = (20, 20, 18)
    padding = tiling.legacy_padding(shape, 8)
    padded = tuple(n + p[1] for n, p in zip(shape, padding))
    covered = np.zeros(padded, bool)
    for i, j, k in tiling.cube_origins(padded, 16, 8):
        covered[i:i + 16, j:j + 16, k:k + 16] = True
    assert covered[:20, :20, :16].all() and not covered[:20, :20, 16:18].any()  # the bug: the third axis' end is never predicted


@pytest.mark.parametrize("shape", [(20, 23, 17), (8, 8, 8), (5, 30, 9), (33, 16, 16)])
@pytest.mark.parametrize("cube,stride", [(8, 4), (8, 8), (8, 3)])
def test_covering_padding_covers_every_voxel(shape, cube, stride):
    padding = tiling.covering_padding(shape, cube, stride)
    padded = tuple(n + p[1] for n, p in zip(shape, padding))
    assert all(p >= cube and (p - cube) % stride == 0 for p in padded)
    count = np.zeros(padded, np.int32)
    for i, j, k in tiling.cube_origins(padded, cube, stride):
        count[i:i + cube, j:j + cube, k:k + cube] += 1
    assert count.min() >= 1
    # not more padding than one stride beyond what covering needs
    assert all(p - n < max(stride, cube - n + 1) for p, n in zip(padded, shape))


def test_legacy_blending_equals_count_plus_one_reference():
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(24, 20, 28)).astype(np.float32)

    def predict(cube):
        return np.tanh(cube) * 2 + cube.mean()  # depends on the whole cube, like a network

    ours = blend(volume, predict, 8, 4, "legacy")
    reference = reference_legacy_blend(volume, predict, 8, 4)
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


def test_identity_prediction_interior_factor_is_count_over_count_plus_one():
    volume = np.ones((32, 32, 32), np.float32)
    legacy = blend(volume, lambda c: c, 16, 4, "legacy")
    # interior voxels are reached by (16/4)^3 = 64 cubes: 64/65 of the true value
    np.testing.assert_allclose(legacy[12:20, 12:20, 12:20], 64 / 65, rtol=1e-6)
    assert legacy[0, 0, 0] == pytest.approx(0.5)  # a corner reached once is halved


def identity(batch):
    return batch if batch.ndim == 4 else batch[:, 0]


@pytest.mark.parametrize("blending", ["count", "gaussian"])
def test_corrected_sliding_window_reproduces_identity_everywhere(blending):
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(19, 26, 21)).astype(np.float32)
    result = tiling.sliding_window(volume, tiling.batch_predictor(identity, 8, batch_size=5),
                                   tiling.Tiling(8, 4, blending=blending))
    assert result.shape == volume.shape
    np.testing.assert_allclose(result, volume, rtol=1e-5, atol=1e-5)


def test_legacy_sliding_window_equals_the_reference_on_the_wrapped_volume():
    rng = np.random.default_rng(2)
    volume = rng.normal(size=(20, 18, 18)).astype(np.float32)
    result = tiling.sliding_window(volume, tiling.batch_predictor(lambda b: 2 * b, 8), tiling.Tiling(8, 4, legacy=True))
    padding = tiling.legacy_padding(volume.shape, 4)
    padded = np.pad(volume, padding, mode="wrap")
    reference = reference_legacy_blend(padded, lambda c: 2 * c, 8, 4)[:20, :18, :18]
    np.testing.assert_allclose(result, reference, rtol=1e-5, atol=1e-6)


def test_sliding_window_takes_channels_and_skips_cubes_outside_the_mask():
    rng = np.random.default_rng(3)
    volume = rng.normal(size=(2, 16, 24, 16)).astype(np.float32)
    mask = np.zeros((16, 24, 16), np.float32)
    mask[2:5, 2:5, 2:5] = 1.0
    seen = []

    def first_channel(batch):
        seen.append(batch.shape)
        return batch[:, 0] + batch[:, 1]

    result = tiling.sliding_window(volume, tiling.batch_predictor(first_channel, 8), tiling.Tiling(8, 8, blending="count"),
                                   mask)
    assert sum(shape[0] for shape in seen) == 1 and seen[0][1:] == (2, 8, 8, 8)  # one cube of two channels
    np.testing.assert_allclose(result[:8, :8, :8], volume[0, :8, :8, :8] + volume[1, :8, :8, :8], rtol=1e-6)
    assert not result[8:].any() and not result[:, 8:].any()  # no cube reached: 0


def test_sliding_window_refuses_a_volume_without_cubes():
    with pytest.raises(InputError, match="holds no 8³ cube"):
        tiling.sliding_window(np.ones((3, 3, 3), np.float32), tiling.batch_predictor(identity, 8),
                              tiling.Tiling(8, 4, legacy=True))
    with pytest.raises(InputError, match="stride must be between 1 and the cube size 8"):
        tiling.Tiling(8, 9)


def test_true_count_blending_is_the_mean_of_predictions():
    volume = np.zeros((12, 12, 12), np.float32)
    calls = itertools.count()
    blender = tiling.Blender(volume.shape, 8, "count")
    expected_sum = np.zeros(volume.shape)
    expected_n = np.zeros(volume.shape)
    for origin in tiling.cube_origins(volume.shape, 8, 4):
        value = float(next(calls))
        i, j, k = origin
        blender.add(origin, np.full((8, 8, 8), value, np.float32))
        expected_sum[i:i + 8, j:j + 8, k:k + 8] += value
        expected_n[i:i + 8, j:j + 8, k:k + 8] += 1
    np.testing.assert_allclose(blender.result(), expected_sum / expected_n, rtol=1e-6)


def test_unreached_voxels_are_zero_and_mask_skips_cubes():
    mask = np.zeros((16, 16, 16), np.float32)
    mask[1, 1, 1] = 1
    origins = tiling.cube_origins(mask.shape, 8, 8)
    kept = tiling.cubes_touching(mask, origins, 8)
    assert kept == [(0, 0, 0)]
    blender = tiling.Blender(mask.shape, 8, "count")
    blender.add(kept[0], np.full((8, 8, 8), 3.0, np.float32))
    result = blender.result()
    assert result[:8, :8, :8].min() == 3.0 and result[8:].max() == 0.0


def test_pad_unpad_round_trip_and_wrap_content():
    volume = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    padding = ((0, 3), (0, 2), (0, 4))
    padded = tiling.pad_volume(volume, padding, "wrap")
    assert padded.shape == (8, 8, 11)
    np.testing.assert_array_equal(padded[5:, :6, :7], volume[:3])  # wrap: the start repeats at the end
    np.testing.assert_array_equal(tiling.unpad_volume(padded, padding), volume)


def test_gaussian_window_positive_and_peaked():
    window = tiling.gaussian_window(16)
    assert window.min() > 0 and window.max() == pytest.approx(1.0)
    assert window[8, 8, 8] > window[4, 8, 8] > window[2, 8, 8] >= window[0, 0, 0]


@pytest.mark.parametrize("blending", ["legacy", "count", "gaussian"])
def test_weights_summed_by_slab_equal_a_full_weight_volume_to_the_bit(blending):
    """The blender keeps no full weight volume (memory); summing the weights slab by slab, in the
    cubes' order, must give exactly what accumulating them in a full float32 volume gives."""
    rng = np.random.default_rng(4)
    shape, cube = (29, 23, 21), 8
    origins = [tuple(int(v) for v in o) for o in rng.integers(0, [22, 16, 14], size=(60, 3))]  # overlapping, any order
    predictions = rng.standard_normal((len(origins), cube, cube, cube)).astype(np.float32)
    window = tiling.gaussian_window(cube) if blending == "gaussian" else np.ones((cube,) * 3, np.float32)
    total = np.zeros(shape, np.float32)
    weight = (np.ones if blending == "legacy" else np.zeros)(shape, np.float32)
    blender = tiling.Blender(shape, cube, blending, slab=5)  # slabs that cut through cubes
    for (i, j, k), prediction in zip(origins, predictions):
        region = (slice(i, i + cube), slice(j, j + cube), slice(k, k + cube))
        total[region] += prediction if blending != "gaussian" else prediction * window
        weight[region] += 1.0 if blending != "gaussian" else window
        blender.add((i, j, k), prediction)
    expected = np.divide(total, weight, out=np.zeros_like(total), where=weight > 0)
    result = blender.result()
    assert np.array_equal(result, expected)
    assert (blending == "legacy") or np.any(weight == 0)  # some voxels no cube reached: they stay 0
