"""Input normalisation: noise formula, automatic radial noise estimate, masked variant."""
import logging

import mrcfile
import numpy as np
import pytest

from deepemhancer.errors import InputError, NormalizationError
from deepemhancer.normalization import (
    binarize_mask,
    centre_distances,
    noise_statistics_radial,
    normalize_with_mask,
    normalize_with_noise,
    radial_profile,
    sphere_mask,
)


def _grid_distances(shape):
    """Reference: distance of every voxel from (n // 2, ...) through an index grid."""
    idx = np.indices(shape)
    centre = np.array([n // 2 for n in shape]).reshape(3, 1, 1, 1)
    return np.sqrt(((idx - centre) ** 2).sum(axis=0))


def _noisy_blob(n, noise_mean, noise_std, seed=0):
    """Gaussian noise everywhere plus a dense ball (radius 0.18 n) in the centre."""
    rng = np.random.default_rng(seed)
    x = rng.normal(noise_mean, noise_std, (n, n, n)).astype(np.float32)
    x[_grid_distances(x.shape) < 0.18 * n] += 1.0
    return x


# --- geometry helpers -------------------------------------------------------------------------


def test_centre_distances_and_sphere_mask_match_index_grid():
    shape = (7, 10, 9)
    ref = _grid_distances(shape)
    np.testing.assert_array_equal(centre_distances(shape), ref)
    np.testing.assert_array_equal(sphere_mask(shape, 3.2), ref < 3.2)
    np.testing.assert_array_equal(sphere_mask(shape, 3.0, inside=False), ref > 3.0)


def test_radial_profile_is_mean_per_integer_shell():
    x = np.random.default_rng(1).random((9, 8, 11))
    r = _grid_distances(x.shape).astype(int)
    expected = [x[r == k].mean() for k in range(r.max() + 1)]
    np.testing.assert_allclose(radial_profile(x), expected, rtol=1e-12)


# --- manual noise statistics ------------------------------------------------------------------


def test_normalize_with_noise_formula():
    x = np.random.default_rng(2).normal(3.0, 2.0, (6, 7, 8)).astype(np.float32)
    out = normalize_with_noise(x, 0.5, 0.25)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, (x.astype(np.float64) - 0.5) / 2.5, rtol=1e-6, atol=1e-6)


def test_normalize_with_noise_accepts_negative_mean():
    x = np.full((4, 4, 4), -0.2, dtype=np.float32)
    np.testing.assert_allclose(normalize_with_noise(x, -0.2, 0.1), 0.0, atol=1e-7)
    np.testing.assert_allclose(normalize_with_noise(x, -0.4, 0.1), 0.2, rtol=1e-6)


@pytest.mark.parametrize("std", [0.0, -0.1, float("nan")])
def test_normalize_with_noise_rejects_bad_std(std):
    with pytest.raises(InputError, match="noise"):
        normalize_with_noise(np.zeros((4, 4, 4), np.float32), 0.0, std)


# --- automatic noise statistics ---------------------------------------------------------------


@pytest.mark.parametrize("noise_mean", [0.02, -0.05])
def test_radial_estimate_recovers_noise_everywhere(noise_mean, caplog):
    x = _noisy_blob(64, noise_mean, 0.05)
    with caplog.at_level(logging.INFO, logger="deepemhancer"):
        mean, std = noise_statistics_radial(x)
    assert any("noise statistics" in rec.getMessage() for rec in caplog.records)
    assert isinstance(mean, float) and isinstance(std, float)
    assert mean == pytest.approx(noise_mean, abs=0.03 * 0.05)
    assert std == pytest.approx(0.05, rel=0.03)


def test_radial_estimate_hollow_shell_raises_with_advice():
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 0.05, (64, 64, 64)).astype(np.float32)
    r = _grid_distances(x.shape)
    x[(r > 0.22 * 64) & (r < 0.3 * 64)] += 1.0
    with pytest.raises(NormalizationError) as err:
        noise_statistics_radial(x)
    message = str(err.value)
    assert "hollow" in message and "give the noise statistics" in message and "binary mask" in message
    assert "\n" not in message and " -" not in message  # in no front end's words (Scipion shows it too)
    assert err.value.setting == "normalisation"  # the command line adds its --noiseStats and -m


def test_radial_estimate_refuses_a_map_that_is_noise_everywhere():
    x = np.random.default_rng(2).normal(0.0, 1.0, (100, 100, 100)).astype(np.float32)
    with pytest.raises(NormalizationError, match="solvent voxels found .*give the noise statistics"):
        noise_statistics_radial(x)


def test_radial_estimate_empty_map_raises_with_advice():
    with pytest.raises(NormalizationError, match="give the noise statistics"):
        noise_statistics_radial(np.zeros((32, 32, 32), np.float32))


def test_radial_estimate_on_real_map_matches_original(shared_data):
    # Reference numbers from a line-by-line transcription of the original's
    # _guessNoiseStats_radialProfile run on the same file (numpy 1.26, scipy 1.10, skimage 0.24).
    x = mrcfile.read(shared_data / "maps" / "emd3488" / "emd_3488.mrc").astype(np.float32)
    mean, std = noise_statistics_radial(x)
    assert mean == pytest.approx(-0.0011487206, rel=1e-5)
    assert std == pytest.approx(0.010855014, rel=1e-5)


# --- masked normalisation ---------------------------------------------------------------------


def _reference_masked(x, mask):
    """inputNormalizationWithMask_2 from its description: 3^3 max filter (edge-duplicating),
    binarise at min + 1 % of the range, median and 10-95 percentile range of the positive voxels
    inside, zero outside."""
    padded = np.pad(mask, 1, mode="symmetric")
    n0, n1, n2 = mask.shape
    dilated = np.max(
        [padded[i : i + n0, j : j + n1, k : k + n2] for i in range(3) for j in range(3) for k in range(3)], axis=0
    )
    lo, hi = float(dilated.min()), float(dilated.max())
    binary = (dilated >= np.float32(lo + 0.01 * (hi - lo))).astype(np.float64)
    inside = x[(binary > 0) & (x > 0)].astype(np.float64)
    p10, p95 = np.percentile(inside, [10, 95])
    return (x - np.median(inside)) / (p95 - p10) * binary


def test_normalize_with_mask_matches_reference():
    rng = np.random.default_rng(4)
    x = rng.normal(0.1, 1.0, (20, 22, 18)).astype(np.float32)
    mask = np.zeros(x.shape, np.float32)
    mask[5:14, 6:15, 4:12] = rng.random((9, 9, 8)).astype(np.float32)
    out = normalize_with_mask(x, mask)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _reference_masked(x, mask), rtol=2e-5, atol=2e-6)
    assert np.all(out[0] == 0) and np.all(out[:, :, -1] == 0)


def test_binarize_mask_dilates_by_one_voxel_and_keeps_constant_masks_whole():
    mask = np.zeros((9, 9, 9), np.float32)
    mask[4, 4, 4] = 1
    binary = binarize_mask(mask)
    assert binary.dtype == np.float32
    assert binary.sum() == 27 and np.all(binary[3:6, 3:6, 3:6] == 1)
    np.testing.assert_array_equal(binarize_mask(np.ones((4, 4, 4))), 1)


def test_normalize_with_mask_errors():
    x = np.ones((8, 8, 8), np.float32)
    with pytest.raises(InputError, match="shape"):
        normalize_with_mask(x, np.ones((8, 8, 7), np.float32))
    with pytest.raises(NormalizationError, match="empty"):
        normalize_with_mask(x, np.zeros((8, 8, 8), np.float32))
    mask = np.zeros((8, 8, 8), np.float32)
    mask[2:5, 2:5, 2:5] = 1
    with pytest.raises(NormalizationError, match="positive density"):
        normalize_with_mask(-x, mask)
