"""FSC, resolution, the half-map FSC recipe, the mask check, soft masks and phase-randomised masked FSC
on small synthetic maps.

Parity is checked against a plain reference written here: numpy's full complex fftn and an explicit
loop over shells.
"""
import numpy as np
import pytest

from deepemhancer.errors import InputError, NormalizationError
from deepemhancer.metrics import (FSCCurve, check_mask, fsc, fsc_masked_corrected, half_map_fsc, radial_frequency_grid,
                                  randomisation_start, randomise_phases, resolution_at, shared_power, soft_mask)


def _noise(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _full_frequency(shape, voxel):
    """|s| of every coefficient of the full fftn, built from the definition s_i = m_i / (n_i * voxel)."""
    axes = [np.fft.fftfreq(n, voxel) for n in shape]
    grids = np.meshgrid(*axes, indexing="ij")
    return np.sqrt(sum(g ** 2 for g in grids))


def _reference_fsc(a, b, voxel):
    """FSC over the full complex transform, one shell at a time (shell k: |s| * L rounds to k, L = longest edge)."""
    fa, fb = np.fft.fftn(a.astype(np.float64)), np.fft.fftn(b.astype(np.float64))
    longest = max(a.shape)
    shell = np.rint(_full_frequency(a.shape, voxel) * longest * voxel).astype(int)
    values, counts = [], []
    for k in range(1, longest // 2 + 1):
        sel = shell == k
        num = np.sum(fa[sel] * np.conj(fb[sel])).real
        den = np.sqrt(np.sum(np.abs(fa[sel]) ** 2) * np.sum(np.abs(fb[sel]) ** 2))
        values.append(num / den if den > 0 else 0.0)
        counts.append(int(sel.sum()))
    return np.array(values), np.array(counts)


def _hard_low_pass(volume, voxel, resolution):
    f = np.fft.fftn(volume.astype(np.float64))
    f[_full_frequency(volume.shape, voxel) > 1.0 / resolution] = 0
    return np.fft.ifftn(f).real.astype(np.float32)


def _raised_cosine(distance, dilation, edge):
    """1 up to ``dilation``, 0 beyond ``dilation + edge``, a half cosine between."""
    ramp = 0.5 * (1 + np.cos(np.pi * (distance - dilation) / edge))
    return np.where(distance <= dilation, 1.0, np.where(distance >= dilation + edge, 0.0, ramp))


def _sphere(shape, radius):
    centre = [(n - 1) / 2 for n in shape]
    grids = np.meshgrid(*[np.arange(n) - c for n, c in zip(shape, centre)], indexing="ij")
    return np.sqrt(sum(g ** 2 for g in grids)) <= radius


@pytest.mark.parametrize("shape, voxel", [((6, 5, 8), 1.3), ((7, 4, 9), (0.8, 1.1, 2.0))])
def test_radial_frequency_grid_matches_the_definition(shape, voxel):
    axes = [np.fft.fftfreq(n, v) for n, v in zip(shape, np.broadcast_to(voxel, (3,)))]
    expected = np.sqrt(sum(g ** 2 for g in np.meshgrid(*axes, indexing="ij")))
    grid = radial_frequency_grid(shape, voxel)
    assert grid.dtype == np.float32
    assert grid.shape == (shape[0], shape[1], shape[2] // 2 + 1)
    np.testing.assert_allclose(grid, expected[:, :, :shape[2] // 2 + 1], rtol=1e-6)


@pytest.mark.parametrize("shape", [(32, 32, 32), (20, 24, 17)])
def test_fsc_of_a_map_with_itself_is_one_in_every_shell(shape):
    a = _noise(shape, 1)
    curve = fsc(a, a, 1.2)
    assert curve.correlation.size == max(shape) // 2
    np.testing.assert_allclose(curve.correlation, 1.0, atol=1e-6)
    np.testing.assert_allclose(curve.frequency, np.arange(1, max(shape) // 2 + 1) / (max(shape) * 1.2))


@pytest.mark.parametrize("shape", [(24, 24, 24), (19, 22, 16)])
def test_fsc_matches_the_full_transform_reference(shape):
    signal = _noise(shape, 2)
    a, b = signal + _noise(shape, 3), signal + 0.5 * _noise(shape, 4)
    curve = fsc(a, b, 1.05)
    expected, counts = _reference_fsc(a, b, 1.05)
    np.testing.assert_allclose(curve.correlation, expected, atol=1e-5)
    np.testing.assert_array_equal(curve.n_voxels, counts)


def test_fsc_of_independent_noise_is_near_zero():
    curve = fsc(_noise((48, 48, 48), 5), _noise((48, 48, 48), 6), 1.0)
    sigma = 1.0 / np.sqrt(curve.n_voxels / 2)  # Friedel mates are not independent
    assert np.all(np.abs(curve.correlation) < 4 * sigma)
    assert abs(np.mean(curve.correlation)) < 3 * np.sqrt(np.mean(sigma ** 2) / curve.correlation.size)


def test_fsc_of_a_hard_low_pass_falls_at_its_cutoff():
    original = _noise((48, 48, 48), 7)
    cutoff = 8.0
    curve = fsc(_hard_low_pass(original, 1.0, cutoff), original, 1.0)
    shell_width = curve.frequency[0]
    assert abs(1.0 / resolution_at(curve, 0.5) - 1.0 / cutoff) <= shell_width
    assert abs(1.0 / resolution_at(curve, 0.143) - 1.0 / cutoff) <= shell_width
    beyond = curve.frequency > 1.0 / cutoff + shell_width  # only float32 rounding is left there
    assert np.all(np.abs(curve.correlation[beyond]) < 4 / np.sqrt(curve.n_voxels[beyond] / 2))


def test_mask_multiplies_both_maps():
    a, b = _noise((20, 20, 20), 8), _noise((20, 20, 20), 9)
    mask = soft_mask(_sphere(a.shape, 6).astype(np.float32), 0.5, 1, 3)
    np.testing.assert_allclose(fsc(a, b, 1.0, mask).correlation, fsc(a * mask, b * mask, 1.0).correlation, atol=1e-6)


def test_resolution_at_interpolates_linearly_in_frequency():
    curve = FSCCurve(np.array([0.1, 0.2, 0.3]), np.array([0.9, 0.5, 0.1]), np.array([10, 20, 30]), 1.5)
    assert resolution_at(curve, 0.3) == pytest.approx(1 / 0.25)
    assert resolution_at(curve, 0.95) == pytest.approx(10.0)  # below from the first shell
    assert resolution_at(curve, 0.05) == pytest.approx(3.0)  # never below: Nyquist, 2 * voxel size


def test_soft_mask_is_a_dilated_raised_cosine_around_the_threshold():
    shape = (21, 21, 21)
    volume = np.zeros(shape, dtype=np.float32)
    volume[10, 10, 10] = 5.0
    mask = soft_mask(volume, 1.0, 3, 4)
    distance = np.sqrt(sum(g ** 2 for g in np.meshgrid(*[np.arange(n) - 10 for n in shape], indexing="ij")))
    expected = _raised_cosine(distance, 3, 4)
    assert mask.dtype == np.float32
    np.testing.assert_allclose(mask, expected, atol=1e-6)
    np.testing.assert_array_equal(soft_mask(volume, 1.0, 2, 0), (distance <= 2).astype(np.float32))


def test_soft_mask_is_exact_across_blocks_of_planes():
    shape = (130, 12, 13)
    volume = np.zeros(shape, dtype=np.float32)
    seeds = [(2, 5, 6), (33, 0, 12), (125, 11, 3)]  # planes 64-95 see no mask voxel within the margin
    for seed in seeds:
        volume[seed] = 1.0
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    distance = np.min([np.sqrt(sum((g - c) ** 2 for g, c in zip(grids, seed))) for seed in seeds], axis=0)
    np.testing.assert_allclose(soft_mask(volume, 0.5, 2, 3), _raised_cosine(distance, 2, 3), atol=1e-6)


def test_soft_mask_without_voxels_above_threshold_says_so():
    with pytest.raises(InputError, match="threshold"):
        soft_mask(np.zeros((8, 8, 8), dtype=np.float32), 0.5, 1, 1)


def test_phase_randomisation_removes_the_correlation_a_sharp_mask_adds():
    shape, voxel = (64, 64, 64), 1.0
    signal = _hard_low_pass(_noise(shape, 10), voxel, 10.0)
    signal *= 3.0 / signal.std()  # strong shared signal, but only below 10 Å
    a = signal + _noise(shape, 11)
    b = signal + _noise(shape, 12)
    mask = _sphere(shape, 18).astype(np.float32)  # a hard edge: its transform spreads the shared signal
    unmasked = fsc(a, b, voxel)
    raw = fsc(a, b, voxel, mask)
    corrected = fsc_masked_corrected(a, b, voxel, mask)
    high = raw.frequency > 1 / 5.0
    assert np.mean(raw.correlation[high]) > np.mean(unmasked.correlation[high]) + 0.2  # the mask inflates
    assert np.all(corrected.correlation[high] < raw.correlation[high])
    # Back to the unmasked curve within the noise of a masked FSC (fewer independent voxels).
    sigma = 1.0 / np.sqrt(raw.n_voxels[high] * mask.mean() / 2)
    assert np.all(np.abs(corrected.correlation[high] - unmasked.correlation[high]) < 4 * sigma)
    assert abs(np.mean(corrected.correlation[high] - unmasked.correlation[high])) < 0.05
    low = raw.frequency < 1 / 12.0  # before randomisation the masked curve is kept
    np.testing.assert_array_equal(corrected.correlation[low], raw.correlation[low])


def _localised_halves(seed: int, shape=(48, 48, 48)):
    """Two half maps of a blob of signal (low-passed at 5 Å, in a Gaussian envelope) with independent
    noise, and a soft spherical mask around the blob."""
    radius = np.sqrt(np.sum((np.indices(shape) - (shape[0] - 1) / 2) ** 2, axis=0))
    signal = _hard_low_pass(_noise(shape, seed) * np.exp(-(radius / 8.0) ** 2), 1.0, 5.0)
    signal /= signal.std()
    mask = np.clip(16.0 - radius, 0.0, 1.0).astype(np.float32)
    return signal + _noise(shape, seed + 1), signal + _noise(shape, seed + 2), mask


def test_half_map_fsc_is_the_plain_the_corrected_or_the_plain_masked_fsc():
    voxel = 1.0
    a, b, mask = _localised_halves(20)
    cases = {"unmasked": (half_map_fsc(a, b, voxel), fsc(a, b, voxel)),
             "corrected": (half_map_fsc(a, b, voxel, mask), fsc_masked_corrected(a, b, voxel, mask)),
             "masked": (half_map_fsc(a, b, voxel, mask, correct_for_mask=False), fsc(a, b, voxel, mask))}
    for masking, (measured, expected) in cases.items():
        assert measured.masking == masking
        np.testing.assert_array_equal(measured.curve.correlation, expected.correlation)
        assert measured.resolution == resolution_at(expected)
    assert cases["corrected"][0].resolution < cases["unmasked"][0].resolution  # the mask keeps solvent noise out


def test_half_map_fsc_sets_aside_a_mask_that_costs_resolution(caplog):
    voxel = 1.0
    a, b, _ = _localised_halves(23)
    corner = np.zeros(a.shape, np.float32)
    corner[:10, :10, :10] = 1.0  # solvent only
    with caplog.at_level("WARNING", logger="deepemhancer"):
        measured = half_map_fsc(a, b, voxel, corner)
    assert measured.masking == "unmasked" and measured.resolution == half_map_fsc(a, b, voxel).resolution
    assert any("mask is not used" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("mask, message", [
    (np.ones((8, 8, 9)), "the mask's shape .* differs from the maps' .*; give a mask on the maps' grid"),
    (np.full((8, 8, 8), 2.0), "mask values must lie in 0..1"),
    (np.full((8, 8, 8), -0.5), "mask values must lie in 0..1"),
    (np.full((8, 8, 8), np.nan), "NaN"),
    (np.zeros((8, 8, 8)), "all zero"),
])
def test_a_mask_that_is_no_mask_is_refused_with_advice(mask, message):
    with pytest.raises(InputError, match=message):
        check_mask(mask, (8, 8, 8))
    with pytest.raises(InputError, match=message):  # every measure that takes a mask checks it alike
        fsc(_noise((8, 8, 8), 1), _noise((8, 8, 8), 2), 1.0, mask)


def test_the_enhance_rules_take_masks_beyond_0_to_1_and_check_the_shape_alike():
    """Masked normalisation binarises a mask at 1 % of its range, so masks of 0 and 255 or with a
    negative background stay accepted there ("binarised"); a region choosing cubes is checked for
    its shape only ("any"). The shape rule and its message are one for every use."""
    ball = np.zeros((8, 8, 8))
    ball[2:6, 2:6, 2:6] = 1.0
    for mask in (255.0 * ball, np.where(ball > 0, 1.0, -0.1)):
        check_mask(mask, (8, 8, 8), values="binarised")
        with pytest.raises(InputError, match="mask values must lie in 0..1"):
            check_mask(mask, (8, 8, 8))
    check_mask(np.zeros((8, 8, 8)), (8, 8, 8), values="any")
    with pytest.raises(NormalizationError, match="the mask is empty") as empty:
        check_mask(np.full((8, 8, 8), -1.0), (8, 8, 8), values="binarised", setting="mask")
    assert empty.value.setting == "mask"
    for values in ("weights", "binarised", "any"):
        with pytest.raises(InputError, match="the mask's shape .* differs from the map's .*; give a mask on the map's grid"):
            check_mask(ball[:, :, :7], (8, 8, 8), "the map's", values=values)
    with pytest.raises(ValueError, match="values"):
        check_mask(ball, (8, 8, 8), values="binary")


def test_binary_and_soft_masks_within_rounding_of_one_pass():
    check_mask(np.ones((4, 4, 4), dtype=bool), (4, 4, 4))
    check_mask(np.full((4, 4, 4), 1.0 + 1e-7, np.float32), (4, 4, 4))


def test_phase_randomisation_is_reproducible_with_a_seed():
    a, b = _noise((24, 24, 24), 13), _noise((24, 24, 24), 14)
    mask = _sphere(a.shape, 8).astype(np.float32)
    first = fsc_masked_corrected(a, a + 0.3 * b, 1.0, mask, randomise_beyond=6.0, seed=3)
    again = fsc_masked_corrected(a, a + 0.3 * b, 1.0, mask, randomise_beyond=6.0, seed=3)
    np.testing.assert_array_equal(first.correlation, again.correlation)


def test_maps_of_different_shapes_are_refused():
    with pytest.raises(InputError, match="one shape"):
        fsc(np.zeros((8, 8, 8), np.float32), np.zeros((8, 8, 9), np.float32), 1.0)


def test_shared_power_keeps_scale_and_sums_to_the_real_space_product():
    a, b = _noise((20, 22, 24), 40), _noise((20, 22, 24), 41)
    own = shared_power(a, a, 1.0)
    np.testing.assert_allclose(shared_power(a, 2 * a, 1.0), 2 * own, rtol=1e-5)
    # Parseval: the shells' shared power (plus the DC term and the box corners beyond Nyquist) is
    # N sum(a b); with the corners left out the shells hold most of it
    assert own.sum() < a.size * float(np.sum(a.astype(np.float64) ** 2))
    mixed = shared_power(a, a + b, 1.0)
    np.testing.assert_allclose(mixed, own + shared_power(a, b, 1.0), rtol=1e-4, atol=1e-3 * own.max())
    assert abs(shared_power(a, b, 1.0).sum()) < 0.05 * own.sum()  # independent noise shares little


def test_randomised_phases_keep_amplitudes_and_lose_correlation_beyond_the_start():
    a = _noise((32, 32, 32), 42)
    start = randomisation_start(a.shape, 1.0, 4.0)
    assert start == 8  # 32 Å box: shell 8 is 4 Å
    b = randomise_phases(a, 1.0, start, np.random.default_rng(0))
    curve = fsc(a, b, 1.0)
    np.testing.assert_allclose(curve.correlation[:start - 1], 1.0, atol=1e-5)  # shells 1 .. start-1 untouched
    assert np.all(np.abs(curve.correlation[start:]) < 4.5 / np.sqrt(curve.n_voxels[start:] / 2))
    np.testing.assert_allclose(shared_power(b, b, 1.0)[start:], shared_power(a, a, 1.0)[start:], rtol=0.05)

