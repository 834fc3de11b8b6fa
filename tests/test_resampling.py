"""Resampling to and from the 1 Å model grid: legacy parity and the corrected, shift-free mode."""
import numpy as np
import pytest
from scipy import ndimage
from skimage.transform import resize

from deepemhancer import resampling
from deepemhancer.errors import InputError
from deepemhancer.resampling import (
    from_model_grid,
    legacy_resize,
    legacy_target_shape,
    model_grid_shape,
    to_model_grid,
)

VOXEL_SIZES = [0.834, 1.05, 1.3, 1.742]


def _blob(shape, centre, sigma=2.5):
    idx = np.indices(shape)
    r2 = sum((g - c) ** 2 for g, c in zip(idx, centre))
    return np.exp(-r2 / (2 * sigma**2)).astype(np.float32)


def _centroid(a):
    a = a.astype(np.float64)
    return np.array([(g * a).sum() / a.sum() for g in np.indices(a.shape)])


# --- legacy -----------------------------------------------------------------------------------


def test_legacy_target_shape_uses_python_round_in_float64():
    # A header's float32 1.3 is 1.2999999523...: 100 voxels still give 130.
    assert legacy_target_shape((100, 100, 100), np.float32(1.3)) == (130, 130, 130)
    assert legacy_target_shape((240, 240, 240), 0.834) == (200, 200, 200)
    # Python round: halves go to even.
    assert legacy_target_shape((5, 3, 7), 1.5) == (8, 4, 10)
    assert legacy_target_shape((10, 10, 10), 1.2, target_voxel_size=2.0) == (6, 6, 6)
    with pytest.raises(InputError):
        legacy_target_shape((10, 10, 10), 0.0)


@pytest.mark.parametrize("new_shape", [(13, 9, 17), (24, 30, 20)])
def test_legacy_resize_is_skimage_resize_with_documented_parameters(new_shape):
    x = np.random.default_rng(0).normal(size=(18, 15, 20)).astype(np.float32)
    out = legacy_resize(x, new_shape)
    expected = resize(
        x, new_shape, order=3, mode="reflect", cval=0, clip=True, preserve_range=False,
        anti_aliasing=True, anti_aliasing_sigma=None,
    )
    assert out.dtype == np.float32 and out.shape == new_shape
    np.testing.assert_array_equal(out, expected)


def test_legacy_resize_from_first_principles():
    # Gaussian of sigma max(0, (f - 1) / 2) and cubic spline, both with whole-sample mirror edges,
    # voxel centres at (i + 0.5) * f - 0.5 (box edges aligned), clipped to the input range.
    x = np.random.default_rng(1).normal(size=(18, 15, 20)).astype(np.float32)
    new_shape = (12, 21, 9)
    factors = np.array(x.shape) / np.array(new_shape)
    smoothed = ndimage.gaussian_filter(x.astype(np.float64), np.maximum(0, (factors - 1) / 2), mode="mirror")
    coords = np.meshgrid(*[(np.arange(n) + 0.5) * f - 0.5 for n, f in zip(new_shape, factors)], indexing="ij")
    expected = np.clip(ndimage.map_coordinates(smoothed, coords, order=3, mode="mirror"), x.min(), x.max())
    np.testing.assert_allclose(legacy_resize(x, new_shape), expected, atol=2e-6)


def test_legacy_resize_keeps_values_of_integer_masks():
    mask = np.zeros((10, 10, 10), np.uint8)
    mask[3:7, 3:7, 3:7] = 1
    out = legacy_resize(mask, (13, 13, 13))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, legacy_resize(mask.astype(np.float32), (13, 13, 13)))
    assert out.max() == 1.0  # not rescaled to 1/255


def test_legacy_grid_misplaces_features_while_corrected_grid_does_not():
    # On the model grid a feature at input index c should sit at c * voxel_size (Å = model voxels).
    # The legacy grid aligns box edges and rounds the shape, so it lands elsewhere (a shift of
    # 0.5 * (voxel_size - 1) plus a scale error); the corrected grid puts it where it belongs.
    # Going back with the inverse legacy resize undoes the misplacement: legacy round trips are
    # not shifted, the network just sees a slightly shifted and rescaled map.
    shape, centre = (48, 40, 47), np.array([30.3, 10.7, 35.1])
    x = _blob(shape, centre)
    worst_legacy = 0.0
    for v in VOXEL_SIZES:
        legacy = legacy_resize(x, legacy_target_shape(shape, v))
        worst_legacy = max(worst_legacy, np.abs(_centroid(legacy) - centre * v).max())
        assert np.abs(_centroid(to_model_grid(x, v)) - centre * v).max() < 0.01
        back = legacy_resize(legacy, shape)
        assert np.abs(_centroid(back) - centre).max() < 0.01
    assert worst_legacy > 0.3


# --- corrected --------------------------------------------------------------------------------


def test_identity_at_target_voxel_size_returns_float32_copy():
    x = np.random.default_rng(2).normal(size=(6, 7, 8))
    for v in (1.0, 1.0 + 5e-7):
        y = to_model_grid(x, v)
        assert y.dtype == np.float32 and y is not x
        np.testing.assert_array_equal(y, x.astype(np.float32))
        back = from_model_grid(y, v, x.shape)
        assert back is not y
        np.testing.assert_array_equal(back, y)


def test_model_grid_shape_covers_the_box():
    assert model_grid_shape((240, 240, 240), 0.834) == (201, 201, 201)
    assert model_grid_shape((100, 48, 7), 1.05) == (105, 51, 8)
    # An extent that is a whole number of target voxels does not gain one.
    assert model_grid_shape((101, 11, 2), 0.5) == (51, 6, 2)
    for shape in [(40, 46, 52), (17, 9, 23)]:
        for v in VOXEL_SIZES:
            for n, m in zip(shape, model_grid_shape(shape, v)):
                assert (m - 1) >= (n - 1) * v - 1e-9 > (m - 2)


@pytest.mark.parametrize("v", [0.834, 1.742])
def test_corrected_resampling_matches_map_coordinates(v):
    # Reference: 3-D cubic spline (mirror edges) sampled at exact physical positions, after the
    # Gaussian anti-aliasing of sigma (s - 1) / 2 when the target grid is coarser.
    x = np.random.default_rng(3).normal(size=(11, 9, 13)).astype(np.float32)

    def reference(a, out_shape, step):
        a = a.astype(np.float64)
        sigma = max(0.0, (step - 1) / 2)
        if sigma > 0:
            a = ndimage.gaussian_filter(a, sigma, mode="mirror")
        coords = np.meshgrid(*[np.arange(n) * step for n in out_shape], indexing="ij")
        return ndimage.map_coordinates(a, coords, order=3, mode="mirror")

    y = to_model_grid(x, v)
    assert y.dtype == np.float32 and y.shape == model_grid_shape(x.shape, v)
    np.testing.assert_allclose(y, reference(x, y.shape, 1 / v), atol=1e-5)
    back = from_model_grid(y, v, x.shape)
    assert back.dtype == np.float32 and back.shape == x.shape
    np.testing.assert_allclose(back, reference(y, x.shape, v), atol=1e-5)


def test_blocked_processing_gives_the_same_result(monkeypatch):
    x = np.random.default_rng(4).normal(size=(12, 10, 14)).astype(np.float32)
    whole = to_model_grid(x, 1.3)
    monkeypatch.setattr(resampling, "_BLOCK_ELEMENTS", 50)
    np.testing.assert_array_equal(to_model_grid(x, 1.3), whole)


@pytest.mark.parametrize("v", VOXEL_SIZES)
def test_round_trip_does_not_shift_and_keeps_smooth_maps(v):
    shape, centre = (40, 46, 52), np.array([17.3, 24.6, 28.2])
    x = _blob(shape, centre, sigma=3.0)
    back = from_model_grid(to_model_grid(x, v), v, shape)
    assert np.abs(_centroid(back) - centre).max() < 0.02
    assert np.abs(back - x).max() < 0.01


def test_bad_arguments():
    x = np.zeros((8, 8, 8), np.float32)
    with pytest.raises(InputError):
        to_model_grid(x, -1.0)
    with pytest.raises(InputError):
        to_model_grid(np.zeros((8, 8)), 1.3)
    with pytest.raises(ValueError, match="shape"):
        from_model_grid(np.zeros((8, 8, 8), np.float32), 1.3, (8, 8, 8))
