"""Guinier B-factor fits, against blurs applied here with numpy."""
import numpy as np
import pytest

from deepemhancer.errors import InputError
from deepemhancer.metrics import guinier_bfactor

VOXEL = 1.0


def _white(shape=(64, 64, 64), seed=0):
    """Flat amplitude spectrum, random phases: white noise."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _blur_reference(volume, voxel, b_factor):
    """Amplitudes times exp(-B s² / 4) over the full complex transform."""
    axes = [np.fft.fftfreq(n, voxel) for n in volume.shape]
    s2 = sum(g ** 2 for g in np.meshgrid(*axes, indexing="ij"))
    return np.fft.ifftn(np.fft.fftn(volume.astype(np.float64)) * np.exp(-b_factor * s2 / 4)).real


@pytest.mark.parametrize("b_factor", [50.0, 100.0])
def test_guinier_recovers_an_applied_blur(b_factor):
    volume = _white()
    base = guinier_bfactor(volume, VOXEL, low_resolution=10.0, high_resolution=3.0)
    blurred = guinier_bfactor(_blur_reference(volume, VOXEL, b_factor), VOXEL, low_resolution=10.0,
                              high_resolution=3.0)
    assert abs(base.b_factor) < 3.0  # white noise: flat
    assert blurred.b_factor - base.b_factor == pytest.approx(b_factor, abs=2.0)


def test_guinier_fit_exposes_points_and_line_for_plotting():
    fit = guinier_bfactor(_blur_reference(_white(), VOXEL, 80.0), VOXEL, 10.0, 3.0)
    s = np.sqrt(fit.s_squared)
    np.testing.assert_array_equal(fit.in_fit, (s >= 0.1) & (s <= 1 / 3.0))
    assert fit.slope == pytest.approx(-fit.b_factor / 4)
    residual = fit.line()[fit.in_fit] - fit.ln_amplitude[fit.in_fit]
    assert np.max(np.abs(residual)) < 0.05  # white noise blurred: a straight Guinier plot


def test_guinier_range_too_narrow_for_the_box_is_refused():
    with pytest.raises(InputError, match="Fourier shells"):
        guinier_bfactor(_white((16, 16, 16)), VOXEL, low_resolution=4.0, high_resolution=3.5)
